"""The read stage of ``graviti partition`` on Ray: node types, then relations, as parallel tasks.

Kept apart from :mod:`graviti_dist.partition.build` on purpose: a Ray task's function is imported by
module in the worker, and this module needs only pyarrow (no torch, no DGL), so reader workers
start in a fraction of a second (see :mod:`graviti_dist.runtime.worker_setup`).
"""

from __future__ import annotations

from pathlib import Path

from graviti_dist.crawl import Crawl, Dedupe, LoadReport, load_edge_table, load_node_table, load_schema
from graviti_dist.runtime.memory import release_free_memory
from graviti_dist.runtime.ray_cluster import ray_get


def _decode_on_every_core() -> None:
    """Arrow sizes its decode pool from ``OMP_NUM_THREADS``, which Ray workers have set low (one
    thread: 5.4 s instead of 1.6 s for a 10M-edge crawl's largest node table on 2 cores). Reads are
    few and uneven (one table often dominates), so each may use every core; the OS shares them."""
    import os

    import pyarrow as pa

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if pa.cpu_count() < cores:
        pa.set_cpu_count(cores)


def _read_nodes(root: str, node_type: str, dedupe: str):
    _decode_on_every_core()
    report = LoadReport()
    table, labels = load_node_table(Path(root), load_schema(root), node_type, dedupe, report)
    release_free_memory()  # this worker lives on, holding the decode's freed pages otherwise
    return table, labels, report


def _read_edges(root: str, relation: str, nodes: dict, drop_dangling: bool):
    _decode_on_every_core()
    report = LoadReport()
    table = load_edge_table(Path(root), load_schema(root), relation, nodes, drop_dangling, report)
    release_free_memory()
    return table, report


def read_crawl_parallel(crawl_dir: Path, dedupe: Dedupe = "error", drop_dangling: bool = False) -> tuple[Crawl, dict]:
    """:func:`load_crawl`, with node types and then relations read as parallel Ray tasks.

    Also returns each node type's read result as it lies in the object store,
    ``(NodeTable, {task: TaskLabels}, LoadReport)`` by reference: writers can take features
    from there instead of a second copy. The crawl's arrays are read-only views of those objects.
    """
    import ray

    schema = load_schema(crawl_dir)
    report = LoadReport()
    read_nodes, read_edges = ray.remote(_read_nodes), ray.remote(_read_edges)
    node_refs = {t: read_nodes.remote(str(crawl_dir), t, dedupe) for t in schema.node_types}
    nodes, labels = {}, {}
    for node_type, ref in node_refs.items():
        nodes[node_type], node_labels, part_report = ray_get(ref)
        labels.update(node_labels)
        report.dropped_duplicate_nodes.update(part_report.dropped_duplicate_nodes)
    nodes_ref = ray.put(nodes)
    edge_refs = {r: read_edges.remote(str(crawl_dir), r, nodes_ref, drop_dangling) for r in schema.relations}
    edges = {}
    for relation, ref in edge_refs.items():
        edges[relation], part_report = ray_get(ref)
        for name in ("dropped_dangling_edges", "dropped_self_loops", "dropped_duplicate_edges"):
            getattr(report, name).update(getattr(part_report, name))
    return Crawl(schema, nodes, edges, labels, report), node_refs
