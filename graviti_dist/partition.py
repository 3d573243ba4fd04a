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
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import psutil
import pyarrow as pa
import torch

from graviti_dist._dgl import dgl, metis_assignment
from graviti_dist.crawl.load import Dedupe, load_crawl
from graviti_dist.crawl.tables import Crawl
from graviti_dist.crawl.schema import load_schema
from graviti_dist.crawl.write import check_output, publish, staging_dir
from graviti_dist.errors import GravitiError
from graviti_dist.graph import build_graph, node_arrays
from graviti_dist.halo import HaloPlan, plan_halo
from graviti_dist.memory import release_free_memory
from graviti_dist.partition_read import read_crawl_parallel
from graviti_dist.ray_cluster import ray_get
from graviti_dist.partition_check import HALO_FEATS, MANIFEST, message_passing_crawl
from graviti_dist.splits import SPLIT_NAMES, TRAIN, assign_splits, check_fractions

log = logging.getLogger(__name__)

GRAPH_NAME = "graph"
REPORT = "report.json"
FORMAT_VERSION = 1
EXECUTORS = ("auto", "ray", "local")


@dataclass(frozen=True)
class PartitionSpec:
    """How to partition; validated on construction."""

    num_parts: int
    method: str = "metis"
    num_hops: int = 2  # halo depth: the number of GAT layers to sample exactly inside a partition
    balance_train: bool = True
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    num_actors: int | None = None
    executor: str = "auto"  # "ray" (actors, local Ray or a cluster), "local" (this process, threads) or "auto"
    metis_mode: str = "recursive"  # "recursive" bisection (reproducible) or "k-way" (METIS's multilevel k-way)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        if self.num_parts < 1:
            raise ValueError(f"--num-parts must be at least 1, got {self.num_parts}")
        if self.metis_mode not in ("recursive", "k-way"):
            raise ValueError(f"--metis-mode must be recursive or k-way, not {self.metis_mode!r}")
        if self.method not in ("metis", "random"):
            raise ValueError(f"--method must be metis or random, not {self.method!r}")
        if self.num_hops < 1:
            raise ValueError(f"--num-hops must be at least 1, got {self.num_hops}")
        if self.num_actors is not None and self.num_actors < 1:
            raise ValueError(f"--num-actors must be at least 1, got {self.num_actors}")
        object.__setattr__(self, "split", check_fractions(tuple(self.split)))


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


# --- split ---------------------------------------------------------------------

def _make_splits(crawl: Crawl, spec: PartitionSpec) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    node_splits, link_splits = {}, {}
    for task in crawl.schema.tasks:
        if task.type == "link":
            link_splits[task.name] = assign_splits(np.ones(len(crawl.edges[task.relation]), bool), spec.split, spec.seed, task.name)
        else:
            node_splits[task.name] = assign_splits(crawl.labels[task.name].mask, spec.split, spec.seed, task.name)
    return node_splits, link_splits


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


# --- write -----------------------------------------------------------------------

# Node data keys that come straight from the read (see graph.node_arrays); the rest (split masks) the driver makes.
_FROM_READ = ("feat_", "label_", "mask_")


def _with_read_node_data(node_data: dict, node_refs: dict) -> dict:
    """``node_data`` (per node type: the driver's split masks) plus features and labels from the read's objects."""
    import ray

    out = {}
    for node_type, extra in node_data.items():
        table, labels, _ = ray.get(node_refs[node_type])
        out[node_type] = {**node_arrays(table, labels), **extra}
    return out


