"""Online predictions for given raw ids, from partitions held in memory.

At start-up every partition runs the model layer by layer over all of its nodes
(full neighbourhoods, as batch inference does; over a set whose halo is shallower than the
model the partitions exchange their halo's rows between layers, all in this process), once
per selected model (per-task selection: one per epoch some task chose), and keeps every inner node's embedding
and head outputs; a request is a lookup. The answers equal ``graviti infer``'s for
the same run, partitions and ``select`` (a test holds this).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch

from graviti_dist.infer.explain import Neighbours, RawIds, explanation_table
from graviti_dist.infer.halo_exchange import ShallowPartition, in_process
from graviti_dist.infer.layerwise import (NodeOutputs, needs_exchange, original_units, predict_selected, raw_ids_of_inner,
                                          selected_models)
from graviti_dist.infer.recommend import Recommender
from graviti_dist.partition import PartitionSet, TaskInfo
from graviti_dist.sampling import NodeRanges, load_worker_partition
from graviti_dist.train import load_run


class Predictor:
    """Per-id, per-task predictions of a trained run over a partition set."""

    def __init__(self, run_path: str | Path, part_dir: str | Path, device: str = "cpu", select: str = "per_task",
                 explain_max: int = 10):
        part_set = PartitionSet(part_dir)
        self.manifest = part_set.read_manifest()
        self.run = load_run(run_path, select)
        # Each node's top neighbours are kept at start-up (the attention is gone after the last layer):
        # explain_max x 28 bytes a node; 0, or an encoder without attention, keeps none.
        self.explain_max = explain_max if self.run.config.model.kind == "gat" else 0
        self.raw_ids = RawIds(part_set, self.manifest) if self.explain_max else None
        parts = [load_worker_partition(part_dir, p) for p in range(self.manifest.num_parts)]
        models = selected_models(self.run, parts[0], device)
        self.out_dim = models[0][0].encoder.out_dim
        # Every inner node's embedding and head outputs, computed once: a node's prediction over a
        # fixed graph never changes, and a request then costs a lookup. The last layer for 1024
        # Twitch users' full neighbourhoods took 45 ms per request; the table is smaller than the
        # layer below it (out_dim against heads x hidden per node), which is freed.
        if needs_exchange(self.run, self.manifest):  # a shallow set: the partitions exchange halo rows per layer
            self.outputs = _exchanged_outputs(parts, models, NodeRanges.of(part_set), len(self.run.config.model.fanouts),
                                              device, self.explain_max)
        else:
            self.outputs = [_inner_outputs(part, models, device, self.explain_max) for part in parts]
        self.tasks = {t.name: t for t in self.manifest.node_tasks if t.name in models[0][0].specs}
        self.index: dict[tuple[str, str], tuple[int, int]] = {}
        self.types_of: dict[str, list[str]] = defaultdict(list)
        owned = [raw_ids_of_inner(part_set, part, p) for p, part in enumerate(parts)]
        for p, part in enumerate(parts):
            for t, (nodes, raw_ids) in owned[p].items():
                node_type = part.ntypes[t]
                for local, raw in zip(nodes.tolist(), raw_ids.to_pylist()):
                    self.index[(node_type, str(raw))] = (p, local)
                    self.types_of[str(raw)].append(node_type)
        self.recommenders = self._recommenders(part_set, parts, owned)
        self.lock = threading.Lock()  # one recommendation's scoring at a time: no thread oversubscription

    @property
    def num_nodes(self) -> int:
        return len(self.index)

    def predict(self, ids: list[str], tasks: list[str] | None = None, node_type: str | None = None,
                embedding: bool = False) -> dict:
        """``{"predictions": {id: {...}}, "unknown": {id: reason}}``; raises ValueError for a bad task or node type."""
        wanted = self.tasks_for(tasks)
        found, unknown = self.resolve(ids, node_type)
        return {"predictions": self.entries(found, wanted, embedding), "unknown": unknown}

    def resolve(self, ids: list[str], node_type: str | None = None) -> tuple[list[tuple[str, str, int, int]], dict[str, str]]:
        """Each asked id once, in order, as (raw id, node type, part, local node), and the ids that
        cannot be answered with the reason; ValueError for an unknown node type."""
        if node_type is not None and node_type not in self.manifest.ntypes:
            raise ValueError(f"node_type {node_type!r} is not one of {self.manifest.ntypes}")
        found, unknown = [], {}
        for raw in dict.fromkeys(ids):
            types = [node_type] if node_type else self.types_of.get(raw, [])
            if not types or (types[0], raw) not in self.index:
                unknown[raw] = f"no {node_type or 'node'} with id {raw!r} in these partitions"
            elif len(types) > 1:
                unknown[raw] = f"id {raw!r} is a {' and a '.join(types)}: pass node_type"
            else:
                found.append((raw, types[0], *self.index[(types[0], raw)]))
        return found, unknown

    def entries(self, found: list[tuple[str, str, int, int]], wanted: list[str], embedding: bool,
                explain: int = 0) -> dict[str, dict]:
        """Per raw id of ``found`` (from :meth:`resolve`): its node type, its ``wanted`` tasks'
        predictions (those of its type), with ``embedding`` its final embedding and with ``explain``
        its ``explain`` most attended in-neighbours (at most :attr:`explain_max`; ValueError beyond)."""
        self.check_explain(explain)
        by_part: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
        for raw, ntype, part, local in found:
            by_part[part].append((raw, ntype, local))
        answers = {}
        for p, items in sorted(by_part.items()):
            row_of, outputs = self.outputs[p]
            rows = row_of[torch.tensor([local for _, _, local in items])]
            formatted = {name: format_predictions(self.tasks[name], outputs.preds[name][rows]) for name in wanted}
            vectors = outputs.emb[rows].tolist() if embedding else None
            reasons = self._explanations(outputs.neighbours.rows(rows.numpy()), explain) if explain else None
            for i, (raw, ntype, _) in enumerate(items):
                entry = {"node_type": ntype, "predictions": {
                    name: formatted[name][i] for name in wanted if self.tasks[name].node_type == ntype}}
                if embedding:
                    entry["embedding"] = vectors[i]
                if explain:
                    entry["explanation"] = reasons[i]
                answers[raw] = entry
        return {raw: answers[raw] for raw, *_ in found}

    def check_explain(self, explain: int) -> None:
        if explain > self.explain_max:
            reason = (f"at most {self.explain_max} (graviti serve --explain-max)" if self.run.config.model.kind == "gat"
                      else f"this run's encoder ({self.run.config.model.kind!r}) has no attention to explain with")
            raise ValueError(f"explain: {reason}")

    def _explanations(self, neighbours: Neighbours, k: int) -> list[list[dict]]:
        """Each node's first ``k`` ranked neighbours as JSON: raw id, node type, relation, weight, ts."""
        table = explanation_table(pa.array(range(len(neighbours.src))), "", neighbours, self.raw_ids,
                                  self.manifest).filter(pc.field("rank") < k)
        out: list[list[dict]] = [[] for _ in range(len(neighbours.src))]
        for row in table.select(["id", "neighbour_id", "neighbour_type", "relation", "weight", "ts"]).to_pylist():
            entry = {"id": row["neighbour_id"], "node_type": row["neighbour_type"], "relation": row["relation"],
                     "weight": row["weight"]}
            if row["ts"] is not None:
                entry["ts"] = row["ts"]
            out[row["id"]].append(entry)
        return out

    def _recommenders(self, part_set: PartitionSet, parts, owned: list[dict]) -> dict[str, Recommender]:
        """Per link task: every node's final embedding in type-id order, for top-k over all destinations."""
        links = [t for t in self.manifest.link_tasks if f"heads.{t.name}.src_proj.weight" in self.run.state]
        if not links:
            return {}
        self.type_id_of: dict[tuple[str, str], int] = {}
        emb = {t: torch.zeros(0) for t in self.manifest.ntypes}
        for t in self.manifest.ntypes:
            id_map = part_set.read_id_map(t, columns=["raw_id"])["raw_id"].to_pylist()
            self.type_id_of.update({(t, str(raw)): i for i, raw in enumerate(id_map)})
            emb[t] = torch.zeros(len(id_map), self.out_dim)
        for p, part in enumerate(parts):
            row_of, outputs = self.outputs[p]
            for t, (nodes, raw_ids) in owned[p].items():
                name = part.ntypes[t]
                final = outputs.emb[row_of[nodes]]
                rows = torch.tensor([self.type_id_of[(name, str(r))] for r in raw_ids.to_pylist()], dtype=torch.long)
                emb[name][rows] = final
        out = {}
        for task in links:
            relation = self.manifest.relation(task.relation)
            out[task.name] = Recommender(self.run, part_set, self.manifest, task, emb[relation.src], emb[relation.dst])
        return out

    def recommend(self, user_id: str, k: int, task: str | None = None) -> dict:
        """Top-``k`` new destinations for source ``user_id``; raises LookupError (unknown id, no link task)
        or ValueError (unknown task)."""
        if not self.recommenders:
            raise LookupError("this model has no trained link task to recommend with")
        if task is None:
            task = next(iter(self.recommenders))
        if task not in self.recommenders:
            raise ValueError(f"unknown link task {task!r}; this model recommends with {sorted(self.recommenders)}")
        rec = self.recommenders[task]
        source = self.type_id_of.get((rec.src_type, user_id))
        if source is None:
            raise LookupError(f"no {rec.src_type} with id {user_id!r} in these partitions")
        with self.lock:
            items, scores = rec.top_k(torch.tensor([source]), k)
        dst_ids = rec.dst_ids
        return {"id": user_id, "task": task, "node_type": rec.dst_type,
                "items": [{"id": dst_ids[int(i)].as_py(), "score": float(s)} for i, s in zip(items[0], scores[0])]}

    def tasks_for(self, tasks: list[str] | None) -> list[str]:
        """The tasks a request names (all by default), each once; ValueError naming unknown ones."""
        if tasks is None:
            return list(self.tasks)
        bad = [t for t in tasks if t not in self.tasks]
        if bad:
            raise ValueError(f"unknown task(s) {bad}; this model predicts {sorted(self.tasks)}")
        return list(dict.fromkeys(tasks))


