"""Full-neighbourhood inference: every node's embedding and predictions, with no sampling noise.

Layer by layer over all of a partition's nodes (DGL's full-neighbour sampler, one
layer at a time, in chunks of destination nodes), as DGL's own layer-wise
inference does: layer ``i`` is computed once for every local node instead of
once per minibatch that touches it. A partition's halo is as deep as the model
(checked), so its inner nodes' results are exact.

Shared by ``graviti infer`` (all nodes, to Parquet) and ``graviti serve`` (the
layers below the last precomputed, the last one per request).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from pydantic import ValidationError

from graviti_dist._dgl import dgl
from graviti_dist.config import TrainConfig, encoder_config
from graviti_dist.errors import GravitiError
from graviti_dist.model import Block, MultiTaskModel
from graviti_dist.partition_check import MANIFEST
from graviti_dist.sampling import NodeMinibatches, WorkerPartition
from graviti_dist.worker_loop import build_model

RUN_CONFIG = "config.yaml"
BEST_MODEL = "best_model.pt"
CHECKPOINT_FILE = "state.pt"


@dataclass
class TrainedRun:
    """A training run's resolved config and model weights."""

    config: TrainConfig
    state: dict
    source: Path


def load_run(path: str | Path) -> TrainedRun:
    """A run directory (its best model) or a checkpoint (``state.pt`` or its folder) inside one."""
    path = Path(path)
    if path.is_dir() and (path / RUN_CONFIG).exists():
        weights, config_dir = path / BEST_MODEL, path
        if not weights.exists():
            raise GravitiError(f"{path}: no {BEST_MODEL} (the run did not finish); pass one of its checkpoints' {CHECKPOINT_FILE}")
    elif path.is_file() or (path / CHECKPOINT_FILE).is_file():
        weights = path if path.is_file() else path / CHECKPOINT_FILE
        config_dir = next((d for d in weights.parents if (d / RUN_CONFIG).exists()), None)
        if config_dir is None:
            raise GravitiError(f"{weights}: no {RUN_CONFIG} in any folder above it; is it inside a graviti train run?")
    else:
        raise GravitiError(f"{path}: not a training run (no {RUN_CONFIG}) or a checkpoint ({CHECKPOINT_FILE})")
    try:
        config = TrainConfig.model_validate(yaml.safe_load((config_dir / RUN_CONFIG).read_text()))
    except (ValidationError, yaml.YAMLError) as exc:
        raise GravitiError(f"{config_dir / RUN_CONFIG}: not a valid training config: {exc}") from None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a bad file
        raise GravitiError(f"{weights}: cannot load model weights: {exc}") from None
    if isinstance(state, dict) and "model" in state and "optimizer" in state:
        state = state["model"]  # a training checkpoint
    return TrainedRun(config, state, weights)


def trained_model(run: TrainedRun, part: WorkerPartition, device: torch.device | str = "cpu") -> MultiTaskModel:
    """The run's model, rebuilt for ``part``'s schema and loaded with its weights, in eval mode."""
    model = build_model(part, encoder_config(run.config), run.config.balancing, run.config.tasks, run.config.task_weights)
    try:
        model.load_state_dict(run.state)
    except RuntimeError as exc:
        raise GravitiError(f"{run.source}: the weights do not fit these partitions' schema or the run's config: "
                           f"{str(exc).splitlines()[0]}") from None
    return model.to(device).eval()


def check_depth(run: TrainedRun, manifest: dict, part_dir: Path) -> None:
    layers, hops = len(run.config.model.fanouts), manifest["spec"]["num_hops"]
    if layers > hops:
        raise GravitiError(f"{part_dir}: halo depth {hops} is shallower than the model's {layers} layers; "
                           "full-neighbourhood results would be wrong (re-partition with --num-hops)")