class _PartitionWriter:
    """Builds the files of the partitions it is given (DGL format + halo features)."""

    def __init__(self):
        # Threads sharing one writer save graphs one at a time: DGL's save builds a CSC copy of the
        # part first, the largest transient of the write (two at once: +0.6 GB at 10M edges).
        self._graph_lock = threading.Lock()

    def write(self, part_id: int, plan: HaloPlan, out_dir: str, ctx: dict) -> dict:
        part = plan.build(part_id)
        if ctx["node_refs"] is not None:
            ctx = {**ctx, "node_data": _with_read_node_data(ctx["node_data"], ctx["node_refs"])}
        save_tensors = dgl.data.utils.save_tensors
        # DGL's own pre-save step (field dtypes, CSC sorted by edge type) keeps load_partition's checks happy.
        _save_graphs = dgl.distributed.partition._save_graphs
        orig = part.ndata.pop("orig_id")
        orig_e = part.edata.pop("orig_id")
        # Fancy indexing copies out of Ray's read-only shared memory.
        ntype = torch.from_numpy(ctx["sim_ntype"][orig.numpy()])
        etype = torch.from_numpy(ctx["sim_etype"][orig_e.numpy()])
        part.ndata[dgl.NTYPE], part.edata[dgl.ETYPE] = ntype, etype
        inner = part.ndata["inner_node"].bool()
        inner_edge = part.edata["inner_edge"].bool()
        type_nid = torch.from_numpy(ctx["sim_nid"][orig.numpy()])
        type_eid = torch.from_numpy(ctx["sim_eid"][orig_e.numpy()])
        stats = {"part": part_id, "inner_nodes": {}, "halo_nodes": {}, "train_nodes": {}}
        part_dir = Path(out_dir) / f"part{part_id}"
        part_dir.mkdir(parents=True, exist_ok=True)
        # One file's tensors at a time: two writer threads each holding a part's inner, halo and
        # edge features together added 1.5 GB to the peak at 10M edges.
        for is_inner, filename in ((True, "node_feat.dgl"), (False, HALO_FEATS)):
            tensors = {}
            for t, name in enumerate(ctx["ntypes"]):
                local = torch.nonzero((inner == is_inner) & (ntype == t)).squeeze(1)
                local = local[torch.argsort(part.ndata[dgl.NID][local])]  # feature rows in shuffled-id order
                ids = type_nid[local].numpy()
                for key, values in ctx["node_data"][name].items():
                    tensors[f"{name}/{key}"] = torch.from_numpy(np.ascontiguousarray(values[ids]))
                if not is_inner:
                    tensors[f"{name}/_local_id"] = local
                (stats["inner_nodes"] if is_inner else stats["halo_nodes"])[name] = int(local.numel())
                if is_inner:
                    for task in ctx["node_tasks"].get(name, []):
                        stats["train_nodes"][task] = int(tensors[f"{name}/train_{task}"].sum())
            save_tensors(str(part_dir / filename), tensors)
            del tensors
        edge_feats = {}
        for e, canonical in enumerate(ctx["etypes"]):
            local = torch.nonzero(inner_edge & (etype == e)).squeeze(1)
            local = local[torch.argsort(part.edata[dgl.EID][local])]
            ids = type_eid[local].numpy()
            for key, values in ctx["edge_data"].get(canonical, {}).items():
                edge_feats[":".join(canonical) + "/" + key] = torch.from_numpy(np.ascontiguousarray(values[ids]))
        save_tensors(str(part_dir / "edge_feat.dgl"), edge_feats)
        del edge_feats
        stats["inner_edges"] = int(inner_edge.sum())
        stats["local_edges"] = int(part.num_edges())
        with self._graph_lock:
            _save_graphs(str(part_dir / "graph.dgl"), [part], formats=["csc"], sort_etypes=len(ctx["etypes"]) > 1)
        stats["peak_rss_gb"] = round(psutil.Process().memory_info().rss / 2**30, 3)
        return stats


def _ranges(part_of: np.ndarray, type_of: np.ndarray, num_parts: int, num_types: int) -> list[list[list[int]]]:
    """[type][part] -> [start, end) of shuffled ids; shuffled ids are sorted by (part, type)."""
    ranges = [[[0, 0] for _ in range(num_parts)] for _ in range(num_types)]
    key = part_of * num_types + type_of
    counts = np.bincount(key, minlength=num_parts * num_types)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for p in range(num_parts):
        for t in range(num_types):
            k = p * num_types + t
            ranges[t][p] = [int(starts[k]), int(starts[k] + counts[k])]
    return ranges


