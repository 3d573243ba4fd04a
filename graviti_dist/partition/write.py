"""The write stage of ``graviti partition``: each part built from the halo plan and written in
DGL's format, plus the set's own files (DGL's partition config, id maps, link splits).

Writers run as threads of this process or as Ray actors; either way one writer builds the
parts it writes, so no process holds every part at once.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import psutil
import pyarrow as pa
import torch

from graviti_dist._dgl import dgl
from graviti_dist.crawl import Crawl
from graviti_dist.partition.graph import node_arrays
from graviti_dist.partition.halo import HaloPlan
from graviti_dist.partition.layout import EDGE_INPUTS, GRAPH_NAME, HALO_FEATS, NODE_FEATS, PartitionSet, PartStats, part_files
from graviti_dist.runtime.ray_cluster import ray_get

# Node data keys that come straight from the read (see graph.node_arrays); the rest (split masks) the driver makes.
_FROM_READ = ("feat_", "label_", "mask_")


@dataclass
class WriterContext:
    """What every writer needs beside the plan: the typed graph's data and the homogeneous
    graph's type columns, as numpy arrays (shared without copies through Ray's object store)."""

    ntypes: list[str]
    etypes: list[tuple[str, str, str]]
    node_data: dict[str, dict[str, np.ndarray]]  # node type -> key -> rows in type-id order
    edge_data: dict[tuple[str, str, str], dict[str, np.ndarray]]
    sim_ntype: np.ndarray  # homogeneous node -> type, type-local id
    sim_nid: np.ndarray
    sim_etype: np.ndarray  # homogeneous edge -> type, type-local id
    sim_eid: np.ndarray
    node_tasks: dict[str, list[str]]  # node type -> its node tasks
    # per node type: the read's (NodeTable, labels, report) in Ray's object store; node_data then
    # holds only the driver's split masks and the writer takes features and labels from there
    node_refs: dict | None = None

    @classmethod
    def of(cls, graph, sim_g, crawl: Crawl, node_refs: dict | None = None) -> "WriterContext":
        node_tasks: dict[str, list[str]] = {}
        for task in crawl.schema.tasks:
            if not task.is_link:
                node_tasks.setdefault(task.node_type, []).append(task.name)
        return cls(
            ntypes=list(graph.ntypes), etypes=[tuple(c) for c in graph.canonical_etypes],
            node_data={t: {k: v.numpy() for k, v in graph.nodes[t].data.items()
                           if node_refs is None or not k.startswith(_FROM_READ)} for t in graph.ntypes},
            edge_data={tuple(c): {k: v.numpy() for k, v in graph.edges[c].data.items()} for c in graph.canonical_etypes},
            sim_ntype=sim_g.ndata[dgl.NTYPE].numpy(), sim_nid=sim_g.ndata[dgl.NID].numpy(),
            sim_etype=sim_g.edata[dgl.ETYPE].numpy(), sim_eid=sim_g.edata[dgl.EID].numpy(),
            node_tasks=node_tasks, node_refs=node_refs)

    def with_read_node_data(self) -> "WriterContext":
        """This context with features and labels fetched from the read's objects (on a Ray writer)."""
        if self.node_refs is None:
            return self
        import ray  # only Ray writers get here; the local executor never pays for importing Ray

        data = {}
        for node_type, extra in self.node_data.items():
            table, labels, _ = ray.get(self.node_refs[node_type])
            data[node_type] = {**node_arrays(table, labels), **extra}
        return WriterContext(**{**self.__dict__, "node_data": data, "node_refs": None})


@dataclass
class _PartFrame:
    """A built part with its per-node and per-edge type columns."""

    graph: "dgl.DGLGraph"
    ntype: torch.Tensor
    etype: torch.Tensor
    type_nid: torch.Tensor
    type_eid: torch.Tensor
    inner: torch.Tensor = field(init=False)
    inner_edge: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.inner = self.graph.ndata["inner_node"].bool()
        self.inner_edge = self.graph.edata["inner_edge"].bool()