class PartitionInference:
    """One partition's nodes through a trained model, layer by layer over full neighbourhoods."""

    def __init__(self, part: WorkerPartition, model: MultiTaskModel, device: torch.device | str = "cpu", chunk: int = 8192):
        self.part, self.model, self.device, self.chunk = part, model, torch.device(device), chunk
        self.inputs = NodeMinibatches(part, [1], 1, "train", shuffle=False)  # feature gathering + standardisation
        self.sampler = dgl.dataloading.MultiLayerFullNeighborSampler(1)
        self.etype = part.graph.edata[dgl.ETYPE]
        self.num_layers = model.encoder.num_layers

    def block(self, dst: torch.Tensor) -> tuple[torch.Tensor, Block]:
        """All in-edges of local nodes ``dst``: (input nodes, dst first; the block)."""
        input_nodes, _, (b,) = self.sampler.sample_blocks(self.part.graph, dst)
        src, dst_local = b.edges()
        # DGL's parallel sampler numbers the extra source nodes and lists in-edges in no fixed order, and
        # float sums depend on both: renumber the sources by local id and sort edges by (dst, source, edge id), so
        # results are bitwise reproducible across runs and actors.
        num_dst = b.num_dst_nodes()
        extra = torch.argsort(input_nodes[num_dst:])
        renumber = torch.empty_like(input_nodes)
        renumber[:num_dst] = torch.arange(num_dst)
        renumber[num_dst + extra] = torch.arange(num_dst, input_nodes.numel())
        input_nodes = torch.cat([input_nodes[:num_dst], input_nodes[num_dst:][extra]])
        src, eid = renumber[src], b.edata[dgl.EID]
        by_eid = torch.argsort(eid)  # ties (parallel edges of several relations) in edge-id order
        order = by_eid[torch.argsort((dst_local * input_nodes.numel() + src)[by_eid], stable=True)]
        etype = self.etype[eid[order]]
        return input_nodes, Block.from_edges(src[order], dst_local[order], b.num_src_nodes(), num_dst, etype=etype)

    @torch.no_grad()
    def hidden(self, layers: int) -> torch.Tensor:
        """Every local node's representation after the first ``layers`` layers (0 = projected inputs), on the CPU."""
        nodes = torch.arange(self.part.graph.num_nodes())
        h = torch.cat([self.model.encoder.project(self.inputs.features(c).to(self.device)).cpu() for c in nodes.split(self.chunk)])
        for i in range(layers):
            h = torch.cat([self.layer(i, c, h) for c in nodes.split(self.chunk)])
        return h

    @torch.no_grad()
    def layer(self, i: int, dst: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` for local nodes ``dst`` from every local node's input ``h`` (CPU in, CPU out)."""
        input_nodes, block = self.block(dst)
        return self.model.encoder.apply_layer(i, block.to(self.device), h[input_nodes].to(self.device)).cpu()

    @torch.no_grad()
    def predict(self, nodes: torch.Tensor, h_before_last: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Embeddings of ``nodes`` and each node task's prediction (head ``predict``: probabilities or values)."""
        emb = torch.cat([self.layer(self.num_layers - 1, c, h_before_last) for c in nodes.split(self.chunk)]) \
            if nodes.numel() else torch.zeros(0, self.model.encoder.out_dim)
        preds = {}
        for name, head in self.model.heads.items():
            if self.model.specs[name].type != "link":
                preds[name] = head.predict(head(emb.to(self.device))).cpu()
        return emb, preds


# --- batch inference to Parquet --------------------------------------------------------------------

def raw_ids_of_inner(part_dir: Path, part: WorkerPartition, part_id: int) -> dict[int, tuple[torch.Tensor, pa.Array]]:
    """Per node type id: this partition's inner local nodes, in the crawl's id order, and their raw ids."""
    shuffled = part.graph.ndata[dgl.NID]
    out = {}
    for t, name in enumerate(part.ntypes):
        id_map = pq.read_table(Path(part_dir) / "id_map" / f"{name}.parquet")
        mine = id_map.filter(pa.compute.equal(id_map["part"], part_id)).sort_by("type_id")
        local = torch.nonzero(part.inner & (part.node_type == t)).squeeze(1)
        local_of_shuffled = dict(zip(shuffled[local].tolist(), local.tolist()))
        order = torch.tensor([local_of_shuffled[s] for s in mine["shuffled_id"].to_pylist()], dtype=torch.long)
        out[t] = (order, mine["raw_id"].combine_chunks())
    return out


def original_units(task: dict, values: torch.Tensor) -> torch.Tensor:
    """Undo the crawl schema's target transform: regression heads predict the transformed target."""
    if task.get("transform") == "log1p":
        return torch.expm1(values)
    return values


def prediction_columns(task: dict, values: torch.Tensor) -> dict[str, pa.Array]:
    """A node task's prediction as Parquet columns: class + probabilities, probability, or value in the
    crawl's own units."""
    name = task["name"]
    values = original_units(task, values)
    if task["type"] == "multiclass":
        labels = np.asarray(task.get("classes") or list(range(values.shape[1])))
        return {name: pa.array(labels[values.argmax(1).numpy()].tolist()),
                f"{name}_proba": _list_column(values)}
    if task["type"] == "multilabel":
        return {name: _list_column(values)}
    return {name: pa.array(values.numpy().astype(np.float32))}


def _list_column(values: torch.Tensor) -> pa.Array:
    values = values.float().contiguous()
    width = values.shape[1] if values.dim() == 2 else 1
    offsets = pa.array(np.arange(0, values.shape[0] * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1).numpy()))


def infer_partition(part_dir: str, part_id: int, run: TrainedRun, out: str, device: str = "cpu", threads: int | None = None) -> dict:
    """Write every inner node's embedding and predictions of partition ``part_id`` under ``out/predictions``."""
    import time

    from graviti_dist._dgl import set_threads
    from graviti_dist.sampling import load_worker_partition

    if threads:
        set_threads(threads)
    start = time.perf_counter()
    part = load_worker_partition(part_dir, part_id)
    inference = PartitionInference(part, trained_model(run, part, device), device)
    h = inference.hidden(inference.num_layers - 1)
    tasks = {t["name"]: t for t in part.manifest["tasks"]}
    rows = {}
    for t, (nodes, raw_ids) in raw_ids_of_inner(Path(part_dir), part, part_id).items():
        node_type = part.ntypes[t]
        emb, preds = inference.predict(nodes, h)
        columns = {"id": raw_ids, "node_type": pa.array([node_type] * len(raw_ids), pa.string()), "embedding": _list_column(emb)}
        for name, values in preds.items():
            if tasks[name]["node_type"] == node_type:
                columns.update(prediction_columns(tasks[name], values))
        folder = Path(out) / "predictions" / node_type
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), folder / f"part-{part_id:05d}.parquet")
        rows[node_type] = len(raw_ids)
    return {"part": part_id, "rows": rows, "seconds": round(time.perf_counter() - start, 3)}


def run_inference(run_path: str | Path, part_dir: str | Path, out: str | Path, *, executor: str = "ray",
                  address: str | None = None, num_actors: int | None = None, threads_per_actor: int = 1,
                  device: str = "cpu", overwrite: bool = False, top_k: int = 10) -> dict:
    """``graviti infer``: every partition's nodes to ``out/predictions/<node type>/part-*.parquet``, and
    for each link task the ``top_k`` recommended destinations per source to ``out/recommendations/<task>.parquet``.

    Results depend only on the run, the partitions and ``threads_per_actor``:
    the same with one actor or many (each partition is computed the same way).
    """
    import shutil
    import time

    from graviti_dist.crawl.write import check_output, publish, staging_dir

    part_dir, out = Path(part_dir).absolute(), Path(out).absolute()
    if not (part_dir / MANIFEST).exists():
        raise GravitiError(f"{part_dir}: not a partition set (no {MANIFEST}); run graviti partition first")
    if executor not in ("ray", "local"):
        raise GravitiError(f"--executor must be ray or local, not {executor!r}")
    check_output(out, overwrite)
    run = load_run(run_path)
    manifest = json.loads((part_dir / MANIFEST).read_text())
    check_depth(run, manifest, part_dir)
    num_parts = manifest["spec"]["num_parts"]
    started = time.perf_counter()
    tmp = staging_dir(out)
    tmp.mkdir(parents=True)
    try:
        if executor == "local":
            stats = [infer_partition(str(part_dir), p, run, str(tmp), device, threads_per_actor) for p in range(num_parts)]
        else:
            stats = _infer_with_ray(part_dir, run, tmp, num_parts, address, num_actors, threads_per_actor, device)
        summary = {"run": str(run.source), "partitions": str(part_dir), "device": device, "executor": executor,
                   "threads_per_actor": threads_per_actor, "parts": sorted(stats, key=lambda s: s["part"]),
                   "rows": {t: sum(s["rows"].get(t, 0) for s in stats) for t in manifest["ntypes"]},
                   "tasks": [t for t in manifest["tasks"] if t["type"] != "link" and (run.config.tasks is None or t["name"] in run.config.tasks)],
                   "seconds": round(time.perf_counter() - started, 3)}
        summary["recommendations"] = write_recommendations(tmp, part_dir, run, manifest, top_k)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        (tmp / "inference.json").write_text(json.dumps(summary, indent=2))
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _infer_with_ray(part_dir: Path, run: TrainedRun, tmp: Path, num_parts: int, address, num_actors, threads, device) -> list[dict]:
    import ray

    from graviti_dist.ray_cluster import ray_get, ray_session

    with ray_session(address, num_threads=threads):
        actors_wanted = num_actors or max(1, min(num_parts, int(ray.available_resources().get("CPU", 1))))
        worker = ray.remote(num_cpus=1, num_gpus=1 if device == "cuda" else 0)(_InferenceActor)
        actors = [worker.remote() for _ in range(min(actors_wanted, num_parts))]
        run_ref = ray.put(run)
        refs = [actors[p % len(actors)].infer.remote(str(part_dir), p, run_ref, str(tmp), device, threads) for p in range(num_parts)]
        return ray_get(refs)


class _InferenceActor:
    """Runs :func:`infer_partition` for the partitions it is given."""

    def infer(self, part_dir: str, part_id: int, run: TrainedRun, out: str, device: str, threads: int) -> dict:
        return infer_partition(part_dir, part_id, run, out, device, threads)


# --- link tasks: top-k recommendations ---------------------------------------------------------------

class Recommender:
    """Top-k destinations per source for a link task, over every node's final embedding.

    Scores are the trained link head's (dot scorer: a projected source embedding
    against each destination's); destinations the source already links to in the
    training graph are left out, so recommendations are new items.
    """

    def __init__(self, run: TrainedRun, part_dir: Path, manifest: dict, task: dict, src_emb: torch.Tensor, dst_emb: torch.Tensor):
        from graviti_dist.model.heads import TaskSpec, build_head

        self.name = task["name"]
        relation = manifest["schema"]["relations"][task["relation"]]
        self.src_type, self.dst_type = relation["src"], relation["dst"]
        head = build_head(TaskSpec(name=self.name, type="link"), src_emb.shape[1])
        prefix = f"heads.{self.name}."
        head_state = {k[len(prefix):]: v for k, v in run.state.items() if k.startswith(prefix)}
        if not head_state:
            raise GravitiError(f"{run.source}: the model has no trained head for link task {self.name!r}")
        head.load_state_dict(head_state)
        self.head = head.eval()
        self.src_emb, self.dst_emb = src_emb, dst_emb
        self.src_ids = pq.read_table(part_dir / "id_map" / f"{self.src_type}.parquet", columns=["raw_id"])["raw_id"]
        self.dst_ids = pq.read_table(part_dir / "id_map" / f"{self.dst_type}.parquet", columns=["raw_id"])["raw_id"]
        edges = pq.read_table(part_dir / "link_splits" / f"{self.name}.parquet")
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


def write_recommendations(tmp: Path, part_dir: Path, run: TrainedRun, manifest: dict, k: int, chunk: int = 1024) -> dict:
    """``recommendations/<task>.parquet``: per source node, its top-k new destinations and their probabilities."""
    import pyarrow.dataset as pads

    rows = {}
    for task in manifest["tasks"]:
        if task["type"] != "link" or (run.config.tasks is not None and task["name"] not in run.config.tasks):
            continue
        relation = manifest["schema"]["relations"][task["relation"]]
        emb = {t: embeddings_by_type_id(pads.dataset(tmp / "predictions" / t, format="parquet").to_table(columns=["id", "embedding"]),
                                        pq.read_table(part_dir / "id_map" / f"{t}.parquet", columns=["raw_id"]))
               for t in {relation["src"], relation["dst"]}}
        rec = Recommender(run, part_dir, manifest, task, emb[relation["src"]], emb[relation["dst"]])
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
        (tmp / "recommendations").mkdir(exist_ok=True)
        pq.write_table(table, tmp / "recommendations" / f"{task['name']}.parquet")
        rows[task["name"]] = table.num_rows
    return rows