def partition_crawl(crawl_dir: str | Path, out: str | Path, spec: PartitionSpec, *, address: str | None = None,
                    overwrite: bool = False, dedupe: Dedupe = "error", drop_dangling: bool = False) -> dict:
    """Partition the crawl at ``crawl_dir`` into ``out``; returns the report (also written as report.json)."""
    crawl_dir, out = Path(crawl_dir).absolute(), Path(out).absolute()
    check_output(out, overwrite)
    load_schema(crawl_dir)  # fail on a bad schema before starting Ray
    if spec.executor == "local" and address is not None:
        raise GravitiError("--executor local runs in this process: it takes no --address")
    spec = replace(spec, executor=resolve_executor(spec.executor, address))
    log.info("partition: executor %s", spec.executor)
    stages = _Stages()
    with _executor_session(spec, address):
        # Started first, so that their imports (torch, DGL: seconds of CPU each) overlap the stages before the write.
        actors = _writer_actors(spec) if spec.executor == "ray" else None
        with stages("read"):
            node_refs = None
            if spec.executor == "local":
                crawl = load_crawl(crawl_dir, dedupe=dedupe, drop_dangling=drop_dangling)
            else:
                crawl, node_refs = read_crawl_parallel(crawl_dir, dedupe, drop_dangling)
        num_nodes = sum(len(t) for t in crawl.nodes.values())
        if num_nodes == 0:
            raise GravitiError(f"{crawl_dir}: the crawl has no nodes; nothing to partition")
        if spec.num_parts > num_nodes:
            raise GravitiError(f"--num-parts {spec.num_parts} is more than the crawl's {num_nodes} nodes")
        with stages("split"):
            node_splits, link_splits = _make_splits(crawl, spec)
            # Nothing here writes node features in place: Ray-read ones stay in the object store, uncopied.
            graph = build_graph(message_passing_crawl(crawl, link_splits), share_read_only=True)
            train_count = {t: np.zeros(len(crawl.nodes[t]), np.int64) for t in crawl.nodes}
            for task in crawl.schema.tasks:
                if task.type != "link":
                    for i, split_name in enumerate(SPLIT_NAMES):
                        graph.nodes[task.node_type].data[f"{split_name}_{task.name}"] = torch.from_numpy(node_splits[task.name] == i)
                    train_count[task.node_type] += node_splits[task.name] == TRAIN
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
        tmp = staging_dir(out)
        tmp.mkdir(parents=True)
        try:
            with stages("write"):
                # The parts are built and written in the background while this thread writes the set's own files.
                written = _start_writers(tmp, plan_arg, graph, sim_g, crawl, spec, actors, node_refs)
                try:
                    metadata = _part_config(graph, sim_g, node_parts, plan.orig_nids, plan.orig_eids, spec)
                    (tmp / f"{GRAPH_NAME}.json").write_text(json.dumps(metadata, indent=2))
                    _write_id_maps(tmp, crawl, graph, sim_g, node_parts, plan.orig_nids)
                    _write_link_splits(tmp, crawl, link_splits)
                finally:
                    stats = written()  # even when this thread failed: the cleanup below must not race the writers
            report = _report(crawl, graph, sim_g, node_parts, stats, stages, spec)
            manifest = _manifest(crawl, graph, spec, stats, node_splits)
            manifest["crawl"] = str(crawl_dir)
            (tmp / REPORT).write_text(json.dumps(report, indent=2))
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))  # last: its presence marks a finished set
            publish(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return report


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
    from graviti_dist.ray_cluster import ray_session

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


def _writer_actors(spec: PartitionSpec) -> list:
    """One Ray writer actor per group of partitions: ``--num-actors``, else one per part up to the CPUs."""
    import ray

    workers = spec.num_actors or max(1, min(spec.num_parts, int(ray.available_resources().get("CPU", 1))))
    return [ray.remote(_PartitionWriter).remote() for _ in range(min(workers, spec.num_parts))]


def _start_writers(tmp: Path, plan, graph, sim_g, crawl: Crawl, spec: PartitionSpec, actors: list | None,
                   node_refs: dict | None = None) -> Callable[[], list[dict]]:
    """Start building and writing every part (writer threads, or the given Ray actors); the returned
    function waits for them and gives each part's stats in part order. ``plan`` is the HaloPlan
    (or, on Ray, its object reference).

    With ``node_refs`` (each node type's read result in Ray's object store) the writers take features
    and labels from there: putting the graph's copies in again cost 2.5 GB and 1-2 s at 10M edges."""
    node_tasks: dict[str, list[str]] = {}
    for task in crawl.schema.tasks:
        if task.type != "link":
            node_tasks.setdefault(task.node_type, []).append(task.name)
    ctx = {
        "ntypes": list(graph.ntypes),
        "etypes": [tuple(c) for c in graph.canonical_etypes],
        "node_data": {t: {k: v.numpy() for k, v in graph.nodes[t].data.items()
                          if node_refs is None or not k.startswith(_FROM_READ)} for t in graph.ntypes},
        "node_refs": node_refs,
        "edge_data": {tuple(c): {k: v.numpy() for k, v in graph.edges[c].data.items()} for c in graph.canonical_etypes},
        "sim_ntype": sim_g.ndata[dgl.NTYPE].numpy(), "sim_nid": sim_g.ndata[dgl.NID].numpy(),
        "sim_etype": sim_g.edata[dgl.ETYPE].numpy(), "sim_eid": sim_g.edata[dgl.EID].numpy(),
        "node_tasks": node_tasks,
    }
    if spec.executor == "local":
        from concurrent.futures import ThreadPoolExecutor

        # torch, numpy and DGL's file writer release the GIL for the heavy parts.
        workers = spec.num_actors or max(1, min(spec.num_parts, os.cpu_count() or 1))
        writer = _PartitionWriter()
        pool = ThreadPoolExecutor(workers)
        futures = [pool.submit(writer.write, i, plan, str(tmp), ctx) for i in range(spec.num_parts)]

        def wait() -> list[dict]:
            try:
                return [f.result() for f in futures]
            finally:
                pool.shutdown(cancel_futures=True)

        return wait
    import ray

    ctx = ray.put(ctx)
    refs = [actors[i % len(actors)].write.remote(i, plan, str(tmp), ctx) for i in range(spec.num_parts)]
    return lambda: sorted(ray_get(refs), key=lambda s: s["part"])


def _part_config(graph, sim_g, node_parts, orig_nids_np: np.ndarray, orig_eids_np: np.ndarray, spec: PartitionSpec) -> dict:
    """DGL's partition config (what ``load_partition`` reads)."""
    parts_np = node_parts.numpy()
    node_ranges = _ranges(parts_np[orig_nids_np], sim_g.ndata[dgl.NTYPE].numpy()[orig_nids_np], spec.num_parts, len(graph.ntypes))
    dst = sim_g.edges()[1].numpy()
    edge_ranges = _ranges(parts_np[dst[orig_eids_np]], sim_g.edata[dgl.ETYPE].numpy()[orig_eids_np], spec.num_parts,
                          len(graph.canonical_etypes))
    metadata = {
        "graph_name": GRAPH_NAME, "num_nodes": graph.num_nodes(), "num_edges": graph.num_edges(),
        "part_method": spec.method, "num_parts": spec.num_parts, "halo_hops": spec.num_hops,
        "node_map": {t: node_ranges[i] for i, t in enumerate(graph.ntypes)},
        "edge_map": {":".join(c): edge_ranges[i] for i, c in enumerate(graph.canonical_etypes)},
        "ntypes": {t: i for i, t in enumerate(graph.ntypes)},
        "etypes": {":".join(c): i for i, c in enumerate(graph.canonical_etypes)},
    }
    for i in range(spec.num_parts):
        metadata[f"part-{i}"] = {"node_feats": f"part{i}/node_feat.dgl", "edge_feats": f"part{i}/edge_feat.dgl",
                                 "part_graph": f"part{i}/graph.dgl"}
    return metadata


def _write_id_maps(tmp: Path, crawl: Crawl, graph, sim_g, node_parts, orig_nids: np.ndarray) -> None:
    """Per node type: shuffled id (DGL's partition id space), contiguous type id, raw crawl id, partition."""
    import pyarrow.parquet as pq

    new_of_orig = np.empty(len(orig_nids), dtype=np.int64)
    new_of_orig[orig_nids] = np.arange(len(orig_nids))
    sim_ntype, sim_nid = sim_g.ndata[dgl.NTYPE].numpy(), sim_g.ndata[dgl.NID].numpy()
    (tmp / "id_map").mkdir()
    for t, name in enumerate(graph.ntypes):
        orig = np.flatnonzero(sim_ntype == t)
        order = np.argsort(sim_nid[orig])  # type-local id order
        orig = orig[order]
        table = pa.table({"shuffled_id": new_of_orig[orig], "type_id": sim_nid[orig], "raw_id": crawl.nodes[name].ids,
                          "part": node_parts.numpy()[orig]})
        pq.write_table(table, tmp / "id_map" / f"{name}.parquet")


def _write_link_splits(tmp: Path, crawl: Crawl, link_splits: dict[str, np.ndarray]) -> None:
    import pyarrow.parquet as pq

    if not link_splits:
        return
    (tmp / "link_splits").mkdir()
    for task in crawl.schema.tasks:
        if task.type == "link":
            table, split = crawl.edges[task.relation], link_splits[task.name]
            pq.write_table(pa.table({"src": table.src, "dst": table.dst, "split": split}), tmp / "link_splits" / f"{task.name}.parquet")


def _report(crawl, graph, sim_g, node_parts, stats, stages, spec) -> dict:
    parts_np = node_parts.numpy()
    src, dst = (x.numpy() for x in sim_g.edges())
    cut = int((parts_np[src] != parts_np[dst]).sum())
    inner = [sum(s["inner_nodes"].values()) for s in stats]
    halo = [sum(s["halo_nodes"].values()) for s in stats]
    edges = [s["inner_edges"] for s in stats]

    def balance(values):
        mean = float(np.mean(values)) if values else 0.0
        return {"per_part": values, "max_over_mean": round(max(values) / mean, 4) if mean else None}

    train = {task: balance([s["train_nodes"].get(task, 0) for s in stats]) for task in stats[0]["train_nodes"]} if stats else {}
    return {
        "num_parts": spec.num_parts, "method": spec.method, "num_hops": spec.num_hops, "executor": spec.executor,
        "num_nodes": int(sim_g.num_nodes()), "num_edges": int(sim_g.num_edges()),
        "edge_cut": cut, "edge_cut_fraction": round(cut / max(1, sim_g.num_edges()), 4),
        "nodes": balance(inner), "edges": balance(edges), "train_nodes": train,
        "halo_nodes": halo, "halo_replication": round((sum(inner) + sum(halo)) / max(1, sum(inner)), 4),
        "seconds": stages.seconds, "peak_rss_gb": {"driver": _peak_rss_gb(), "writers": [s["peak_rss_gb"] for s in stats]},
    }


def _manifest(crawl: Crawl, graph, spec: PartitionSpec, stats: list[dict], node_splits) -> dict:
    schema = crawl.schema
    features = {t: {name: {"kind": f.kind, "width": f.width, "categories": len(f.categories) + 1 if f.categories is not None else None}
                    for name, f in table.features.items()} for t, table in crawl.nodes.items()}
    tasks = []
    for task in schema.tasks:
        entry = task.model_dump(mode="json")
        if task.type != "link":
            labels = crawl.labels[task.name]
            train = node_splits[task.name] == TRAIN
            entry["counts"] = {n: int((node_splits[task.name] == i).sum()) for i, n in enumerate(SPLIT_NAMES)}
            if task.type == "regression":
                values = labels.values[train]
                entry["train_mean"] = float(values.mean()) if values.size else 0.0
                entry["train_std"] = float(values.std()) if values.size else 1.0
            if task.type in ("binary", "multilabel"):
                values = labels.values[train]
                entry["train_positive_rate"] = float(values.mean()) if values.size else 0.0
            if labels.classes is not None:
                entry["classes"] = [str(c) for c in labels.classes]
        tasks.append(entry)
    return {
        "format_version": FORMAT_VERSION, "graph_name": GRAPH_NAME, "part_config": f"{GRAPH_NAME}.json",
        "schema": schema.model_dump(mode="json"), "spec": asdict(spec), "ntypes": list(graph.ntypes),
        "etypes": [list(c) for c in graph.canonical_etypes], "features": features, "tasks": tasks,
        "edge_attributes": {":".join(c): sorted(graph.edges[c].data.keys()) for c in graph.canonical_etypes},
        "parts": stats,
    }