class PartitionWriter:
    """Builds the files of the partitions it is given (DGL format + halo features)."""

    def __init__(self):
        # Threads sharing one writer save graphs one at a time: DGL's save builds a CSC copy of the
        # part first, the largest transient of the write (two at once: +0.6 GB at 10M edges).
        self._graph_lock = threading.Lock()

    def write(self, part_id: int, plan: HaloPlan, out_dir: str, ctx: WriterContext) -> PartStats:
        ctx = ctx.with_read_node_data()
        frame = self._frame(plan.build(part_id), ctx)
        folder = PartitionSet(out_dir).part_dir(part_id)
        folder.mkdir(parents=True, exist_ok=True)
        counts = self._write_node_data(frame, ctx, folder)
        self._write_edge_data(frame, ctx, PartitionSet(out_dir).edge_feats(part_id))
        with self._graph_lock:
            # DGL's own pre-save step (field dtypes, CSC sorted by edge type) keeps load_partition's checks happy.
            dgl.distributed.partition._save_graphs(str(PartitionSet(out_dir).part_graph(part_id)), [frame.graph],
                                                   formats=["csc"], sort_etypes=len(ctx.etypes) > 1)
        return PartStats(part=part_id, **counts, inner_edges=int(frame.inner_edge.sum()),
                         local_edges=int(frame.graph.num_edges()),
                         peak_rss_gb=round(psutil.Process().memory_info().rss / 2**30, 3))

    @staticmethod
    def _frame(part, ctx: WriterContext) -> _PartFrame:
        orig = part.ndata.pop("orig_id").numpy()
        orig_e = part.edata.pop("orig_id").numpy()
        # Fancy indexing copies out of Ray's read-only shared memory.
        ntype, etype = torch.from_numpy(ctx.sim_ntype[orig]), torch.from_numpy(ctx.sim_etype[orig_e])
        part.ndata[dgl.NTYPE], part.edata[dgl.ETYPE] = ntype, etype
        type_eid = ctx.sim_eid[orig_e]
        inputs = [ctx.edge_data.get(c, {}).get(EDGE_INPUTS) for c in ctx.etypes]
        if all(columns is not None for columns in inputs):
            part.edata[EDGE_INPUTS] = _local_edge_inputs(inputs, etype.numpy(), type_eid)
        return _PartFrame(part, ntype, etype, torch.from_numpy(ctx.sim_nid[orig]), torch.from_numpy(type_eid))

    @staticmethod
    def _write_node_data(frame: _PartFrame, ctx: WriterContext, folder: Path) -> dict:
        counts = {"inner_nodes": {}, "halo_nodes": {}, "train_nodes": {}}
        # One file's tensors at a time: two writer threads each holding a part's inner, halo and
        # edge features together added 1.5 GB to the peak at 10M edges.
        for is_inner, filename in ((True, NODE_FEATS), (False, HALO_FEATS)):
            tensors = {}
            for t, name in enumerate(ctx.ntypes):
                local = torch.nonzero((frame.inner == is_inner) & (frame.ntype == t)).squeeze(1)
                local = local[torch.argsort(frame.graph.ndata[dgl.NID][local])]  # feature rows in shuffled-id order
                ids = frame.type_nid[local].numpy()
                for key, values in ctx.node_data[name].items():
                    tensors[f"{name}/{key}"] = torch.from_numpy(np.ascontiguousarray(values[ids]))
                if not is_inner:
                    tensors[f"{name}/_local_id"] = local
                counts["inner_nodes" if is_inner else "halo_nodes"][name] = int(local.numel())
                if is_inner:
                    for task in ctx.node_tasks.get(name, []):
                        counts["train_nodes"][task] = int(tensors[f"{name}/train_{task}"].sum())
            dgl.data.utils.save_tensors(str(folder / filename), tensors)
            del tensors
        return counts

    @staticmethod
    def _write_edge_data(frame: _PartFrame, ctx: WriterContext, path: Path) -> None:
        edge_feats = {}
        for e, canonical in enumerate(ctx.etypes):
            local = torch.nonzero(frame.inner_edge & (frame.etype == e)).squeeze(1)
            local = local[torch.argsort(frame.graph.edata[dgl.EID][local])]
            ids = frame.type_eid[local].numpy()
            for key, values in ctx.edge_data.get(canonical, {}).items():
                if key == EDGE_INPUTS:  # every local edge's, in the part's graph
                    continue
                edge_feats[":".join(canonical) + "/" + key] = torch.from_numpy(np.ascontiguousarray(values[ids]))
        dgl.data.utils.save_tensors(str(path), edge_feats)


def _local_edge_inputs(inputs: list[np.ndarray], etype: np.ndarray, type_eid: np.ndarray) -> torch.Tensor:
    """The edge inputs of a part's local edges, inner and halo, in local edge order."""
    out = np.empty((len(etype), inputs[0].shape[1]), np.float32)
    for e, columns in enumerate(inputs):
        local = np.flatnonzero(etype == e)
        out[local] = columns[type_eid[local]]
    return torch.from_numpy(out)


