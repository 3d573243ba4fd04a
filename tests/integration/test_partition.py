"""graviti partition: DGL-loadable partitions, a verifier that catches corruption, atomicity and bad input."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from graviti_dist._dgl import dgl
from graviti_dist.cli import main
from graviti_dist.crawl.synthetic import SyntheticSpec
from graviti_dist.errors import GravitiError
from graviti_dist.crawl.generate import generate_crawl
from graviti_dist.partition import PartitionSpec, partition_crawl, resolve_executor
from graviti_dist.partition.check import check_partitions
from tests.helpers import as_if_written, small_schema, small_tables, write_crawl


@pytest.fixture(scope="module")
def synthetic_crawl(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "crawl"
    generate_crawl(out, SyntheticSpec(users=1500, seed=1), progress=False)
    return out


@pytest.fixture(scope="module")
def twitch_parts(tmp_path_factory, twitch_crawl, ray_local):
    out = tmp_path_factory.mktemp("parts") / "twitch"
    report = partition_crawl(twitch_crawl, out, PartitionSpec(num_parts=2))
    return out, report


def _no_leftovers(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_twitch_partitions_load_in_dgl_and_pass_the_check(twitch_parts):
    out, report = twitch_parts
    assert report["num_nodes"] == 9038 and report["num_edges"] == 2 * 66623
    assert report["nodes"]["max_over_mean"] <= 1.1 and report["edges"]["max_over_mean"] <= 1.1
    assert 0 < report["edge_cut_fraction"] < 0.5
    assert set(report["seconds"]) == {"read", "split", "assign", "halo", "write"}
    assert report["executor"] == "ray"  # auto: Ray is up in this process, so the parts come from its actors
    owned = 0
    for i in range(2):
        graph, node_feats, edge_feats, gpb, name, ntypes, etypes = dgl.distributed.load_partition(str(out / "graph.json"), i)
        inner = graph.ndata["inner_node"].bool()
        owned += int(inner.sum())
        assert node_feats["user/feat_features"].shape[0] == int(inner.sum())
        assert {"user/train_mature", "user/val_mature", "user/test_mature", "user/label_views"} <= set(node_feats)
    assert owned == 9038
    assert check_partitions(out)["parts"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    views = next(t for t in manifest["tasks"] if t["name"] == "views")
    # split by node: one draw per user, so the count is binomial (sd = sqrt(9038 * 0.8 * 0.2) = 38)
    assert views["counts"]["train"] == pytest.approx(0.8 * 9038, abs=3 * 38) and views["train_std"] > 0
    days = next(t for t in manifest["tasks"] if t["name"] == "days")
    assert days["counts"] == views["counts"]  # every Twitch user has both labels, hence the same split


def test_train_nodes_are_balanced_too(twitch_parts):
    _, report = twitch_parts
    for task, balance in report["train_nodes"].items():
        assert balance["max_over_mean"] <= 1.1, task


def test_check_catches_corrupted_features_and_id_maps(twitch_parts, tmp_path):
    import shutil

    out, _ = twitch_parts
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    feats_path = broken / "part1" / "node_feat.dgl"
    feats = dgl.data.utils.load_tensors(str(feats_path))
    feats["user/label_days"] = feats["user/label_days"] + 1
    dgl.data.utils.save_tensors(str(feats_path), feats)
    with pytest.raises(GravitiError, match="node_feat.dgl: its content differs from the manifest's SHA-256"):
        check_partitions(broken)
    as_if_written(broken)
    with pytest.raises(GravitiError, match="part 1: inner node data user/label_days differs"):
        check_partitions(broken)
    shutil.copytree(out / "part1", broken / "part1", dirs_exist_ok=True)
    halo_path = broken / "part0" / "halo_feat.dgl"
    halo = dgl.data.utils.load_tensors(str(halo_path))
    halo["user/feat_features"] = torch.flip(halo["user/feat_features"], [0])
    dgl.data.utils.save_tensors(str(halo_path), halo)
    as_if_written(broken)
    with pytest.raises(GravitiError, match="halo node data user/feat_features differs"):
        check_partitions(broken)


def test_check_catches_an_incomplete_halo(twitch_parts, tmp_path):
    import shutil

    out, _ = twitch_parts
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    config = json.loads((broken / "graph.json").read_text())
    config["halo_hops"] = 3  # claims a deeper halo than was built
    (broken / "graph.json").write_text(json.dumps(config))
    with pytest.raises(GravitiError, match=r"graph.json: .*the manifest"):  # its size or its checksum
        check_partitions(broken)
    as_if_written(broken)
    with pytest.raises(GravitiError, match="num_hops is 2 in manifest.json but 3 in graph.json"):
        check_partitions(broken)
    as_if_written(broken, num_hops=3)
    with pytest.raises(GravitiError, match="lack some of their in-edges"):
        check_partitions(broken)


def test_synthetic_link_split_and_typed_graph(synthetic_crawl, tmp_path, ray_local):
    out = tmp_path / "parts"
    report = partition_crawl(synthetic_crawl, out, PartitionSpec(num_parts=3, method="random", seed=5))
    check_partitions(out)
    split = pq.read_table(out / "link_splits" / "retweets.parquet")["split"].to_numpy()
    config = json.loads((out / "graph.json").read_text())
    inner_retweets = sum(end - start for start, end in config["edge_map"]["user:retweets:post"])
    assert inner_retweets == int((split == 0).sum()) < len(split)  # val/test edges left the message-passing graph
    assert report["nodes"]["max_over_mean"] < 1.01  # random assignment is balanced by construction
    id_map = pq.read_table(out / "id_map" / "post.parquet")
    assert id_map.num_rows == len(set(id_map["shuffled_id"].to_pylist()))


def test_same_arguments_same_partitions_with_either_executor(synthetic_crawl, tmp_path, ray_local):
    # The executors differ in how they read and write, not in how they assign: a seeded random
    # assignment pins the parts, so what is compared is every byte the executors produce. With METIS
    # the CI run of 00bea6f once put 7 post:mentions:user edges in the other part (not reproduced
    # in 14 runs since): the METIS call is the driver's either way, so that was not the executors.
    a, b = tmp_path / "a", tmp_path / "b"
    for out, executor in ((a, "ray"), (b, "local")):
        partition_crawl(synthetic_crawl, out, PartitionSpec(num_parts=2, executor=executor, method="random"))
    assert check_partitions(b)["parts"] == 2
    assert json.loads((a / "graph.json").read_text()) == json.loads((b / "graph.json").read_text())
    for name in ("user", "post"):
        assert pq.read_table(a / "id_map" / f"{name}.parquet").equals(pq.read_table(b / "id_map" / f"{name}.parquet"))
    for i in range(2):
        fa = dgl.data.utils.load_tensors(str(a / f"part{i}" / "node_feat.dgl"))
        fb = dgl.data.utils.load_tensors(str(b / f"part{i}" / "node_feat.dgl"))
        assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
        ga, gb = (dgl.load_graphs(str(d / f"part{i}" / "graph.dgl"))[0][0] for d in (a, b))
        assert all(torch.equal(x, y) for x, y in zip(ga.edges(), gb.edges()))


def test_auto_executor_uses_ray_only_where_there_is_a_cluster(monkeypatch, ray_local):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_executor("local", None) == "local" and resolve_executor("ray", None) == "ray"
    assert resolve_executor("auto", None) == "ray"  # Ray already initialised here (the session's local Ray)
    assert resolve_executor("auto", "10.0.0.1:6379") == "ray"
    code = "from graviti_dist.partition import resolve_executor as r; print(r('auto', None))"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert alone.stdout.strip() == "local", alone.stderr  # one machine, no cluster: this process
    in_a_job = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**env, "RAY_ADDRESS": "127.0.0.1:6379"}, timeout=120)
    assert in_a_job.stdout.strip() == "ray", in_a_job.stderr  # what `ray job submit` sets for its driver


def test_four_metis_parts_of_twitch_stay_balanced(twitch_crawl, tmp_path):
    # DGL's own class-based weights left these parts 1.5-1.8x unbalanced: nearly every Twitch user
    # trains some task, and the handful that train none formed a constraint METIS could not meet.
    report = partition_crawl(twitch_crawl, tmp_path / "parts", PartitionSpec(num_parts=4, executor="local"))
    assert report["nodes"]["max_over_mean"] <= 1.05 and report["edges"]["max_over_mean"] <= 1.05
    for task, balance in report["train_nodes"].items():
        assert balance["max_over_mean"] <= 1.05, task


def test_existing_output_refused_unless_overwrite(synthetic_crawl, tmp_path, ray_local):
    out = tmp_path / "parts"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(GravitiError, match="already exists"):
        partition_crawl(synthetic_crawl, out, PartitionSpec(num_parts=2))
    assert (out / "keep.txt").read_text() == "mine"
    partition_crawl(synthetic_crawl, out, PartitionSpec(num_parts=2), overwrite=True)
    assert (out / "manifest.json").exists() and not (out / "keep.txt").exists()


def test_invalid_crawl_leaves_nothing(tmp_path, ray_local):
    nodes, edges = small_tables()
    edges["follows"] = [pa.table({"src": ["a", "ghost"], "dst": ["b", "a"]})]
    crawl = write_crawl(tmp_path / "crawl", small_schema(), nodes, edges)
    out = tmp_path / "parts"
    with pytest.raises(GravitiError) as err:
        partition_crawl(crawl, out, PartitionSpec(num_parts=2))
    assert "src='ghost'" in str(err.value) and "Traceback" not in str(err.value)
    _no_leftovers(out)


def test_more_parts_than_nodes_and_empty_crawl(tmp_path, ray_local, capsys):
    nodes, edges = small_tables()
    crawl = write_crawl(tmp_path / "crawl", small_schema(), nodes, edges)
    # The library names the field; the CLI the flag.
    with pytest.raises(GravitiError, match="^num_parts 50 is more than the crawl's 7 nodes"):
        partition_crawl(crawl, tmp_path / "p1", PartitionSpec(num_parts=50))
    assert main(["partition", str(crawl), "--out", str(tmp_path / "p1"), "--num-parts", "50"]) == 2
    assert "--num-parts 50 is more than the crawl's 7 nodes" in capsys.readouterr().err
    empty_nodes = {t: [tables[0].slice(0, 0)] for t, tables in nodes.items()}
    empty_edges = {r: [tables[0].slice(0, 0)] for r, tables in edges.items()}
    empty = write_crawl(tmp_path / "empty", small_schema(), empty_nodes, empty_edges)
    with pytest.raises(GravitiError, match="no nodes"):
        partition_crawl(empty, tmp_path / "p2", PartitionSpec(num_parts=2))
    _no_leftovers(tmp_path / "p1")
    _no_leftovers(tmp_path / "p2")


def test_cli_bad_arguments_and_unreachable_ray(tmp_path, capsys, synthetic_crawl):
    assert main(["partition", str(synthetic_crawl), "--out", str(tmp_path / "p"), "--num-parts", "0"]) == 2
    assert "--num-parts must be at least 1" in capsys.readouterr().err
    assert main(["partition", str(synthetic_crawl), "--out", str(tmp_path / "p"), "--num-parts", "2", "--split", "0.5,0.5,0.5"]) == 2
    assert "split fractions" in capsys.readouterr().err
    assert main(["partition", "--check", str(tmp_path / "nothing")]) == 2
    assert "not a finished partition set" in capsys.readouterr().err
    result = subprocess.run([sys.executable, "-m", "graviti_dist.cli", "partition", str(synthetic_crawl), "--out",
                             str(tmp_path / "p"), "--num-parts", "2", "--address", "127.0.0.1:1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "could not reach Ray at '127.0.0.1:1'" in result.stderr
    _no_leftovers(tmp_path / "p")


def test_metis_partitions_a_graph_with_parallel_edges(datasets, tmp_path):
    """The NBA follow graph has 33,140 edges over 21,242 distinct pairs; DGL's symmetrisation
    corrupted the heap on it (the process aborted). METIS now gets a simple symmetric graph."""
    from graviti_dist.crawl.importers import import_nba

    import_nba(datasets / "nba", tmp_path / "crawl")
    report = partition_crawl(tmp_path / "crawl", tmp_path / "parts", PartitionSpec(num_parts=2, executor="local"))
    assert report["nodes"]["max_over_mean"] < 1.05 and 0 < report["edge_cut_fraction"] < 0.5  # METIS, not random (50%)
    assert check_partitions(tmp_path / "parts")["parts"] == 2
