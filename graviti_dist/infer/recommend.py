"""Link tasks: top-k new destinations per source by the trained link head, over every node's
final embedding (``graviti infer`` writes them for every source; ``graviti serve`` answers one)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from graviti_dist.errors import GravitiError
from graviti_dist.infer.predictions import Predictions
from graviti_dist.model import TaskSpec, build_head, resolve_task_groups, task_columns
from graviti_dist.partition import Manifest, PartitionSet, TaskInfo
from graviti_dist.train import TrainedRun


class Recommender:
    """Top-k destinations per source for a link task, over every node's final embedding.

    Scores are the trained link head's (dot scorer: a projected source embedding
    against each destination's); destinations the source already links to in the
    training graph are left out, so recommendations are new items.
    """

    def __init__(self, run: TrainedRun, parts: PartitionSet, manifest: Manifest, task: TaskInfo, src_emb: torch.Tensor,
                 dst_emb: torch.Tensor):
        self.name = task.name
        relation = manifest.relation(task.relation)
        self.src_type, self.dst_type = relation.src, relation.dst
        # A grouped model's embeddings are its groups' side by side; the head reads its own group's.
        groups = resolve_task_groups(run.config.model.task_groups, [t.name for t in manifest.tasks if run.config.trains(t.name)])
        columns = task_columns(groups, self.name, src_emb.shape[1] // max(len(groups), 1))
        src_emb, dst_emb = src_emb[:, columns], dst_emb[:, columns]
        head = build_head(TaskSpec(name=self.name, type="link"), src_emb.shape[1])
        prefix = f"heads.{self.name}."
        head_state = {k[len(prefix):]: v for k, v in run.state.items() if k.startswith(prefix)}
        if not head_state:
            raise GravitiError(f"{run.source}: the model has no trained head for link task {self.name!r}")
        head.load_state_dict(head_state)
        self.head = head.eval()
        self.src_emb, self.dst_emb = src_emb, dst_emb
        self.src_ids = parts.read_id_map(self.src_type, columns=["raw_id"])["raw_id"]
        self.dst_ids = parts.read_id_map(self.dst_type, columns=["raw_id"])["raw_id"]
        edges = parts.read_link_split(self.name)
        train = edges.filter(pa.compute.equal(edges["split"], 0))
        src, dst = (torch.tensor(train[c].to_numpy(), dtype=torch.long) for c in ("src", "dst"))
        order = torch.argsort(src * len(self.dst_ids) + dst)
        self.known_dst = dst[order]
        self.known_ptr = torch.zeros(len(self.src_ids) + 1, dtype=torch.long)
        torch.cumsum(torch.bincount(src, minlength=len(self.src_ids)), 0, out=self.known_ptr[1:])

    @torch.no_grad()
    def top_k(self, sources: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(destination type ids (n, k'), probabilities (n, k')) for source type ids ``sources``; k' = min(k, #dst)."""
        scores = self.head.score(self.src_emb[sources].unsqueeze(1), self.dst_emb.unsqueeze(0)) \
            if self.head.mlp is not None else self.head.src_proj(self.src_emb[sources]) @ self.dst_emb.t()
        for row, s in enumerate(sources.tolist()):
            scores[row, self.known_dst[self.known_ptr[s]:self.known_ptr[s + 1]]] = float("-inf")
        values, items = scores.topk(min(k, scores.shape[1]), dim=1)
        return items, torch.sigmoid(values)


def embeddings_by_type_id(tables: pa.Table, id_map: pa.Table) -> torch.Tensor:
    """Stack a predictions table's embeddings in the node type's (crawl) id order."""
    positions = pa.compute.index_in(tables["id"], value_set=id_map["raw_id"]).to_numpy()
    width = len(tables["embedding"][0].as_py()) if tables.num_rows else 0
    flat = tables["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    out = torch.zeros(id_map.num_rows, width)
    out[torch.from_numpy(positions.astype(np.int64))] = torch.from_numpy(flat.reshape(-1, width).copy())
    return out


def write_recommendations(out: Predictions, parts: PartitionSet, run: TrainedRun, manifest: Manifest, k: int,
                          chunk: int = 1024) -> dict:
    """Per link task of the run: each source node's top-k new destinations and their probabilities,
    from the embeddings already in ``out``'s predictions; returns rows written per task."""
    rows = {}
    for task in manifest.link_tasks:
        if not run.config.trains(task.name):
            continue
        relation = manifest.relation(task.relation)
        emb = {t: embeddings_by_type_id(out.read_embeddings(t), parts.read_id_map(t, columns=["raw_id"]))
               for t in {relation.src, relation.dst}}
        rec = Recommender(run, parts, manifest, task, emb[relation.src], emb[relation.dst])
        items, probs = [], []
        for sources in torch.arange(len(rec.src_ids)).split(chunk):
            i, p = rec.top_k(sources, k)
            items.append(i)
            probs.append(p)
        items_t, probs_t = torch.cat(items), torch.cat(probs)
        width = items_t.shape[1]
        offsets = pa.array(np.arange(0, len(rec.src_ids) * width + 1, width, dtype=np.int32))
        table = pa.table({"id": rec.src_ids,
                          "items": pa.ListArray.from_arrays(offsets, rec.dst_ids.combine_chunks().take(pa.array(items_t.reshape(-1).numpy()))),
                          "scores": pa.ListArray.from_arrays(offsets, pa.array(probs_t.reshape(-1).numpy()))})
        out.write_recommendations(task.name, table)
        rows[task.name] = table.num_rows
    return rows
