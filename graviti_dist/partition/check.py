"""``graviti partition --check``: verify a partition set against its crawl.

Checks that each node is owned by exactly one partition; every message-passing
edge of the crawl is an inner edge of exactly one partition; node features,
labels, masks and splits (inner and halo) equal the crawl's through the id map;
edge attributes likewise, and every local edge's inputs (age, weight; halo
edges too); and halos are complete to the declared depth: every node within
``halo_hops - 1`` in-hops of an inner node has all its in-edges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from graviti_dist._dgl import dgl
from graviti_dist.crawl import Crawl, load_crawl
from graviti_dist.errors import GravitiError
from graviti_dist.partition.graph import attach_edge_inputs, build_graph
from graviti_dist.partition.layout import EDGE_INPUTS, PartitionSet
from graviti_dist.partition.splits import make_splits, message_passing_crawl, split_masks


def _message_passing_graph(crawl: Crawl, parts: PartitionSet):
    link_splits = {}
    for task in crawl.schema.tasks:
        if task.is_link:
            split = parts.read_link_split(task.name)["split"].to_numpy()
            if len(split) != len(crawl.edges[task.relation]):
                raise GravitiError(f"{parts.link_split_path(task.name)}: link split of task {task.name!r} has {len(split)} rows, "
                                   f"the crawl {len(crawl.edges[task.relation])} edges")
            link_splits[task.name] = split
    return build_graph(message_passing_crawl(crawl, link_splits))


def _check_claims(manifest, metadata: dict, parts: PartitionSet) -> None:
    """The manifest's claims against DGL's config and the folders: an edited manifest that no
    longer describes the files is refused before anything is compared."""
    on_disk = sorted(p.name for p in parts.root.glob("part*") if p.is_dir() and p.name[4:].isdigit())
    claims = [("num_parts", manifest.num_parts, metadata.get("num_parts")),
              ("num_parts", manifest.num_parts, len(on_disk)),
              ("num_hops", manifest.num_hops, metadata.get("halo_hops")),
              ("ntypes", sorted(manifest.ntypes), sorted(metadata.get("ntypes", {})))]
    wrong = [f"{name} is {claimed!r} in {parts.manifest_path.name} but {found!r} in "
             f"{parts.part_config.name if i != 1 else 'the part folders'}"
             for i, (name, claimed, found) in enumerate(claims) if claimed != found]
    if wrong:
        raise GravitiError(f"{parts.manifest_path}: does not describe the set: " + "; ".join(wrong)
                           + "; re-partition the crawl (graviti partition CRAWL --out SET --overwrite)")


def _feature_widths(part_id: int, manifest, node_feats: dict) -> list[str]:
    """Numeric and vector features: the manifest's width against the part's stored columns."""
    problems = []
    for node_type, features in manifest.features.items():
        for name, info in features.items():
            stored = node_feats.get(f"{node_type}/feat_{name}")
            if info.kind not in ("numeric", "vector") or stored is None:
                continue
            width = stored.reshape(stored.shape[0], -1).shape[1] if stored.dim() > 1 else 1
            if width != info.width:
                problems.append(f"part {part_id}: feature {node_type}/{name} is {width} wide, the manifest says {info.width}")
    return problems


def check_partitions(part_dir: str | Path, crawl_dir: str | Path | None = None) -> dict:
    """Verify ``part_dir``; returns a summary, raises GravitiError listing every failed check."""
    part_dir = Path(part_dir)
    parts = PartitionSet(part_dir)
    manifest = parts.read_manifest()
    parts.verify_files(manifest, checksums=True)  # every file whole and as written, before DGL reads one
    metadata = parts.read_part_config()
    _check_claims(manifest, metadata, parts)
    crawl_dir = Path(crawl_dir or manifest.crawl)
    config = parts.part_config
    crawl = load_crawl(crawl_dir)
    graph = _message_passing_graph(crawl, parts)
    spec = manifest.spec
    node_splits, _ = make_splits(crawl, spec.split, spec.seed, spec.split_by)  # deterministic: recomputed from the spec
    for task in crawl.schema.tasks:
        if not task.is_link:
            for key, mask in split_masks({task.name: node_splits[task.name]}).items():
                graph.nodes[task.node_type].data[key] = torch.from_numpy(mask)
    ntypes, etypes = manifest.ntypes, [tuple(e) for e in manifest.etypes]
    hops, num_parts = metadata["halo_hops"], metadata["num_parts"]
    type_of_shuffled = np.empty(metadata["num_nodes"], dtype=np.int64)
    tid_of_shuffled = np.empty(metadata["num_nodes"], dtype=np.int64)
    for t, name in enumerate(ntypes):
        id_map = parts.read_id_map(name)
        shuffled = id_map["shuffled_id"].to_numpy()
        type_of_shuffled[shuffled], tid_of_shuffled[shuffled] = t, id_map["type_id"].to_numpy()
        if id_map["raw_id"].to_pylist() != crawl.nodes[name].ids.to_pylist():
            raise GravitiError(f"{parts.id_map_path(name)}: raw ids differ from the crawl's {crawl_dir}")
    problems: list[str] = []
    owners = np.zeros(metadata["num_nodes"], dtype=np.int64)
    edge_owners = np.zeros(metadata["num_edges"], dtype=np.int64)
    global_in = np.zeros(metadata["num_nodes"], dtype=np.int64)
    loaded = []
    got_pairs: dict[tuple, list[np.ndarray]] = {e: [] for e in etypes}
    for i in range(num_parts):
        part, node_feats, edge_feats, gpb, *_ = dgl.distributed.load_partition(str(config), i)
        loaded.append(part)
        nid, inner = part.ndata[dgl.NID].numpy(), part.ndata["inner_node"].numpy().astype(bool)
        np.add.at(owners, nid[inner], 1)
        if not (gpb.nid2partid(torch.from_numpy(nid[inner])).numpy() == i).all():
            problems.append(f"part {i}: inner nodes outside its node_map range")
        inner_edge = part.edata["inner_edge"].numpy().astype(bool)
        np.add.at(edge_owners, part.edata[dgl.EID].numpy()[inner_edge], 1)
        src, dst = (x.numpy() for x in part.edges())
        np.add.at(global_in, nid[dst[inner_edge]], 1)
        etype = part.edata[dgl.ETYPE].numpy()
        eid = part.edata[dgl.EID].numpy()
        for e, canonical in enumerate(etypes):
            local = np.flatnonzero(inner_edge & (etype == e))
            local = local[np.argsort(eid[local])]  # the order edge_feat.dgl rows are in
            columns = [tid_of_shuffled[nid[src[local]]], tid_of_shuffled[nid[dst[local]]]]
            for key in sorted(graph.edges[canonical].data.keys()):
                values = edge_feats.get(f"{':'.join(canonical)}/{key}")
                if values is None or len(values) != len(local):
                    problems.append(f"part {i}: edge attribute {':'.join(canonical)}/{key} missing or of the wrong length")
                    values = torch.zeros(len(local))
                columns.append(values.numpy().astype(np.float64))
            got_pairs[canonical].append(np.stack(columns))
        problems += _feature_widths(i, manifest, node_feats)
        halo_feats = dgl.data.utils.load_tensors(str(parts.halo_feats(i)))
        for t, name in enumerate(ntypes):
            for is_inner, feats in ((True, node_feats), (False, halo_feats)):
                local = np.flatnonzero((inner == is_inner) & (part.ndata[dgl.NTYPE].numpy() == t))
                local = local[np.argsort(nid[local])]
                type_ids = tid_of_shuffled[nid[local]]
                for key, expected in graph.nodes[name].data.items():
                    got = feats.get(f"{name}/{key}")
                    if got is None or not torch.equal(got, expected[torch.from_numpy(type_ids)]):
                        problems.append(f"part {i}: {'inner' if is_inner else 'halo'} node data {name}/{key} differs from the crawl")
    if not (owners == 1).all():
        problems.append(f"{int((owners != 1).sum())} nodes are not owned by exactly one partition")
    if not (edge_owners == 1).all():
        problems.append(f"{int((edge_owners != 1).sum())} edges are not inner edges of exactly one partition")
    for canonical in etypes:
        keys = sorted(graph.edges[canonical].data.keys())
        got = np.concatenate(got_pairs[canonical], axis=1)
        want = np.stack([x.numpy().astype(np.float64) for x in graph.edges(etype=canonical)]
                        + [graph.edges[canonical].data[k].numpy().astype(np.float64) for k in keys])
        if not _same_multiset(got, want):
            problems.append(f"edges {':'.join(canonical)}: the partitions' inner edges (with {keys}) differ from the crawl's")
    problems += _edge_input_problems(manifest, graph, loaded, tid_of_shuffled, etypes)
    for i, part in enumerate(loaded):
        problems += _check_halo(i, part, global_in, hops)
    if problems:
        raise GravitiError(f"{part_dir}: partition check failed:\n  " + "\n  ".join(problems[:20]))
    return {"parts": num_parts, "nodes": int(metadata["num_nodes"]), "edges": int(metadata["num_edges"]), "halo_hops": hops,
            "checked": ["ownership", "edges", "node data", "edge data", "halo"]}


def _edge_input_problems(manifest, graph, loaded: list, tid_of_shuffled: np.ndarray, etypes: list) -> list[str]:
    """Every local edge's inputs (inner and halo) against the ones recomputed from the crawl: inner
    edges as a multiset per relation, halo edges each an edge of the crawl with the same inputs."""
    if manifest.edge_inputs is None:
        return []
    recomputed = attach_edge_inputs(graph, EDGE_INPUTS)
    expected = {c: graph.edges[c].data.pop(EDGE_INPUTS).numpy().astype(np.float64) for c in etypes}
    if recomputed is None or recomputed.columns != manifest.edge_inputs.columns or \
            recomputed.latest_ts != manifest.edge_inputs.latest_ts:
        return [f"edge inputs: the manifest's {manifest.edge_inputs.columns} (latest ts {manifest.edge_inputs.latest_ts}) "
                f"are not the crawl's"]
    problems = []
    for e, canonical in enumerate(etypes):
        want = np.vstack([np.stack([x.numpy() for x in graph.edges(etype=canonical)]).astype(np.float64), expected[canonical].T])
        inner_rows, halo_rows = [], []
        for i, part in enumerate(loaded):
            if EDGE_INPUTS not in part.edata:
                return [f"part {i}: no edge inputs in its graph"]
            nid, (src, dst) = part.ndata[dgl.NID].numpy(), (x.numpy() for x in part.edges())
            local = np.flatnonzero(part.edata[dgl.ETYPE].numpy() == e)
            rows = np.vstack([tid_of_shuffled[nid[src[local]]], tid_of_shuffled[nid[dst[local]]],
                              part.edata[EDGE_INPUTS].numpy()[local].astype(np.float64).T])
            inner = part.edata["inner_edge"].numpy().astype(bool)[local]
            inner_rows.append(rows[:, inner])
            halo_rows.append(rows[:, ~inner])
        name = ":".join(canonical)
        if not _same_multiset(np.concatenate(inner_rows, axis=1), want):
            problems.append(f"edges {name}: the partitions' inner edge inputs differ from the crawl's")
        halo = np.concatenate(halo_rows, axis=1)
        if halo.shape[1] and not pd.MultiIndex.from_arrays(list(halo)).isin(pd.MultiIndex.from_arrays(list(want))).all():
            problems.append(f"edges {name}: some halo edges' inputs are not the crawl's")
    return problems


def _same_multiset(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    order_a, order_b = np.lexsort(a), np.lexsort(b)
    return bool((a[:, order_a] == b[:, order_b]).all())


def _check_halo(i: int, part, global_in: np.ndarray, hops: int) -> list[str]:
    nid = part.ndata[dgl.NID].numpy()
    src, dst = (x.numpy() for x in part.edges())
    local_in = np.bincount(dst, minlength=part.num_nodes())
    frontier = np.flatnonzero(part.ndata["inner_node"].numpy().astype(bool))
    seen = np.zeros(part.num_nodes(), dtype=bool)
    seen[frontier] = True
    for hop in range(hops):
        missing = frontier[local_in[frontier] != global_in[nid[frontier]]]
        if missing.size:
            return [f"part {i}: {missing.size} nodes at hop {hop} lack some of their in-edges (halo incomplete)"]
        if hop == hops - 1:
            break
        in_frontier = np.zeros(part.num_nodes(), dtype=bool)
        in_frontier[frontier] = True
        nxt = np.unique(src[in_frontier[dst]])
        frontier = nxt[~seen[nxt]]
        seen[frontier] = True
    return []