def writer_actors(num_parts: int, num_actors: int | None) -> list:
    """One Ray writer actor per group of partitions: ``num_actors``, else one per part up to the CPUs."""
    import ray  # here, not at the top: the local executor must not pay ~1 s for importing Ray

    workers = num_actors or max(1, min(num_parts, int(ray.available_resources().get("CPU", 1))))
    return [ray.remote(PartitionWriter).remote() for _ in range(min(workers, num_parts))]


def start_writers(tmp: Path, plan, ctx: WriterContext, num_parts: int, actors: list | None,
                  num_threads: int | None = None) -> Callable[[], list[PartStats]]:
    """Start building and writing every part (writer threads, or the given Ray actors); the returned
    function waits for them and gives each part's stats in part order. ``plan`` is the HaloPlan
    (or, on Ray, its object reference)."""
    if actors is None:
        # torch, numpy and DGL's file writer release the GIL for the heavy parts.
        workers = num_threads or max(1, min(num_parts, os.cpu_count() or 1))
        writer = PartitionWriter()
        pool = ThreadPoolExecutor(workers)
        futures = [pool.submit(writer.write, i, plan, str(tmp), ctx) for i in range(num_parts)]

        def wait() -> list[PartStats]:
            try:
                return [f.result() for f in futures]
            finally:
                pool.shutdown(cancel_futures=True)

        return wait
    import ray

    ctx_ref = ray.put(ctx)
    refs = [actors[i % len(actors)].write.remote(i, plan, str(tmp), ctx_ref) for i in range(num_parts)]
    return lambda: sorted(ray_get(refs), key=lambda s: s.part)


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


def part_config(graph, sim_g, node_parts, plan: HaloPlan, method: str, num_hops: int) -> dict:
    """DGL's partition config (what ``load_partition`` reads)."""
    parts_np, num_parts = node_parts.numpy(), plan.num_parts
    node_ranges = _ranges(parts_np[plan.orig_nids], sim_g.ndata[dgl.NTYPE].numpy()[plan.orig_nids], num_parts,
                          len(graph.ntypes))
    dst = sim_g.edges()[1].numpy()
    edge_ranges = _ranges(parts_np[dst[plan.orig_eids]], sim_g.edata[dgl.ETYPE].numpy()[plan.orig_eids], num_parts,
                          len(graph.canonical_etypes))
    metadata = {
        "graph_name": GRAPH_NAME, "num_nodes": graph.num_nodes(), "num_edges": graph.num_edges(),
        "part_method": method, "num_parts": num_parts, "halo_hops": num_hops,
        "node_map": {t: node_ranges[i] for i, t in enumerate(graph.ntypes)},
        "edge_map": {":".join(c): edge_ranges[i] for i, c in enumerate(graph.canonical_etypes)},
        "ntypes": {t: i for i, t in enumerate(graph.ntypes)},
        "etypes": {":".join(c): i for i, c in enumerate(graph.canonical_etypes)},
    }
    for i in range(num_parts):
        metadata[f"part-{i}"] = part_files(i)
    return metadata


def write_id_maps(parts: PartitionSet, crawl: Crawl, graph, sim_g, node_parts, orig_nids: np.ndarray) -> None:
    """Per node type: shuffled id (DGL's partition id space), contiguous type id, raw crawl id, partition."""
    new_of_orig = np.empty(len(orig_nids), dtype=np.int64)
    new_of_orig[orig_nids] = np.arange(len(orig_nids))
    sim_ntype, sim_nid = sim_g.ndata[dgl.NTYPE].numpy(), sim_g.ndata[dgl.NID].numpy()
    for t, name in enumerate(graph.ntypes):
        orig = np.flatnonzero(sim_ntype == t)
        orig = orig[np.argsort(sim_nid[orig])]  # type-local id order
        parts.write_id_map(name, pa.table({"shuffled_id": new_of_orig[orig], "type_id": sim_nid[orig],
                                           "raw_id": crawl.nodes[name].ids, "part": node_parts.numpy()[orig]}))


def write_link_splits(parts: PartitionSet, crawl: Crawl, link_splits: dict[str, np.ndarray]) -> None:
    for task in crawl.schema.tasks:
        if task.is_link:
            table, split = crawl.edges[task.relation], link_splits[task.name]
            parts.write_link_split(task.name, pa.table({"src": table.src, "dst": table.dst, "split": split}))
