"""``graviti infer``: every partition's nodes to Parquet (one Ray actor per partition, or this
process), and each link task's top-k recommendations.

Files: ``OUT/predictions/<node type>/part-<i>.parquet`` (raw ``id``, ``node_type``, ``embedding``,
one column per node task, ``<task>_proba`` for multiclass), ``OUT/recommendations/<task>.parquet``
and ``OUT/inference.json``, the run's summary; ``predictions`` owns these names.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from graviti_dist._dgl import set_threads
from graviti_dist.errors import FieldError
from graviti_dist.infer.halo_exchange import ShallowPartition, in_process, run_layers
from graviti_dist.infer.explain import RawIds, explanation_table
from graviti_dist.infer.layerwise import (NodeOutputs, needs_exchange, original_units, predict_selected, raw_ids_of_inner,
                                          selected_model_count, selected_models)
from graviti_dist.infer.predictions import Predictions, list_column
from graviti_dist.infer.recommend import write_recommendations
from graviti_dist.partition import PartitionSet, TaskInfo
from graviti_dist.runtime.memory import peak_rss_gb
from graviti_dist.runtime.output import check_output, staged_output
from graviti_dist.sampling import NodeRanges, WorkerPartition, load_worker_partition
from graviti_dist.train import TrainedRun, load_run


def prediction_columns(task: TaskInfo, values: torch.Tensor) -> dict[str, pa.Array]:
    """A node task's prediction as Parquet columns: class + probabilities, probability, or value in the
    crawl's own units."""
    name = task.name
    values = original_units(task, values)
    if task.type == "multiclass":
        labels = np.asarray(task.classes or list(range(values.shape[1])))
        return {name: pa.array(labels[values.argmax(1).numpy()].tolist()),
                f"{name}_proba": list_column(values)}
    if task.type == "multilabel":
        return {name: list_column(values)}
    return {name: pa.array(values.numpy().astype(np.float32))}


def infer_partition(part_dir: str, part_id: int, run: TrainedRun, out: str, device: str = "cpu", threads: int | None = None,
                    explain: int = 0) -> dict:
    """Write every inner node's embedding and predictions (and with ``explain``, its top neighbours) of
    partition ``part_id`` under ``out`` (a set whose halo is as deep as the model: the partition computes alone)."""
    if threads:
        set_threads(threads)
    start = time.perf_counter()
    part = load_worker_partition(part_dir, part_id)
    owned = raw_ids_of_inner(PartitionSet(part_dir), part, part_id)
    outputs = predict_selected(part, selected_models(run, part, device), [nodes for nodes, _ in owned.values()], device,
                               explain)
    return write_partition(part, part_id, owned, outputs, out, start)


def write_partition(part: WorkerPartition, part_id: int, owned: dict, outputs: list[NodeOutputs], out: str,
                    start: float) -> dict:
    """One partition's inner nodes' outputs (``outputs``, per node type of ``owned``) as its Parquet files."""
    tasks = {t.name: t for t in part.manifest.tasks}
    raw_ids = RawIds(PartitionSet(part.source[0]), part.manifest) if outputs and outputs[0].neighbours is not None else None
    rows = {}
    for (t, (_, ids)), result in zip(owned.items(), outputs):
        node_type = part.ntypes[t]
        columns = {"id": ids, "node_type": pa.array([node_type] * len(ids), pa.string()), "embedding": list_column(result.emb)}
        for name, values in result.preds.items():
            if tasks[name].node_type == node_type:
                columns.update(prediction_columns(tasks[name], values))
        Predictions(out).write_part(node_type, part_id, pa.table(columns))
        if raw_ids is not None:
            Predictions(out).write_explanations(node_type, part_id,
                                                explanation_table(ids, node_type, result.neighbours, raw_ids, part.manifest))
        rows[node_type] = len(ids)
    return {"part": part_id, "rows": rows, "seconds": round(time.perf_counter() - start, 3), "peak_rss_gb": peak_rss_gb()}


class ShallowInference(ShallowPartition):
    """A partition of a shallow set for ``graviti infer``: loaded from disk, written to Parquet when done."""

    def __init__(self, part_dir: str, part_id: int, run: TrainedRun, device: str = "cpu", threads: int | None = None,
                 explain: int = 0):
        if threads:
            set_threads(threads)
        self.start = time.perf_counter()
        part = load_worker_partition(part_dir, part_id)
        self.owned = raw_ids_of_inner(PartitionSet(part_dir), part, part_id)
        super().__init__(part, part_id, selected_models(run, part, device), NodeRanges.of(PartitionSet(part_dir)),
                         [nodes for nodes, _ in self.owned.values()], device, explain)
        self.part_id = part_id

    def write(self, out: str) -> dict:
        return write_partition(self.part, self.part_id, self.owned, self.outputs, out, self.start)


