import numpy as np
import torch

from graviti_dist._dgl import dgl
from graviti_dist.crawl.load import load_crawl
from graviti_dist.partition.graph import build_graph, to_homogeneous


def test_typed_graph_has_both_directions_and_data(small_crawl):
    crawl = load_crawl(small_crawl)
    g = build_graph(crawl)
    assert set(g.canonical_etypes) == {
        ("user", "follows", "user"), ("user", "rev_follows", "user"),
        ("user", "authored", "post"), ("post", "rev_authored", "user"),
    }
    src, dst = g.edges(etype="rev_follows")
    fsrc, fdst = g.edges(etype="follows")
    assert torch.equal(src, fdst) and torch.equal(dst, fsrc)
    assert g.edges["rev_authored"].data["ts"].tolist() == [10, 20, 30]
    assert g.nodes["user"].data["feat_x"].shape == (4, 2)
    assert g.nodes["user"].data["mask_bot"].tolist() == [True, False, True, True]
    assert g.nodes["user"].data["label_topic"].dtype == torch.int64


def test_symmetric_relation_and_homogeneous_view(twitch_crawl):
    g = build_graph(load_crawl(twitch_crawl))
    assert g.canonical_etypes == [("user", "friends", "user")]
    assert g.num_edges() == 2 * 66623
    hg = to_homogeneous(g)
    assert hg.num_nodes() == 9038 and dgl.ETYPE in hg.edata and dgl.NTYPE in hg.ndata


def test_read_only_features_are_shared_only_when_asked(small_crawl):
    # What a Ray read leaves: arrays in the object store, read-only.
    crawl = load_crawl(small_crawl)
    for table in crawl.nodes.values():
        for feature in table.features.values():
            feature.values.flags.writeable = False
    for label in crawl.labels.values():
        label.values.flags.writeable = False
    source = crawl.nodes["user"].features["x"].values
    shared = build_graph(crawl, share_read_only=True)
    assert np.shares_memory(shared.nodes["user"].data["feat_x"].numpy(), source)
    # labels are small and copied either way; features are copied unless asked
    assert not np.shares_memory(shared.nodes["user"].data["label_topic"].numpy(), crawl.labels["topic"].values)
    copied = build_graph(crawl)
    assert not np.shares_memory(copied.nodes["user"].data["feat_x"].numpy(), source)
    assert torch.equal(copied.nodes["user"].data["feat_x"], shared.nodes["user"].data["feat_x"])
