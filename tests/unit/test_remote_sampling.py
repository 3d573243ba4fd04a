"""Remote sampling over a 1-hop set equals local sampling over a full-halo set (stores in this process;
over Ray actors and on Twitch: tests/integration/test_remote_sampling.py)."""

import numpy as np
import pytest
import torch

from graviti_dist._dgl import dgl
from graviti_dist.partition import PartitionSet
from graviti_dist.sampling import NodeMinibatches, load_worker_partition
from graviti_dist.sampling.remote import GraphStore, LocalStore, NodeRanges, RemoteMinibatches
from tests.helpers import (assert_sampled_from, block_edges, crawl_edges, remote_minibatches, same_features,
                           shallow_and_full_sets)

FULL = 10**6  # a fanout above every in-degree: whole neighbourhoods


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    return shallow_and_full_sets(tmp_path_factory.mktemp("remote"), users=400, seed=2)


@pytest.mark.parametrize("part_id", [0, 2])
def test_full_neighbourhoods_build_the_same_blocks_and_rows(sets, part_id):
    shallow_dir, full_dir = sets
    full = load_worker_partition(full_dir, part_id)
    local = NodeMinibatches(full, [FULL, FULL], 10**9, "train", shuffle=False)
    remote = remote_minibatches(shallow_dir, part_id, [FULL, FULL])
    full_ids, shallow_ids = full.graph.ndata[dgl.NID], remote.part.graph.ndata[dgl.NID]
    assert torch.equal(full_ids[local.seeds], shallow_ids[remote.seeds])
    inputs, blocks = local.sample(local.seeds)
    remote_inputs, remote_blocks = remote.sample(remote.seeds)
    assert sorted(full_ids[inputs].tolist()) == sorted(remote_inputs.tolist())
    assert block_edges(blocks, full_ids[inputs]) == block_edges(remote_blocks, remote_inputs)
    sent = remote.requests
    assert sent == 2  # the seeds are local; their halo neighbours belong to the 2 other parts: one request each
    # The input rows this partition lacks came with the last hop's answers: no further request.
    same_features(local.features(inputs), full_ids[inputs], remote.features(remote_inputs), remote_inputs)
    assert remote.requests == sent
    # Nodes that did not come from the last sample() are asked for, with the same rows as an answer.
    same_features(local.features(inputs), full_ids[inputs], remote.features(remote_inputs.clone()), remote_inputs)
    assert remote.requests > sent


def test_a_training_step_gets_every_input_row_with_its_last_hop(sets):
    """Link pairs bring halo nodes among the seeds, whose sampled neighbours this partition may not
    hold: the stores send their rows with the last hop, so a step never needs a gather request."""
    shallow_dir, _ = sets
    gathered = []

    class Counting(LocalStore):
        def gather(self, nodes):
            gathered.append(len(nodes))
            return super().gather(nodes)

    stores = {p: Counting(GraphStore(str(shallow_dir), p)) for p in range(3)}
    remote = RemoteMinibatches(load_worker_partition(shallow_dir, 0), stores, NodeRanges.of(PartitionSet(shallow_dir)),
                               [3, 2], 64, "train", seed=0)
    steps = [remote.batch(seeds, links) for (seeds, links), _ in zip(remote.plan(), range(4))]
    assert all(step.links for step in steps) and remote.requests > 0
    assert gathered == []


def test_small_fanouts_sample_real_edges_min_of_fanout_and_degree(sets):
    shallow_dir, _ = sets
    remote = remote_minibatches(shallow_dir, 1, [3, 2])
    dgl.seed(0)
    inputs, blocks = remote.sample(remote.seeds[:64])
    assert_sampled_from(crawl_edges(shallow_dir, 3), inputs, blocks, (3, 2))


def test_a_store_refuses_nodes_it_does_not_own(sets):
    shallow_dir, _ = sets
    store = GraphStore(str(shallow_dir), 0)
    foreign = np.array([int(NodeRanges.of(PartitionSet(shallow_dir)).starts.max())])
    with pytest.raises(ValueError, match="does not own"):
        store.sample(foreign, 5)


def _read_only(value):
    """Mark every array read-only, as Ray's object store hands them over."""
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, (list, tuple)):
        for v in value:
            _read_only(v)
    elif isinstance(value, dict):
        for v in value.values():
            _read_only(v)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            _read_only(getattr(value, name))


def test_a_partition_rebuilt_from_shared_arrays_samples_and_gathers_alike(sets):
    """The one copy per node: a worker and its store rebuild the partition over the object store's
    read-only arrays; the rebuilt partition samples the same neighbourhoods and gathers the same
    rows, and copies nothing (DGL's multi-threaded sampler is not repeatable draw for draw, so the
    comparison takes whole neighbourhoods)."""
    from graviti_dist.sampling.worker_partition import from_arrays, partition_arrays

    shallow_dir, _ = sets
    part = load_worker_partition(shallow_dir, 1)
    arrays = partition_arrays(part)
    _read_only(arrays)
    rebuilt = from_arrays(arrays)
    assert rebuilt.graph.formats()["created"] == ["csc"]
    assert np.shares_memory(rebuilt.graph.ndata[dgl.NID].numpy(), part.graph.ndata[dgl.NID].numpy())
    assert all(np.shares_memory(a.numpy(), b.numpy()) for a, b in zip(rebuilt.dense, part.dense) if a is not None)
    results = []
    for p in (part, rebuilt):
        batches = NodeMinibatches(p, [FULL], 64, "train", shuffle=False)
        inputs, blocks = batches.sample(batches.seeds[:64])
        nid = p.graph.ndata[dgl.NID]
        results.append((block_edges(blocks, nid[inputs]), nid[inputs], batches.features(inputs)))
    assert results[0][0] == results[1][0] and len(results[0][0][0]) > 64
    same_features(results[0][2], results[0][1], results[1][2], results[1][1])
    inner = part.graph.ndata[dgl.NID][part.inner][:50].numpy()
    shared, private = GraphStore("", 1, rebuilt), GraphStore(str(shallow_dir), 1)
    answers = [sorted(zip(a.src.tolist(), a.dst.tolist(), a.etype.tolist()))
               for a in (shared.sample(inner, FULL), private.sample(inner, FULL))]
    assert answers[0] == answers[1] and answers[0]