def run_inference(run_path: str | Path, part_dir: str | Path, out: str | Path, *, executor: str = "ray",
                  address: str | None = None, num_actors: int | None = None, threads_per_actor: int = 1,
                  device: str = "cpu", overwrite: bool = False, top_k: int = 10, select: str = "per_task",
                  explain: int = 0) -> dict:
    """``graviti infer``: every partition's nodes to ``out``'s predictions, and for each link task the
    ``top_k`` recommended destinations per source (0: none; see ``predictions`` for the files). ``select``:
    each node task from its own best epoch (``per_task``) or every task from best_model.pt (``summed``).
    ``explain``: also write each node's ``explain`` most attended neighbours (``explanations/``); 0 for none.

    Results depend only on the run, the partitions and ``threads_per_actor``:
    the same with one actor or many (each partition is computed the same way).
    """
    if executor not in ("ray", "local"):
        raise FieldError("executor", f"must be ray or local, not {executor!r}")
    for name, value in (("num_actors", num_actors), ("threads_per_actor", threads_per_actor)):
        if value is not None and value < 1:
            raise FieldError(name, f"must be at least 1, got {value}")
    if top_k < 0:
        raise FieldError("top_k", f"must be 0 (no recommendations) or more, got {top_k}")
    if explain < 0:
        raise FieldError("explain", f"must be 0 (none) or more, got {explain}")
    parts, out = PartitionSet(Path(part_dir).absolute()), Path(out).absolute()
    manifest = parts.read_manifest()
    check_output(out, overwrite)
    run = load_run(run_path, select)
    if explain and run.config.model.kind != "gat":
        raise FieldError("explain", f"explanations read the GAT's attention: this run's encoder is {run.config.model.kind!r}")
    exchange = needs_exchange(run, manifest)
    started = time.perf_counter()
    with staged_output(out, overwrite) as tmp:
        if executor == "local":
            stats = _infer_here(parts.root, run, tmp, manifest.num_parts, exchange, threads_per_actor, device, explain)
        else:
            stats = _infer_with_ray(parts.root, run, tmp, manifest.num_parts, exchange, address, num_actors,
                                    threads_per_actor, device, explain)
        summary = {"run": str(run.source), "partitions": str(parts.root), "device": device, "executor": executor,
                   "halo_exchange": exchange, "explain": explain, "select": select, "task_epochs": run.task_epoch,
                   "threads_per_actor": threads_per_actor, "parts": sorted(stats, key=lambda s: s["part"]),
                   "rows": {t: sum(s["rows"].get(t, 0) for s in stats) for t in manifest.ntypes},
                   "tasks": [t.model_dump(mode="json") for t in manifest.node_tasks if run.config.trains(t.name)]}
        # Exact top-k scores every source against every destination in this process: minutes at
        # 250k users x 1.26M posts (benchmarks/README.md, shallow halos), so it can be left out.
        summary["recommendations"] = write_recommendations(Predictions(tmp), parts, run, manifest, top_k) if top_k else {}
        summary["seconds"] = round(time.perf_counter() - started, 3)
        Predictions(tmp).write_summary(summary)
    return summary


def _infer_here(part_dir: Path, run: TrainedRun, tmp: Path, num_parts: int, exchange: bool, threads, device,
                explain: int) -> list[dict]:
    if not exchange:
        return [infer_partition(str(part_dir), p, run, str(tmp), device, threads, explain) for p in range(num_parts)]
    parts = {p: ShallowInference(str(part_dir), p, run, device, threads, explain) for p in range(num_parts)}
    in_process(parts, len(run.config.model.fanouts))
    return [part.write(str(tmp)) for part in parts.values()]


def _infer_with_ray(part_dir: Path, run: TrainedRun, tmp: Path, num_parts: int, exchange: bool, address, num_actors,
                    threads, device, explain: int) -> list[dict]:
    import ray  # here: the local executor runs without Ray

    from graviti_dist.runtime.ray_cluster import ray_get, ray_session

    with ray_session(address, num_threads=threads):
        cpus = ray.available_resources().get("CPU", 1)
        run_ref = ray.put(run)
        if exchange:
            return _exchange_with_ray(part_dir, run, run_ref, tmp, num_parts, cpus, threads, device, explain)
        actors_wanted = num_actors or max(1, min(num_parts, int(cpus)))
        worker = ray.remote(num_cpus=1, num_gpus=1 if device == "cuda" else 0)(_InferenceActor)
        actors = [worker.remote() for _ in range(min(actors_wanted, num_parts))]
        refs = [actors[p % len(actors)].infer.remote(str(part_dir), p, run_ref, str(tmp), device, threads, explain)
                for p in range(num_parts)]
        return ray_get(refs)


def _exchange_with_ray(part_dir: Path, run: TrainedRun, run_ref, tmp: Path, num_parts: int, cpus: float, threads,
                       device, explain: int) -> list[dict]:
    """One actor per partition (they go through the layers in step, so all of them live at once),
    each taking an equal share of the cluster's CPUs; halo rows go from actor to actor as object refs."""
    import ray

    from graviti_dist.runtime.ray_cluster import ray_get

    share = min(1.0, int(cpus * 100 / num_parts) / 100) or 0.01
    actor = ray.remote(num_cpus=share, num_gpus=min(1.0, 1 / num_parts) if device == "cuda" else 0)(ShallowInference)
    parts = {p: actor.remote(str(part_dir), p, run_ref, device, threads, explain) for p in range(num_parts)}
    run_layers(parts, selected_model_count(run), len(run.config.model.fanouts),
               lambda h, name, *args: getattr(h, name).remote(*args), ray_get)
    return ray_get([h.write.remote(str(tmp)) for h in parts.values()])


class _InferenceActor:
    """Runs :func:`infer_partition` for the partitions it is given."""

    def infer(self, part_dir: str, part_id: int, run: TrainedRun, out: str, device: str, threads: int, explain: int) -> dict:
        return infer_partition(part_dir, part_id, run, out, device, threads, explain)