def _inner_outputs(part, models, device, explain: int) -> tuple[torch.Tensor, NodeOutputs]:
    """(row of each local node in the outputs, -1 for halo nodes; the outputs of the partition's inner
    nodes, each task from its selected model)."""
    inner, row_of = _inner_rows(part)
    (outputs,) = predict_selected(part, models, [inner], device, explain)
    return row_of, outputs


def _exchanged_outputs(parts, models, ranges, num_layers, device, explain: int) -> list[tuple[torch.Tensor, NodeOutputs]]:
    """:func:`_inner_outputs` of every partition of a set whose halo is shallower than the model."""
    rows = [_inner_rows(part) for part in parts]
    shallow = {p: ShallowPartition(part, p, models, ranges, [rows[p][0]], device, explain) for p, part in enumerate(parts)}
    in_process(shallow, num_layers)
    return [(rows[p][1], shallow[p].outputs[0]) for p in range(len(parts))]


def _inner_rows(part) -> tuple[torch.Tensor, torch.Tensor]:
    """(the inner local nodes; each local node's row among them, -1 for halo nodes)."""
    inner = torch.nonzero(part.inner).squeeze(1)
    row_of = torch.full((part.inner.numel(),), -1, dtype=torch.long)
    row_of[inner] = torch.arange(inner.numel())
    return inner, row_of


def format_predictions(task: TaskInfo, values: torch.Tensor) -> list[dict]:
    """Each row of ``values`` (one node per row) as JSON: class + probabilities, probability, or
    value; converted to Python once per task (per node it took 31 of 67 ms for 1024 ids)."""
    if task.type == "multiclass":
        classes = [str(c) for c in (task.classes or range(values.shape[1]))]
        best = values.argmax(1).tolist()
        return [{"class": (task.classes or classes)[b], "probabilities": dict(zip(classes, row))}
                for b, row in zip(best, values.tolist())]
    if task.type == "multilabel":
        return [{"probabilities": row} for row in values.tolist()]
    if task.type == "binary":
        return [{"probability": v} for v in values.reshape(-1).tolist()]
    return [{"value": v} for v in original_units(task, values).reshape(-1).tolist()]
