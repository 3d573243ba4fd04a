"""Crawl tables -> typed DGL graph, and its homogeneous view.

Message passing needs both directions of every edge: a symmetric relation
stores each undirected edge once and gets both directions under its own name;
a directed relation ``r`` gets a reverse relation ``rev_r`` so that, e.g.,
a followed account hears from its followers and the follower from the
account. Node data keys: ``feat_<feature>``, ``label_<task>``,
``mask_<task>``; edge data keys: ``ts``, ``weight``.
"""

from __future__ import annotations

import numpy as np
import torch

from graviti_dist._dgl import dgl
from graviti_dist.crawl.tables import Crawl

REVERSE_PREFIX = "rev_"


def reverse_name(relation: str) -> str:
    return REVERSE_PREFIX + relation


def canonical_etypes(crawl: Crawl) -> list[tuple[str, str, str]]:
    """The graph's edge types in a fixed order: each relation, then its reverse if directed."""
    out = []
    for name, rel in crawl.schema.relations.items():
        out.append((rel.src, name, rel.dst))
        if not rel.symmetric:
            out.append((rel.dst, reverse_name(name), rel.src))
    return out


def _tensor(array: np.ndarray) -> torch.Tensor:
    """Zero-copy where possible; arrays from Ray's shared memory are read-only and get copied."""
    return torch.from_numpy(np.require(array, requirements=["C", "W"]))


def build_graph(crawl: Crawl) -> "dgl.DGLGraph":
    """A typed DGL graph with features, labels and label masks as node data."""
    data: dict[tuple[str, str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    edata: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    for name, rel in crawl.schema.relations.items():
        table = crawl.edges[name]
        src, dst = _tensor(table.src), _tensor(table.dst)
        attrs = {k: _tensor(v) for k, v in (("ts", table.ts), ("weight", table.weight)) if v is not None}
        if rel.symmetric:
            data[(rel.src, name, rel.dst)] = (torch.cat([src, dst]), torch.cat([dst, src]))
            edata[(rel.src, name, rel.dst)] = {k: torch.cat([v, v]) for k, v in attrs.items()}
        else:
            data[(rel.src, name, rel.dst)] = (src, dst)
            data[(rel.dst, reverse_name(name), rel.src)] = (dst, src)
            edata[(rel.src, name, rel.dst)] = attrs
            edata[(rel.dst, reverse_name(name), rel.src)] = attrs
    num_nodes = {t: len(table) for t, table in crawl.nodes.items()}
    graph = dgl.heterograph(data, num_nodes_dict=num_nodes, idtype=torch.int64)
    for etype, attrs in edata.items():
        for key, value in attrs.items():
            graph.edges[etype].data[key] = value
    for node_type, table in crawl.nodes.items():
        for fname, feature in table.features.items():
            graph.nodes[node_type].data[f"feat_{fname}"] = _tensor(feature.values)
    for task in crawl.schema.tasks:
        if task.type == "link":
            continue
        labels = crawl.labels[task.name]
        graph.nodes[task.node_type].data[f"label_{task.name}"] = _tensor(labels.values)
        graph.nodes[task.node_type].data[f"mask_{task.name}"] = _tensor(labels.mask)
    return graph


def to_homogeneous(graph: "dgl.DGLGraph") -> "dgl.DGLGraph":
    """Structure-only homogeneous view; ``ndata[dgl.NTYPE]``/``edata[dgl.ETYPE]`` keep the types.

    Feature widths differ by node type, so features stay on the typed graph.
    """
    return dgl.to_homogeneous(graph, ndata=[], edata=[])
