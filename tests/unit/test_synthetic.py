"""The synthetic generator: valid, deterministic, heavy-tailed, labelled as configured (Ray-parallel rows and
bounded memory: tests/integration/test_generate.py)."""

from pathlib import Path

import numpy as np
import pytest

from graviti_dist.cli import main
from graviti_dist.crawl.load import load_crawl
from graviti_dist.crawl.synthetic import BLOCK_USERS, SyntheticSpec
from graviti_dist.crawl.generate import generate_crawl
from tests.helpers import crawl_content

USERS = 3 * BLOCK_USERS + 500  # several blocks, the last one partial


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "crawl"
    generate_crawl(out, SyntheticSpec(users=USERS, seed=3), shard_rows=50_000)
    return out


def test_generated_crawl_is_valid_with_every_endpoint_present(synthetic):
    crawl = load_crawl(synthetic)  # fails on any dangling endpoint
    assert set(crawl.schema.relations) == {"follows", "authored", "retweets", "replies", "mentions"}
    assert {t.type for t in crawl.schema.tasks} == {"multiclass", "regression", "binary", "link"}
    assert len(crawl.nodes["user"]) == USERS
    assert crawl.nodes["user"].features["profile"].values.shape == (USERS, 32)
    assert crawl.nodes["post"].features["text"].values.shape[1] == 64
    assert crawl.edges["retweets"].ts is not None and crawl.edges["replies"].ts is not None
    assert len(crawl.edges["follows"]) > 10 * USERS


def test_same_content_whatever_the_shard_size(synthetic, tmp_path):
    other = tmp_path / "crawl"
    generate_crawl(other, SyntheticSpec(users=USERS, seed=3), shard_rows=7_777)
    assert len(list((other / "edges" / "follows").glob("*.parquet"))) > len(list((synthetic / "edges" / "follows").glob("*.parquet")))
    a, b = crawl_content(synthetic), crawl_content(other)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].equals(b[name]), name


def test_another_seed_gives_another_graph(synthetic, tmp_path):
    other = tmp_path / "crawl"
    generate_crawl(other, SyntheticSpec(users=USERS, seed=4), shard_rows=50_000)
    assert not crawl_content(synthetic)["follows"].equals(crawl_content(other)["follows"])


def test_degrees_are_heavy_tailed(synthetic):
    follows = load_crawl(synthetic).edges["follows"]
    for degrees in (np.bincount(follows.dst, minlength=USERS), np.bincount(follows.src, minlength=USERS)):
        assert degrees.max() > 10 * degrees.mean()
        # Complementary CDF on log-log axes: a power-law-like tail has a steady negative slope.
        ks = np.unique(np.logspace(np.log10(max(2, np.median(degrees))), np.log10(degrees.max() / 2), 12).astype(int))
        ccdf = np.array([(degrees >= k).mean() for k in ks])
        slope = np.polyfit(np.log(ks), np.log(ccdf), 1)[0]
        assert -4.0 < slope < -0.8, slope


def test_communities_and_reciprocity(synthetic):
    crawl = load_crawl(synthetic)
    follows = crawl.edges["follows"]
    pairs = set(zip(follows.src.tolist(), follows.dst.tolist()))
    reciprocal = sum((d, s) in pairs for s, d in pairs) / len(pairs)
    assert 0.1 < reciprocal < 0.6
    interest = crawl.labels["interest"]
    labelled = interest.mask[follows.src] & interest.mask[follows.dst]
    same = (interest.values[follows.src] == interest.values[follows.dst])[labelled].mean()
    assert same > 0.6  # most edges stay inside a community (chance would be ~1/8)


def test_label_missing_rates_match_the_spec(synthetic):
    crawl = load_crawl(synthetic)
    spec = SyntheticSpec(users=USERS)
    for task, rate in spec.missing.items():
        mask = crawl.labels[task].mask
        tolerance = 4 * np.sqrt(rate * (1 - rate) / mask.size)
        assert abs((1 - mask.mean()) - rate) < tolerance, task


def test_bots_follow_many_and_are_followed_little(synthetic):
    crawl = load_crawl(synthetic)
    follows, bot = crawl.edges["follows"], crawl.labels["is_bot"]
    out_deg, in_deg = np.bincount(follows.src, minlength=USERS), np.bincount(follows.dst, minlength=USERS)
    is_bot = bot.mask & (bot.values == 1)
    human = bot.mask & (bot.values == 0)
    assert out_deg[is_bot].mean() > 1.5 * out_deg[human].mean()
    assert in_deg[is_bot].mean() < 0.5 * in_deg[human].mean()


def test_cli_bad_arguments(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "x"), "--users", "5"]) == 2
    assert "users must be at least 16" in capsys.readouterr().err
    assert main(["generate", "--out", str(tmp_path / "x"), "--users", "100", "--shard-rows", "0"]) == 2
    assert "--shard-rows" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
