"""halo.plan_halo + HaloPlan.build give the parts DGL's partition_graph_with_halo gives (up to halo node order)."""

import contextlib
import io

import numpy as np
import pytest
import torch

from graviti_dist._dgl import dgl
from graviti_dist.partition.halo import plan_halo


def partition_with_halo(g, node_part, num_hops, num_parts=None):
    """DGL's partition_graph_with_halo contract, from our plan: (parts, orig_nids, orig_eids)."""
    plan = plan_halo(g, node_part, num_hops, num_parts)
    parts = {i: plan.build(i) for i in range(plan.num_parts)}
    return parts, torch.from_numpy(plan.orig_nids), torch.from_numpy(plan.orig_eids)


def _typed_random_graph(num_nodes: int, num_edges: int, seed: int):
    """A homogeneous graph as ``dgl.to_homogeneous`` makes it: two node types, three edge types, hubs."""
    rng = np.random.default_rng(seed)
    # Skewed endpoints, so that a few hubs pull most of the graph into every halo, as social graphs do.
    src = (rng.pareto(1.5, num_edges) * 7).astype(np.int64) % num_nodes
    dst = rng.integers(0, num_nodes, num_edges)
    g = dgl.graph((torch.from_numpy(src), torch.from_numpy(dst)), num_nodes=num_nodes)
    ntype = torch.from_numpy(rng.integers(0, 2, num_nodes))
    g.ndata[dgl.NTYPE], g.ndata[dgl.NID] = ntype, torch.arange(num_nodes)
    g.edata[dgl.ETYPE], g.edata[dgl.EID] = torch.from_numpy(rng.integers(0, 3, num_edges)), torch.arange(num_edges)
    return g


def _dgl_parts(g, node_part, num_hops):
    with contextlib.redirect_stdout(io.StringIO()):
        return dgl.partition_graph_with_halo(g, node_part, num_hops, reshuffle=True)


def _by_shuffled_id(part):
    order = torch.argsort(part.ndata[dgl.NID])
    return {key: part.ndata[key][order].long() for key in (dgl.NID, "inner_node", "part_id", "orig_id")}


@pytest.mark.parametrize("num_parts,num_hops", [(2, 1), (3, 2), (4, 3)])
def test_same_parts_as_dgl(num_parts, num_hops):
    g = _typed_random_graph(600, 4000, seed=num_parts)
    node_part = torch.from_numpy(np.random.default_rng(num_hops).integers(0, num_parts, g.num_nodes()))
    ours, orig_nids, orig_eids = partition_with_halo(g, node_part, num_hops)
    theirs, dgl_nids, dgl_eids = _dgl_parts(g, node_part.clone(), num_hops)
    assert torch.equal(orig_nids, dgl_nids) and torch.equal(orig_eids, dgl_eids)
    assert sorted(ours) == sorted(theirs) == list(range(num_parts))
    for i in range(num_parts):
        a, b = ours[i], theirs[i]
        nodes_a, nodes_b = _by_shuffled_id(a), _by_shuffled_id(b)
        for key in nodes_a:
            assert torch.equal(nodes_a[key], nodes_b[key]), f"part {i}: node {key} differs"
        # Edges: the same ids in the same order (inner first), with the same endpoints and flags.
        for key in (dgl.EID, "inner_edge", "orig_id"):
            assert torch.equal(a.edata[key].long(), b.edata[key].long()), f"part {i}: edge {key} differs"
        (sa, da), (sb, db) = a.edges(), b.edges()
        nid_a, nid_b = a.ndata[dgl.NID], b.ndata[dgl.NID]
        assert torch.equal(nid_a[sa], nid_b[sb]) and torch.equal(nid_a[da], nid_b[db])
        inner = int(a.ndata["inner_node"].sum())
        assert bool(a.ndata["inner_node"][:inner].all()), "inner nodes come first"
        assert torch.equal(a.ndata[dgl.NID][inner:], torch.sort(a.ndata[dgl.NID][inner:]).values), "halo in id order"
    # Hubs make the halo real: with more hops a part holds more of the graph.
    assert ours[0].num_nodes() > int(ours[0].ndata["inner_node"].sum())


def test_a_part_without_nodes_comes_out_empty():
    g = _typed_random_graph(50, 200, seed=7)
    node_part = torch.from_numpy(np.random.default_rng(0).integers(0, 2, g.num_nodes()))
    node_part[node_part == 1] = 2  # part 1 gets nothing; DGL's own split crashes on this
    parts, _, _ = partition_with_halo(g, node_part, 2, num_parts=3)
    assert parts[1].num_nodes() == 0 and parts[1].num_edges() == 0
    assert int(parts[0].ndata["inner_node"].sum()) + int(parts[2].ndata["inner_node"].sum()) == 50
    assert int(parts[0].edata["inner_edge"].sum()) + int(parts[2].edata["inner_edge"].sum()) == 200


def test_num_hops_below_one_is_refused():
    g = _typed_random_graph(10, 20, seed=0)
    with pytest.raises(ValueError, match="num_hops"):
        partition_with_halo(g, torch.zeros(10, dtype=torch.int64), 0)
