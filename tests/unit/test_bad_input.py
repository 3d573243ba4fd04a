"""Poisoned and malformed input is refused with a message that names the file, column, row or
flag, exit status 2 and no traceback; nothing is written where the command failed."""

import json
import shutil
import socket

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from graviti_dist.cli import main
from graviti_dist.crawl import load_crawl
from tests.helpers import broken_crawl, inspect_fails, small_schema, small_tables, write_crawl


def _with_users(edit):
    def apply(nodes):
        users = nodes["user"][0]
        nodes["user"] = [edit(users)]
    return apply


def _column(table, name, values, type_=None):
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values, type_))


@pytest.mark.parametrize("edit, expected", [
    (lambda n: n.update(post=[pa.table({"id": ["p1", "p2", "p3"], "age": [1.0, float("inf"), 3.0]})]),
     ["nodes/post", "numeric feature 'age'", "[inf]", "rows [1]"]),
    (lambda n: n.update(post=[pa.table({"id": ["p1", "p2", "p3"], "age": [1.0, 2.0, 1e308]})]),
     ["numeric feature 'age'", "beyond float32", "rows [2]"]),
    (_with_users(lambda t: _column(t, "x", [[1.0, 2.0], [3.0, float("-inf")], None, None], pa.list_(pa.float32()))),
     ["nodes/user", "vector feature 'x'", "[-inf]", "rows [1]"]),
    (_with_users(lambda t: _column(t, "bot", [1.0, float("inf"), 0.0, None])),
     ["label column 'bot'", "[inf]", "rows [1]"]),
], ids=["inf-numeric", "1e308-numeric", "inf-vector", "inf-label"])
def test_non_finite_features_and_labels_are_refused_by_row(tmp_path, capsys, edit, expected):
    err = inspect_fails(broken_crawl(tmp_path, nodes_edit=edit), capsys)
    assert all(part in err for part in expected), err


def test_a_nan_feature_is_still_a_missing_value(tmp_path):
    posts = pa.table({"id": ["p1", "p2", "p3"], "age": [1.0, float("nan"), 3.0]})
    crawl = load_crawl(broken_crawl(tmp_path, nodes_edit=lambda n: n.update(post=[posts])))
    assert crawl.nodes["post"].features["age"].missing == 1


@pytest.mark.parametrize("weights", [[1.0, float("nan"), 2.0], [1.0, 2.0, float("inf")]], ids=["nan", "inf"])
def test_non_finite_edge_weights_are_refused(tmp_path, capsys, weights):
    def edit(edges):
        edges["authored"] = [edges["authored"][0].append_column("weight", pa.array(weights))]
    crawl = broken_crawl(tmp_path, edges_edit=edit,
                         schema_edit=lambda s: s["relations"]["authored"].update(attributes=["ts", "weight"]))
    err = inspect_fails(crawl, capsys)
    assert "edges/authored: edge attribute column 'weight'" in err and "non-finite" in err


def test_unsigned_ids_beyond_int64_are_refused_with_examples(tmp_path, capsys):
    big = np.arange(4, dtype=np.uint64) + np.uint64(2**63 + 5)
    crawl = broken_crawl(tmp_path, nodes_edit=_with_users(lambda t: _column(t, "id", big)),
                         edges_edit=lambda e: e.update(follows=[pa.table({"src": big[:2], "dst": big[1:3]})]))
    err = inspect_fails(crawl, capsys)
    assert "nodes/user: column 'id' holds unsigned ids above 2**63-1" in err and str(2**63 + 5) in err


def test_a_multilabel_task_on_a_non_list_column_is_refused(tmp_path, capsys):
    def schema(s):
        s["tasks"].append({"name": "tags", "type": "multilabel", "node_type": "user", "label": "bot", "width": 3})
    err = inspect_fails(broken_crawl(tmp_path, schema_edit=schema), capsys)
    assert "label column 'bot' (task 'tags', multilabel): has type bool, expected list<int>" in err


def test_a_schema_that_is_not_utf8_is_named(tmp_path, capsys):
    crawl = broken_crawl(tmp_path)
    (crawl / "graph.yaml").write_bytes(b"name: caf\xe9\n" + (crawl / "graph.yaml").read_bytes())
    assert "graph.yaml: not UTF-8 text (byte 0xe9 at line 1)" in inspect_fails(crawl, capsys)


def test_shards_below_a_table_folder_are_ignored_and_reported(tmp_path, caplog):
    nodes, edges = small_tables()
    crawl = write_crawl(tmp_path / "crawl", small_schema(), nodes, edges)
    stale = crawl / "edges" / "follows" / "old"
    stale.mkdir()
    shutil.copy(crawl / "edges" / "follows" / "part-00000.parquet", stale / "part-00000.parquet")
    (crawl / "edges" / "follows" / "_SUCCESS").write_text("")
    assert load_crawl(crawl).edges["follows"].src.size == 4  # not 8
    assert "edges/follows: ignored 1 entry" in caplog.text and "['old/']" in caplog.text


def test_a_set_value_that_is_not_yaml_is_named(capsys):
    assert main(["train", "--set", "partitions=/p", "--set", "model={hidden: ["]) == 2
    err = capsys.readouterr().err
    assert "--set 'model={hidden: [': the value is not valid YAML" in err and "Traceback" not in err


