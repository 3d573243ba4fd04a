"""The synthetic crawl's labels need the graph: the GAT must clearly beat the features-only MLP.

Runs the real path on a small crawl: generate -> partition (Ray actors, DGL) -> load the
partition with halo features -> DGL sampling -> plain-torch model, in the per-worker
loop without Ray Train.
"""

import pytest
import torch

from graviti_dist.crawl.synthetic import SyntheticSpec
from graviti_dist.crawl.generate import generate_crawl
from graviti_dist.model import EncoderConfig
from graviti_dist.partition import PartitionSpec, partition_crawl
from graviti_dist.sampling import NodeMinibatches, load_worker_partition
from graviti_dist.train.loop import fit_local


@pytest.fixture(scope="module")
def one_partition(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("gat-mlp")
    generate_crawl(root / "crawl", SyntheticSpec(users=12000, seed=11), progress=False)
    partition_crawl(root / "crawl", root / "parts", PartitionSpec(num_parts=1, method="random"))
    return load_worker_partition(root / "parts", 0)


def test_link_pairs_join_the_seeds_with_typed_negatives(one_partition):
    batch = next(iter(NodeMinibatches(one_partition, [5, 5], 256, link_pairs=64, negatives=3)))
    pairs = batch.links["retweets"]
    assert pairs.src.shape == (64,) and pairs.neg.shape == (64, 3)
    user, post = one_partition.ntypes.index("user"), one_partition.ntypes.index("post")
    assert (batch.seed_type[pairs.src] == user).all() and (batch.seed_type[pairs.pos] == post).all()
    assert (batch.seed_type[pairs.neg] == post).all()
    _, mask = batch.labels["interest"]
    assert int(mask.sum()) <= 256  # link-pair nodes carry no node-task labels


def test_evaluation_ranks_a_steps_edges_against_shared_negatives(one_partition):
    """Each negative costs a sampled neighbourhood: an evaluation step's edges share theirs, the same
    every pass; training steps draw their own per edge."""
    batches = NodeMinibatches(one_partition, [5, 5], 256, split="val", shuffle=False, link_pairs=64, negatives=20)
    first, again = next(iter(batches)), next(iter(batches))
    pairs = first.links["retweets"]
    assert pairs.neg.shape == (64, 20) and (pairs.neg == pairs.neg[:1]).all()
    assert torch.equal(pairs.neg, again.links["retweets"].neg)
    assert first.blocks[-1].num_dst <= 256 + 2 * 64 + 20
    train = next(iter(NodeMinibatches(one_partition, [5, 5], 256, link_pairs=64, negatives=20))).links["retweets"]
    assert not (train.neg == train.neg[:1]).all()


def test_minibatches_mix_tasks_and_mask_unlabelled_seeds(one_partition):
    batches = NodeMinibatches(one_partition, [5, 5], 256, tasks=["interest", "influence", "is_bot", "is_rumor"])
    batch = next(iter(batches))
    assert batch.num_seeds == 256 and len(batch.blocks) == 2
    assert batch.blocks[-1].num_dst == 256 and batch.blocks[0].etype is not None
    users, posts = (batch.seed_type == 0).sum(), (batch.seed_type == 1).sum()
    assert users + posts == 256
    interest_type = one_partition.ntypes.index("user")
    target, mask = batch.labels["interest"]
    assert not mask[batch.seed_type != interest_type].any()  # a post never carries a user label
    for t, dense in batch.features.dense.items():
        assert abs(float(dense.mean())) < 0.5  # standardised, raw epoch timestamps would be ~1e9


def test_gat_clearly_beats_mlp_on_interest_and_is_bot(one_partition):
    torch.set_num_threads(2)
    results = {}
    for kind in ("gat", "mlp"):
        _, report = fit_local(one_partition, EncoderConfig(kind=kind, hidden=32, heads=4, layers=2),
                              epochs=6, fanouts=[10, 10], batch_size=512, seed=0)
        results[kind] = report["test"]
    gat, mlp = results["gat"], results["mlp"]
    assert gat["interest"]["accuracy"] > mlp["interest"]["accuracy"] + 0.2, results
    assert gat["is_bot"]["roc_auc"] > mlp["is_bot"]["roc_auc"] + 0.05, results
    assert gat["influence"]["rmse"] < mlp["influence"]["rmse"], results


def test_sampling_processes_give_the_planned_batches(one_partition):
    from graviti_dist.sampling import MinibatchStream

    def seed_sets(workers):
        batches = NodeMinibatches(one_partition, [5, 5], 512, seed=3)
        stream = MinibatchStream([batches], workers=workers)
        return [sorted(b.blocks[-1].num_dst for _ in [0]) + sorted(torch.unique(b.seed_type).tolist())
                + [int(b.labels["interest"][1].sum()), b.num_seeds] for b in stream.epoch(6)]

    # The plan (seeds, link pairs, negatives) is drawn in this process: 2 sampling processes
    # must deliver the same steps, in order, as sampling in-process.
    assert seed_sets(2) == seed_sets(0)


def test_dense_features_are_standardised_once_per_partition(one_partition):
    post = one_partition.ntypes.index("post")
    dense = one_partition.dense[post]
    assert dense.shape == (one_partition.tables[post]["label_is_rumor"].shape[0], one_partition.inputs[post].dense_width)
    assert not any(k in one_partition.tables[post] for k in one_partition.feature_keys[post]["dense"])  # no second copy
    torch.testing.assert_close(dense.mean(0), torch.zeros(dense.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(dense.std(0), torch.ones(dense.shape[1]), atol=1e-3, rtol=0)
    nodes = torch.arange(0, one_partition.graph.num_nodes(), 7)
    features = NodeMinibatches(one_partition, [5, 5], 256).features(nodes)
    rows = one_partition.row[nodes[features.positions[post]]]
    assert torch.equal(features.dense[post], dense[rows])
