"""Loading and validating crawls, including every bad-input case of the crawl format."""

import numpy as np
import pyarrow as pa

from graviti_dist.cli import main
from graviti_dist.crawl.load import load_crawl
from tests.helpers import broken_crawl as _broken, inspect_fails as _inspect_fails, write_crawl


def test_small_crawl_loads_with_contiguous_ids(small_crawl):
    crawl = load_crawl(small_crawl)
    assert crawl.nodes["user"].ids.to_pylist() == ["a", "b", "c", "d"]
    follows = crawl.edges["follows"]
    assert follows.src.tolist() == [0, 1, 2, 0] and follows.dst.tolist() == [1, 2, 0, 2]
    assert crawl.edges["authored"].ts.tolist() == [10, 20, 30]
    x = crawl.nodes["user"].features["x"]
    assert x.values.shape == (4, 2) and x.values[3].tolist() == [0.0, 0.0]
    region = crawl.nodes["user"].features["region"]
    assert region.categories == ["eu", "us"] and region.values.tolist() == [0, 1, 0, 2] and region.missing == 1
    assert crawl.nodes["post"].features["age"].missing == 1


def test_missing_labels_are_masked_not_errors(small_crawl):
    crawl = load_crawl(small_crawl)
    bot = crawl.labels["bot"]
    assert bot.mask.tolist() == [True, False, True, True]
    assert bot.values[bot.mask].tolist() == [1.0, 0.0, 0.0]
    topic = crawl.labels["topic"]
    assert topic.classes == ["music", "sport"]
    assert topic.mask.tolist() == [True, True, False, True]
    assert topic.values[topic.mask].tolist() == [1, 0, 1]


def test_missing_column(tmp_path, capsys):
    crawl = _broken(tmp_path, nodes_edit=lambda n: n.update(user=[n["user"][0].drop_columns(["region"])]))
    err = _inspect_fails(crawl, capsys)
    assert "nodes/user/part-00000.parquet" in err and "missing column 'region'" in err


def test_wrong_column_type(tmp_path, capsys):
    bad_posts = pa.table({"id": ["p1", "p2", "p3"], "age": ["old", "new", "old"]})
    crawl = _broken(tmp_path, nodes_edit=lambda n: n.update(post=[bad_posts]))
    err = _inspect_fails(crawl, capsys)
    assert "nodes/post/part-00000.parquet" in err and "column 'age' has type string" in err


def test_unknown_node_type_in_schema(tmp_path, capsys):
    crawl = _broken(tmp_path, schema_edit=lambda s: s["relations"]["follows"].update(dst="account"))
    err = _inspect_fails(crawl, capsys)
    assert "graph.yaml" in err and "unknown node type 'account'" in err


def test_empty_folder(tmp_path, capsys):
    crawl = _broken(tmp_path, edges_edit=lambda e: e.update(follows=[]))
    (crawl / "edges" / "follows").mkdir(exist_ok=True)
    err = _inspect_fails(crawl, capsys)
    assert "edges/follows" in err and "no .parquet files" in err


def test_truncated_parquet(tmp_path, capsys):
    crawl = _broken(tmp_path)
    shard = crawl / "edges" / "follows" / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:40])
    err = _inspect_fails(crawl, capsys)
    assert str(shard) in err and "unreadable Parquet" in err


def test_duplicate_node_ids_named_and_dedupe_first(tmp_path, capsys):
    extra = pa.table({"id": ["c", "e"], "x": pa.array([[9.0, 9.0], [7.0, 7.0]], pa.list_(pa.float32())),
                      "region": ["us", "us"], "bot": [True, True], "topic": ["x", "y"]})
    crawl = _broken(tmp_path, nodes_edit=lambda n: n["user"].append(extra))
    err = _inspect_fails(crawl, capsys)
    assert "duplicated id" in err and "'c'" in err and "--dedupe first" in err
    loaded = load_crawl(crawl, dedupe="first")
    assert loaded.nodes["user"].ids.to_pylist() == ["a", "b", "c", "d", "e"]
    assert loaded.nodes["user"].features["x"].values[2].tolist() == [5.0, 6.0]  # first row of 'c' kept
    assert loaded.report.dropped_duplicate_nodes == {"user": 1}
    assert main(["inspect", str(crawl), "--dedupe", "first", "--no-graph"]) == 0
    assert "duplicate_nodes: user 1" in capsys.readouterr().out


