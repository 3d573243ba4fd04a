"""Edge inputs (each edge's age and weight) reach the model: written for inner and halo edges alike,
standardised over the whole set, carried by local, remote and layer-wise blocks, and used."""

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest
import torch

from graviti_dist._dgl import dgl
from graviti_dist.infer.layerwise import PartitionInference
from graviti_dist.infer.explain import EdgeTimes
from graviti_dist.model import EncoderConfig
from graviti_dist.partition import PartitionSet, PartitionSpec, partition_crawl, read_manifest
from graviti_dist.sampling import NodeMinibatches, load_worker_partition
from graviti_dist.sampling.remote import GraphStore
from graviti_dist.train.loop import build_model, fit_local
from tests.helpers import as_if_written, block_edge_inputs, remote_minibatches, shallow_and_full_sets, write_crawl

FULL = 10**6  # a fanout above every in-degree: whole neighbourhoods
DAY = 86_400


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    return shallow_and_full_sets(tmp_path_factory.mktemp("edge-inputs"), users=300, seed=4)


def _keyed(part) -> dict[tuple[int, int, int], list[tuple[float, ...]]]:
    """Every local edge's inputs by (src, dst, relation) in shuffled ids, (parallel edges sorted)."""
    nid, (src, dst) = part.graph.ndata[dgl.NID], part.graph.edges()
    out = defaultdict(list)
    for s, d, t, x in zip(nid[src].tolist(), nid[dst].tolist(), part.graph.edata[dgl.ETYPE].tolist(),
                          part.edge_inputs.tolist()):
        out[(s, d, t)].append(tuple(round(v, 5) for v in x))
    return {k: sorted(v) for k, v in out.items()}


def test_inner_edges_carry_their_standardised_age_and_halo_edges_their_owners_values(sets):
    _, full_dir = sets
    manifest = read_manifest(full_dir)
    info = manifest.edge_inputs
    assert info.columns == ["age"] and info.latest_ts is not None  # the synthetic crawl's edges have ts, no weight
    parts = [load_worker_partition(full_dir, p) for p in range(3)]
    inner_ages = []
    for part in parts:
        inner = part.inner[part.graph.edges()[1]]  # an edge is inner where its destination is
        times = EdgeTimes(part).ts  # DGL's own edge data: inner edges' raw ts
        has_ts = inner.numpy() & ~np.isnan(times)
        expected = (np.log1p(info.latest_ts - times[has_ts]) - info.mean[0]) / info.std[0]
        np.testing.assert_allclose(part.edge_inputs[has_ts, 0].numpy(), expected, rtol=1e-4, atol=1e-4)
        assert (part.edge_inputs[inner.numpy() & np.isnan(times)] == 0).all()  # follows, authored: no ts
        inner_ages.append(expected)
        assert (~inner).sum() > 0 and part.edge_inputs.shape[0] == part.graph.num_edges()
    ages = np.concatenate(inner_ages)  # each edge is some partition's inner edge exactly once
    assert abs(ages.mean()) < 1e-3 and abs(ages.std(ddof=1) - 1) < 1e-3
    # A halo edge is another partition's inner edge: the same (src, dst, relation), the same inputs.
    keyed, inner_keys = [_keyed(part) for part in parts], [_inner_keys(part) for part in parts]
    of_owner = {key: values for by_key, inner in zip(keyed, inner_keys) for key, values in by_key.items() if key in inner}
    halo_edges = 0
    for by_key, inner in zip(keyed, inner_keys):
        for key, values in by_key.items():
            assert values == of_owner[key], key
            halo_edges += key not in inner
    assert halo_edges > 100


def _inner_keys(part) -> set:
    nid, (src, dst) = part.graph.ndata[dgl.NID], part.graph.edges()
    inner = part.inner[dst]
    return set(zip(nid[src[inner]].tolist(), nid[dst[inner]].tolist(), part.graph.edata[dgl.ETYPE][inner].tolist()))


def test_local_remote_and_layerwise_blocks_carry_each_edges_inputs(sets):
    shallow_dir, full_dir = sets
    full = load_worker_partition(full_dir, 1)
    by_key = _keyed(full)
    local = NodeMinibatches(full, [FULL, FULL], 10**9, "train", shuffle=False)
    inputs, blocks = local.sample(local.seeds)
    full_ids = full.graph.ndata[dgl.NID]
    expected = block_edge_inputs(blocks, full_ids[inputs])
    for layer in expected:
        rows = defaultdict(list)
        for s, d, t, x in layer:
            rows[(s, d, t)].append(x)
        assert all(sorted(v) == by_key[k] for k, v in rows.items())  # whole neighbourhoods: every parallel edge
    assert any(x != (0.0,) for layer in expected for *_, x in layer)
    remote = remote_minibatches(shallow_dir, 1, [FULL, FULL])
    remote_inputs, remote_blocks = remote.sample(remote.seeds)
    assert block_edge_inputs(remote_blocks, remote_inputs) == expected  # the outer hop's edges came from other stores
    # Layer-wise inference's full neighbourhood blocks: the same edges as a full-fanout sample.
    model = build_model(full, EncoderConfig(hidden=8, heads=2, layers=1))
    dst = local.seeds[:50]
    layer_inputs, block = PartitionInference(full, model).block(dst)
    sampled_inputs, (sampled,) = NodeMinibatches(full, [FULL], 10**9, "train", shuffle=False).sample(dst)
    assert block_edge_inputs([block], full_ids[layer_inputs]) == block_edge_inputs([sampled], full_ids[sampled_inputs])


