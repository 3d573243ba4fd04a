"""``graviti partition``: Ray actors + DGL METIS turn a crawl into DGL-format partitions.

Stages (each timed in the report):
  read    Ray tasks read node types, then relations, in parallel (pyarrow), mapping raw ids;
  split   deterministic train/val/test splits per task; val/test link edges leave the graph;
  assign  DGL's METIS on the homogeneous graph, balancing node types x labelled-train
          nodes and edges (or a seeded balanced random assignment);
  halo    DGL's reshuffle of ids by part, into a plan (``halo.py``) from which any
          worker can build any part;
  write   writers (Ray actors or threads), one per group of partitions, build each
          part with its ``num_hops`` halo (the content of DGL's ``partition_graph_with_halo``,
          so sampling inside one partition is exact), gather features and labels and write
          DGL's partition format (``dgl.distributed.load_partition`` loads each part),
          plus ``halo_feat.dgl`` (features of halo nodes, which DGL leaves to its
          KVStore) so a worker can train on its partition alone.
Everything is built in a hidden sibling directory and renamed into place when complete.

Executors: ``ray`` runs the read and write steps in Ray tasks and actors (joining
``address``, else starting a local Ray); ``local`` runs the same steps in this process
(threads for the writers), without Ray; ``auto`` (the default) is ``ray`` when there is
a cluster to use (an ``address``, ``RAY_ADDRESS`` as ``ray job submit`` sets it, or Ray
already initialised in this process) and ``local`` otherwise. The driver holds the
whole graph for METIS either way, so on one machine Ray adds its daemons' and workers'
start-up and memory and gains nothing the writer threads don't: at 1M edges on 2 cores
a local Ray took 3x as long and twice the memory (benchmarks/results/partition.json).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from graviti_dist._dgl import dgl, metis_assignment
from graviti_dist.crawl import Crawl, Dedupe, load_crawl, load_schema
from graviti_dist.errors import FieldError, GravitiError
from graviti_dist.partition.graph import attach_edge_inputs, build_graph, log_in_degrees
from graviti_dist.partition.halo import HaloPlan, plan_halo
from graviti_dist.partition.layout import (DEGREE, EDGE_INPUTS, FORMAT_VERSION, EdgeInputInfo, FeatureInfo, Manifest, PartitionSet, PartitionSpec, PartStats,
                                          StructuralInfo, TaskInfo, file_records)
from graviti_dist.partition.read import read_crawl_parallel
from graviti_dist.partition.splits import SPLIT_NAMES, TRAIN, make_splits, message_passing_crawl, split_masks
from graviti_dist.partition.write import (WriterContext, part_config, start_writers, write_id_maps, write_link_splits,
                                          writer_actors)
from graviti_dist.runtime.memory import release_free_memory
from graviti_dist.runtime.output import check_output, staged_output

log = logging.getLogger(__name__)


@dataclass
class _Stages:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        log.info("partition: %-6s done in %.1fs (driver peak RSS %.2f GB)", name, self.seconds[name], _peak_rss_gb())


def _peak_rss_gb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def partition_crawl(crawl_dir: str | Path, out: str | Path, spec: PartitionSpec, *, address: str | None = None,
                    overwrite: bool = False, dedupe: Dedupe = "error", drop_dangling: bool = False) -> dict:
    """Partition the crawl at ``crawl_dir`` into ``out``; returns the report (also written as report.json)."""
    crawl_dir, out = Path(crawl_dir).absolute(), Path(out).absolute()
    check_output(out, overwrite)
    load_schema(crawl_dir)  # fail on a bad schema before starting Ray
    if spec.executor == "local" and address is not None:
        raise FieldError("address", "is for the Ray executor; executor 'local' runs in this process")
    spec = replace(spec, executor=resolve_executor(spec.executor, address))
    log.info("partition: executor %s", spec.executor)
    stages = _Stages()
    with _executor_session(spec, address):
        # Started first, so that their imports (torch, DGL: seconds of CPU each) overlap the stages before the write.
        actors = writer_actors(spec.num_parts, spec.num_actors) if spec.executor == "ray" else None
        with stages("read"):
            crawl, node_refs = _read(crawl_dir, spec, dedupe, drop_dangling)
        with stages("split"):
            node_splits, link_splits = make_splits(crawl, spec.split, spec.seed, spec.split_by)
            graph, train_count = _split_graph(crawl, node_splits, link_splits)
            structural = _attach_degrees(graph)
            edge_inputs = attach_edge_inputs(graph, EDGE_INPUTS)
            sim_g = dgl.to_homogeneous(graph)
        with stages("assign"):
            node_parts = _assign(sim_g, np.concatenate([train_count[t] for t in graph.ntypes]), spec)
        with stages("halo"):
            # The graph reshuffled into per-part id ranges; each part is built (inner nodes, halo,
            # edges) by the writer that writes it, so no process holds all parts at once.
            plan, plan_arg = _share(plan_halo(sim_g, node_parts, spec.num_hops, spec.num_parts), spec)
        # The stages after this read sim_g's edge list and data only: drop the in-edge CSR built for
        # in-degrees (~0.3 GB at 10M crawl edges, held through the write).
        sim_g = sim_g.formats("coo")
        # The reshuffle frees more than it keeps, and writer threads allocate in arenas of their
        # own that would not reuse those pages: at 1M edges the write then rose 0.15 GB above the
        # halo stage's peak; starting it from the live data keeps it under.
        release_free_memory()
        with staged_output(out, overwrite) as tmp:
            parts = PartitionSet(tmp)
            with stages("write"):
                stats = _write(parts, plan, plan_arg, graph, sim_g, crawl, node_parts, link_splits, spec, actors, node_refs)
            report = _report(sim_g, node_parts, stats, stages, spec)
            parts.write_report(report)
            manifest = _manifest(crawl, crawl_dir, graph, spec, stats, node_splits, structural, edge_inputs)
            # last: marks a finished set, and records every other file's size and checksum
            parts.write_manifest(manifest.model_copy(update={"files": file_records(parts.root)}))
    return report


def _read(crawl_dir: Path, spec: PartitionSpec, dedupe: Dedupe, drop_dangling: bool) -> tuple[Crawl, dict | None]:
    """The crawl (and, on Ray, each node type's read result in the object store)."""
    if spec.executor == "local":
        crawl, node_refs = load_crawl(crawl_dir, dedupe=dedupe, drop_dangling=drop_dangling), None
    else:
        crawl, node_refs = read_crawl_parallel(crawl_dir, dedupe, drop_dangling)
    num_nodes = sum(len(t) for t in crawl.nodes.values())
    if num_nodes == 0:
        raise GravitiError(f"{crawl_dir}: the crawl has no nodes; nothing to partition")
    if spec.num_parts > num_nodes:
        raise FieldError("num_parts", f"{spec.num_parts} is more than the crawl's {num_nodes} nodes")
    return crawl, node_refs


def _split_graph(crawl: Crawl, node_splits: dict, link_splits: dict) -> tuple["dgl.DGLGraph", dict[str, np.ndarray]]:
    """The message-passing graph with split masks as node data, and per node type how many node
    tasks train on each node (a METIS balance weight)."""
    # Nothing here writes node features in place: Ray-read ones stay in the object store, uncopied.
    graph = build_graph(message_passing_crawl(crawl, link_splits), share_read_only=True)
    train_count = {t: np.zeros(len(crawl.nodes[t]), np.int64) for t in crawl.nodes}
    for task in crawl.schema.tasks:
        if not task.is_link:
            for key, mask in split_masks({task.name: node_splits[task.name]}).items():
                graph.nodes[task.node_type].data[key] = torch.from_numpy(mask)
            train_count[task.node_type] += node_splits[task.name] == TRAIN
    return graph, train_count


def _attach_degrees(graph) -> dict[str, StructuralInfo]:
    """Each node type's log in-degrees as node data (``DEGREE``; the writers take it to every part
    like the split masks), and their statistics over the whole set for the manifest."""
    structural = {}
    for node_type in graph.ntypes:
        columns, matrix = log_in_degrees(graph, node_type)
        # A column the same for every node says nothing (every post has one author): left out.
        varies = np.flatnonzero(matrix.min(0) < matrix.max(0)) if len(matrix) else np.zeros(0, np.int64)
        if not len(varies):
            continue
        matrix = np.ascontiguousarray(matrix[:, varies])
        graph.nodes[node_type].data[DEGREE] = torch.from_numpy(matrix)
        values = matrix.astype(np.float64)
        structural[node_type] = StructuralInfo(columns=[columns[i] for i in varies], mean=values.mean(0).tolist(),
                                               std=values.std(0, ddof=1).tolist())
    return structural


def _write(parts: PartitionSet, plan: HaloPlan, plan_arg, graph, sim_g, crawl: Crawl, node_parts, link_splits: dict,
           spec: PartitionSpec, actors: list | None, node_refs: dict | None) -> list[PartStats]:
    """Every part (in the background) and, meanwhile in this thread, the set's own files."""
    # With node_refs the writers take features and labels from the read's objects: putting the
    # graph's copies in again cost 2.5 GB and 1-2 s at 10M edges.
    ctx = WriterContext.of(graph, sim_g, crawl, node_refs)
    written = start_writers(parts.root, plan_arg, ctx, spec.num_parts, actors, spec.num_actors)
    try:
        metadata = part_config(graph, sim_g, node_parts, plan, spec.method, spec.num_hops)
        parts.part_config.write_text(json.dumps(metadata, indent=2))
        write_id_maps(parts, crawl, graph, sim_g, node_parts, plan.orig_nids)
        write_link_splits(parts, crawl, link_splits)
    finally:
        stats = written()  # even when this thread failed: the staging folder's cleanup must not race the writers
    return stats


def resolve_executor(executor: str, address: str | None) -> str:
    """``ray`` or ``local`` for ``executor``; ``auto`` is ``ray`` only where there is a Ray cluster to use."""
    if executor != "auto":
        return executor
    if address is not None or os.environ.get("RAY_ADDRESS"):
        return "ray"
    ray = sys.modules.get("ray")  # not imported means not initialised: no need to pay for the import
    return "ray" if ray is not None and ray.is_initialized() else "local"


@contextlib.contextmanager
def _executor_session(spec: PartitionSpec, address: str | None):
    if spec.executor == "local":
        yield
        return
    from graviti_dist.runtime.ray_cluster import ray_session  # imports Ray: only the Ray executor pays for it

    with ray_session(address, num_threads=max(1, (os.cpu_count() or 2) // 2)):
        yield


def _share(plan: HaloPlan, spec: PartitionSpec) -> tuple[HaloPlan, object]:
    """``(plan, what to pass writers)``: on Ray the plan moves into the object store, where writers
    read it without copies, and the driver keeps only that shared view (0.65 GB less at 10M edges)."""
    if spec.executor == "local":
        return plan, plan
    import ray

    ref = ray.put(plan)
    return ray.get(ref), ref


# --- assign ----------------------------------------------------------------------

def _assign(sim_g, train_count: np.ndarray, spec: PartitionSpec) -> torch.Tensor:
    """Part id of every homogeneous node: METIS with one balance weight per node type, the node's
    training work (how many node tasks train on it) and its in-degree (edges), or random."""
    if spec.num_parts == 1:
        return torch.zeros(sim_g.num_nodes(), dtype=torch.int64)
    if spec.method == "random":
        rng = np.random.default_rng(spec.seed)
        return torch.from_numpy(rng.permutation(sim_g.num_nodes()) % spec.num_parts).long()
    ntype = sim_g.ndata[dgl.NTYPE].long()
    weights = [(ntype == t).long() for t in torch.unique(ntype)]
    train = torch.from_numpy(train_count).long()
    # A weight every node shares adds nothing but a constraint METIS must also meet.
    if spec.balance_train and int(train.min()) != int(train.max()):
        weights.append(train)
    weights.append(sim_g.in_degrees().long())
    return metis_assignment(sim_g, spec.num_parts, torch.stack(weights, 1), spec.metis_mode)


# --- report and manifest ------------------------------------------------------------

def _report(sim_g, node_parts, stats: list[PartStats], stages: _Stages, spec: PartitionSpec) -> dict:
    parts_np = node_parts.numpy()
    src, dst = (x.numpy() for x in sim_g.edges())
    cut = int((parts_np[src] != parts_np[dst]).sum())
    inner = [sum(s.inner_nodes.values()) for s in stats]
    halo = [sum(s.halo_nodes.values()) for s in stats]
    edges = [s.inner_edges for s in stats]

    def balance(values):
        mean = float(np.mean(values)) if values else 0.0
        return {"per_part": values, "max_over_mean": round(max(values) / mean, 4) if mean else None}

    train = {task: balance([s.train_nodes.get(task, 0) for s in stats]) for task in stats[0].train_nodes} if stats else {}
    return {
        "num_parts": spec.num_parts, "method": spec.method, "num_hops": spec.num_hops, "executor": spec.executor,
        "num_nodes": int(sim_g.num_nodes()), "num_edges": int(sim_g.num_edges()),
        "edge_cut": cut, "edge_cut_fraction": round(cut / max(1, sim_g.num_edges()), 4),
        "nodes": balance(inner), "edges": balance(edges), "train_nodes": train,
        "halo_nodes": halo, "halo_replication": round((sum(inner) + sum(halo)) / max(1, sum(inner)), 4),
        "seconds": stages.seconds, "peak_rss_gb": {"driver": _peak_rss_gb(), "writers": [s.peak_rss_gb for s in stats]},
    }


def _task_info(task, crawl: Crawl, node_splits: dict) -> TaskInfo:
    """A schema task with what the partitioner learned of it: split counts and training statistics."""
    entry = task.model_dump(mode="json")
    if task.is_link:
        return TaskInfo(**entry)
    labels, split = crawl.labels[task.name], node_splits[task.name]
    train = labels.values[split == TRAIN]
    entry["counts"] = {n: int((split == i).sum()) for i, n in enumerate(SPLIT_NAMES)}
    if task.type == "regression":
        entry["train_mean"] = float(train.mean()) if train.size else 0.0
        entry["train_std"] = float(train.std()) if train.size else 1.0
    if task.type in ("binary", "multilabel"):
        entry["train_positive_rate"] = float(train.mean()) if train.size else 0.0
    if labels.classes is not None:
        entry["classes"] = [str(c) for c in labels.classes]
    return TaskInfo(**entry)


def _feature_info(feature) -> FeatureInfo:
    info = {"kind": feature.kind, "width": feature.width,
            "categories": len(feature.categories) + 1 if feature.categories is not None else None}
    if feature.kind in ("numeric", "vector"):
        values = feature.values.reshape(len(feature.values), -1).astype(np.float64)
        rows = values.shape[0]
        info["mean"] = values.mean(0).tolist() if rows else [0.0] * values.shape[1]
        info["std"] = values.std(0, ddof=1).tolist() if rows > 1 else [1.0] * values.shape[1]
    return FeatureInfo(**info)


def _manifest(crawl: Crawl, crawl_dir: Path, graph, spec: PartitionSpec, stats: list[PartStats], node_splits,
              structural: dict[str, StructuralInfo], edge_inputs: EdgeInputInfo | None) -> Manifest:
    features = {t: {name: _feature_info(f) for name, f in table.features.items()} for t, table in crawl.nodes.items()}
    return Manifest(
        format_version=FORMAT_VERSION, crawl=str(crawl_dir), schema=crawl.schema, spec=spec,
        ntypes=list(graph.ntypes), etypes=[tuple(c) for c in graph.canonical_etypes], features=features, structural=structural,
        edge_inputs=edge_inputs,
        tasks=[_task_info(task, crawl, node_splits) for task in crawl.schema.tasks],
        edge_attributes={":".join(c): sorted(k for k in graph.edges[c].data.keys() if k != EDGE_INPUTS)
                         for c in graph.canonical_etypes},
        parts=stats)