def test_inspect_json_into_a_new_folder_creates_it(tmp_path, capsys):
    nodes, edges = small_tables()
    crawl = write_crawl(tmp_path / "crawl", small_schema(), nodes, edges)
    target = tmp_path / "reports" / "today" / "summary.json"
    assert main(["inspect", str(crawl), "--no-graph", "--json", str(target)]) == 0
    assert json.loads(target.read_text())["name"] == "small"


@pytest.mark.parametrize("flags, message", [
    (["infer", "RUN", "--partitions", "P", "--out", "O", "--top-k", "-1"], "--top-k must be 0 (no recommendations) or more, got -1"),
    (["infer", "RUN", "--partitions", "P", "--out", "O", "--explain", "-2"], "--explain must be 0 (none) or more, got -2"),
    (["infer", "RUN", "--partitions", "P", "--out", "O", "--num-actors", "-1"], "--num-actors must be at least 1, got -1"),
    (["infer", "RUN", "--partitions", "P", "--out", "O", "--threads-per-actor", "0"], "--threads-per-actor must be at least 1"),
    (["serve", "RUN", "--partitions", "P", "--port", "70000"], "--port must be between 1 and 65535, got 70000"),
    (["serve", "RUN", "--partitions", "P", "--max-ids", "0"], "--max-ids must be at least 1, got 0"),
    (["serve", "RUN", "--partitions", "P", "--read-timeout", "0"], "--read-timeout must be positive, got 0.0"),
    (["serve", "RUN", "--partitions", "P", "--explain-max", "-1"], "--explain-max must be 0 (no explanations) or more, got -1"),
])
def test_numeric_flags_out_of_range_are_refused_before_any_work(tmp_path, capsys, flags, message):
    flags = [str(tmp_path / f) if f in ("RUN", "P", "O") else f for f in flags]  # none of them exists
    assert main(flags) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "O").exists()


def test_serve_refuses_a_port_in_use_before_loading_anything(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path / "no-run"), "--partitions", str(tmp_path / "no-parts"), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err  # not "no-run: not a training run"


def _musae(folder, new_ids):
    folder.mkdir(parents=True)
    lang = folder.name
    n = len(new_ids)
    pacsv.write_csv(pa.table({"id": [1000 + i for i in range(n)], "days": [10] * n, "mature": [True] * n,
                              "views": [5] * n, "partner": [False] * n, "new_id": new_ids}), folder / f"{lang}_target.csv")
    pacsv.write_csv(pa.table({"from": [0, 1], "to": [1, 2]}), folder / f"{lang}_edges.csv")
    (folder / f"{lang}.json").write_text(json.dumps({str(i): [i % 3] for i in range(n)}))
    return folder


def test_importers_name_repeated_ids_and_their_lines_and_dedupe_on_request(tmp_path, capsys):
    fr = _musae(tmp_path / "FR", [0, 1, 2, 1, 3])  # MUSAE's FR repeats users
    assert main(["import", "twitch", str(fr), "--out", str(tmp_path / "fr")]) == 2
    err = capsys.readouterr().err
    assert "FR_target.csv: column 'new_id' repeats 1 value(s) [1] (lines [3, 5])" in err and "--dedupe first" in err
    assert not (tmp_path / "fr").exists()
    assert main(["import", "twitch", str(fr), "--out", str(tmp_path / "fr"), "--dedupe", "first"]) == 0
    users = load_crawl(tmp_path / "fr").nodes["user"].ids.to_pylist()
    assert users == [1000, 1001, 1002, 1004]  # the second row of user 1 dropped
    gap = _musae(tmp_path / "DE", [0, 1, 3])
    assert main(["import", "twitch", str(gap), "--out", str(tmp_path / "de")]) == 2
    assert "without gaps; missing [2]" in capsys.readouterr().err
    pacsv.write_csv(pa.table({"src": [1, 2], "dst": [2, 1]}), tmp_path / "e.csv")
    pacsv.write_csv(pa.table({"id": [1, 2, 2], "score": [0.5, 1.5, 2.5]}), tmp_path / "n.csv")
    edgelist = ["import", "edgelist", str(tmp_path / "e.csv"), "--nodes", str(tmp_path / "n.csv"), "--out", str(tmp_path / "el")]
    assert main(edgelist) == 2 and "n.csv: column 'id' repeats 1 value(s) [2] (lines [3, 4])" in capsys.readouterr().err
    assert main([*edgelist, "--dedupe", "first"]) == 0


def test_a_csv_that_is_not_utf8_is_named(tmp_path, capsys):
    (tmp_path / "e.csv").write_bytes(b"src,dst\ncaf\xe9,b\n")
    assert main(["import", "edgelist", str(tmp_path / "e.csv"), "--out", str(tmp_path / "crawl")]) == 2
    err = capsys.readouterr().err
    assert "e.csv: could not read" in err and "UTF8" in err and "Traceback" not in err


def test_an_empty_table_has_nothing_non_finite():
    from graviti_dist.crawl.encode import refuse_non_finite

    refuse_non_finite(np.zeros((0,), np.float32), "empty")
    refuse_non_finite(np.zeros((0, 4), np.float32), "empty")