def test_a_partition_loaded_for_a_model_without_edge_inputs_samples_none(sets):
    _, full_dir = sets
    with_inputs, without = load_worker_partition(full_dir, 0), load_worker_partition(full_dir, 0, edge_inputs=False)
    assert with_inputs.edge_inputs is not None and without.edge_inputs is None
    for part, expect in ((with_inputs, True), (without, False)):
        batches = NodeMinibatches(part, [5, 5], 64, "train", shuffle=False)
        _, blocks = batches.sample(batches.seeds[:64])
        assert all((b.efeat is not None) == expect for b in blocks)


def test_remote_sampling_for_a_model_without_edge_inputs_neither_sends_nor_builds_them(sets):
    shallow_dir, _ = sets
    store = GraphStore(str(shallow_dir), 2, edge_inputs=False)
    owned = store.part.graph.ndata[dgl.NID][store.part.inner][:20].numpy()
    assert store.sample(owned, 5).efeat is None  # nothing gathered or sent per sampled edge
    assert GraphStore(str(shallow_dir), 2).sample(owned, 5).efeat is not None
    remote = remote_minibatches(shallow_dir, 1, [FULL, FULL], edge_inputs=False)
    inputs, blocks = remote.sample(remote.seeds)
    assert remote.requests > 0 and all(b.efeat is None for b in blocks)
    # A worker whose model reads edge inputs, served by stores loaded without them: said, not a shape error.
    mismatched = remote_minibatches(shallow_dir, 1, [FULL, FULL], stores_edge_inputs=False)
    with pytest.raises(ValueError, match="same edge_inputs"):
        mismatched.sample(mismatched.seeds)


def _temporal_crawl(root, users: int = 1200, in_edges: int = 6, seed: int = 0):
    """Users whose features are noise and whose label says only whether their in-edges are recent
    (made within the last day) or old (2 to 13 months back): the label is in the edges' time alone."""
    rng = np.random.default_rng(seed)
    latest = 1_700_000_000
    recent = rng.random(users) < 0.5
    dst = np.repeat(np.arange(users), in_edges)
    src = (dst + rng.integers(1, users, dst.size)) % users  # never a self-loop
    age = np.where(recent[dst], rng.uniform(0, DAY, dst.size), rng.uniform(60 * DAY, 400 * DAY, dst.size))
    ids = [f"u{i}" for i in range(users)]
    schema = {
        "name": "temporal",
        "node_types": {"user": {"features": [{"name": "x", "kind": "vector", "width": 4}], "labels": ["recent"]}},
        "relations": {"mentions": {"src": "user", "dst": "user", "attributes": ["ts", "weight"]}},
        "tasks": [{"name": "recent", "type": "binary", "node_type": "user", "label": "recent"}],
    }
    nodes = pa.table({"id": ids, "x": pa.array(list(rng.normal(size=(users, 4)).astype(np.float32)), pa.list_(pa.float32())),
                      "recent": recent})
    edges = pa.table({"src": [ids[i] for i in src], "dst": [ids[i] for i in dst],
                      "ts": pa.array((latest - age).astype(np.int64)), "weight": rng.random(dst.size).astype(np.float32)})
    return write_crawl(root, schema, {"user": [nodes]}, {"mentions": [edges]})


def test_a_label_in_edge_time_alone_is_learnt_with_edge_inputs_and_not_without(tmp_path):
    torch.set_num_threads(2)
    crawl = _temporal_crawl(tmp_path / "crawl")
    partition_crawl(crawl, tmp_path / "parts", PartitionSpec(num_parts=1, num_hops=1, method="random", executor="local"))
    part = load_worker_partition(tmp_path / "parts", 0)
    assert part.manifest.edge_inputs.columns == ["age", "weight"]
    auc = {}
    for edge_inputs in (True, False):
        encoder = EncoderConfig(hidden=16, heads=2, layers=1, edge_inputs=edge_inputs)
        model, report = fit_local(part, encoder, epochs=8, fanouts=[10], batch_size=128, seed=0)
        assert (model.encoder.layers[0].edge_msg is not None) == edge_inputs
        auc[edge_inputs] = report["test"]["recent"]["roc_auc"]
    assert auc[True] > 0.9 and auc[False] < 0.65, auc


def test_the_checker_recomputes_every_local_edges_inputs_from_the_crawl(sets, tmp_path):
    import shutil

    from graviti_dist.errors import GravitiError
    from graviti_dist.partition import check_partitions

    _, full_dir = sets
    assert check_partitions(full_dir)["parts"] == 3
    broken = tmp_path / "broken"
    shutil.copytree(full_dir, broken)
    path = PartitionSet(broken).part_graph(2)
    (graph,), _ = dgl.load_graphs(str(path))
    halo_with_ts = torch.nonzero(~graph.edata["inner_edge"].bool() & (graph.edata["edge_inputs"][:, 0] != 0)).squeeze(1)
    graph.edata["edge_inputs"][halo_with_ts[0], 0] += 0.5  # one halo edge a little older than it is
    dgl.save_graphs(str(path), [graph], formats=["csc"])
    as_if_written(broken)
    with pytest.raises(GravitiError, match="some halo edges' inputs are not the crawl's"):
        check_partitions(broken)