def test_dangling_edges_error_and_drop(tmp_path, capsys):
    bad = pa.table({"src": ["a", "zed", "b"], "dst": ["b", "a", "nobody"]})
    crawl = _broken(tmp_path, edges_edit=lambda e: e.update(follows=[bad]))
    err = _inspect_fails(crawl, capsys)
    assert "2 of 3 edges of relation 'follows'" in err and "src='zed'" in err and "--drop-dangling" in err
    loaded = load_crawl(crawl, drop_dangling=True)
    assert len(loaded.edges["follows"]) == 1
    assert loaded.report.dropped_dangling_edges == {"follows": 2}


def test_id_kind_mismatch(tmp_path, capsys):
    bad = pa.table({"src": [1, 2], "dst": [2, 3]})
    crawl = _broken(tmp_path, edges_edit=lambda e: e.update(follows=[bad]))
    err = _inspect_fails(crawl, capsys)
    assert "integer ids but node type 'user' has string ids" in err


def test_bad_binary_label_values(tmp_path, capsys):
    def edit(n):
        n["user"] = [n["user"][0].set_column(3, "bot", pa.array([0, 1, 3, None]))]
    crawl = _broken(tmp_path, nodes_edit=edit)
    err = _inspect_fails(crawl, capsys)
    assert "label column 'bot'" in err and "[3.0]" in err


def test_self_loops_and_duplicate_edges_reported_kept_or_dropped(tmp_path, capsys):
    loops = pa.table({"src": ["a", "a", "a", "b"], "dst": ["a", "b", "b", "b"]})
    crawl = _broken(tmp_path, edges_edit=lambda e: e.update(follows=[loops]))
    kept = load_crawl(crawl)
    assert len(kept.edges["follows"]) == 4
    assert kept.edges["follows"].self_loops == 2 and kept.edges["follows"].duplicates == 1
    assert main(["inspect", str(crawl), "--no-graph"]) == 0
    assert "self-loops 2  duplicates 1" in capsys.readouterr().out

    def drop(s):
        s["relations"]["follows"].update(self_loops="drop", duplicates="drop")
    crawl2 = _broken(tmp_path / "2", edges_edit=lambda e: e.update(follows=[loops]), schema_edit=drop)
    dropped = load_crawl(crawl2)
    assert list(zip(dropped.edges["follows"].src, dropped.edges["follows"].dst)) == [(0, 1)]
    assert dropped.report.dropped_self_loops == {"follows": 2}
    assert dropped.report.dropped_duplicate_edges == {"follows": 1}


def test_missing_schema_and_missing_dir(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert "no such crawl directory" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path)]) == 2
    assert "graph.yaml" in capsys.readouterr().err


def test_int_ids_across_shards_of_different_widths(tmp_path):
    schema = {"node_types": {"n": {}}, "relations": {"e": {"src": "n", "dst": "n", "symmetric": True}}}
    nodes = {"n": [pa.table({"id": pa.array([5, 6], pa.int32())}), pa.table({"id": pa.array([7], pa.int64())})]}
    edges = {"e": [pa.table({"src": pa.array([5, 7], pa.int64()), "dst": pa.array([6, 5], pa.int64())})]}
    crawl = load_crawl(write_crawl(tmp_path / "c", schema, nodes, edges))
    assert crawl.nodes["n"].ids.to_pylist() == [5, 6, 7]
    assert np.array_equal(crawl.edges["e"].src, [0, 2])
