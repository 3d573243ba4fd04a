"""Importers on the real datasets in ../shared (read in place) and on plain edge lists."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from graviti_dist.cli import main
from graviti_dist.crawl.importers import import_edgelist
from graviti_dist.crawl.load import load_crawl


def _no_leftovers(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temporary sibling left behind"


def test_twitch_two_languages_summary(twitch_crawl, capsys, tmp_path):
    summary_path = tmp_path / "summary.json"
    assert main(["inspect", str(twitch_crawl), "--json", str(summary_path)]) == 0
    out = capsys.readouterr().out
    assert "9,038 nodes" in out and "66,623 undirected edges" in out and "tasks (5)" in out
    summary = json.loads(summary_path.read_text())
    assert summary["node_types"]["user"]["count"] == 9038
    assert summary["relations"]["friends"]["count"] == 66623
    assert set(summary["tasks"]) == {"mature", "partner", "days", "views", "language"}
    assert summary["tasks"]["language"]["classes"] == {"ENGB": 7126, "PTBR": 1912}
    assert all(t["coverage"] == 1.0 for t in summary["tasks"].values())
    assert summary["dgl_graph"]["num_edges"] == 2 * 66623


def test_twitch_keeps_original_ids_and_features(twitch_crawl, datasets):
    crawl = load_crawl(twitch_crawl)
    target = pacsv.read_csv(datasets / "twitch" / "ENGB" / "ENGB_target.csv")
    row = target.slice(0, 1).to_pylist()[0]  # id 73045350, new_id 2299 in the source
    index = crawl.nodes["user"].ids.to_pylist().index(row["id"])
    assert crawl.labels["days"].values[index] == row["days"]
    assert crawl.labels["views"].values[index] == pytest.approx(np.log1p(row["views"]))
    sparse = json.loads((datasets / "twitch" / "ENGB" / "ENGB.json").read_text())[str(row["new_id"])]
    active = crawl.nodes["user"].features["features"].values[index]
    assert sorted(active[active >= 0].tolist()) == sorted(sparse)


def test_twitch_missing_file_leaves_nothing(tmp_path, datasets, capsys):
    broken = tmp_path / "ENGB"
    broken.mkdir()
    (broken / "ENGB_edges.csv").write_text("from,to\n0,1\n")
    out = tmp_path / "crawl"
    assert main(["import", "twitch", str(broken), "--out", str(out)]) == 2
    assert "ENGB.json: file not found" in capsys.readouterr().err
    _no_leftovers(out)


def test_import_refuses_existing_output(tmp_path, datasets, capsys):
    out = tmp_path / "crawl"
    out.mkdir()
    assert main(["import", "nba", str(datasets / "nba"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "pass --overwrite to replace it" in err  # the flag, not the field name


def test_nba_unknown_salary_is_unlabelled(tmp_path, datasets):
    out = tmp_path / "nba"
    assert main(["import", "nba", str(datasets / "nba"), "--out", str(out)]) == 0
    crawl = load_crawl(out)
    assert len(crawl.nodes["player"]) == 403
    salary = crawl.labels["salary"]
    assert 0 < salary.mask.sum() < 403
    assert set(np.unique(salary.values[salary.mask])) <= {0.0, 1.0}
    assert crawl.nodes["player"].features["stats"].width == crawl.nodes["player"].features["stats"].values.shape[1]


def test_edgelist_with_node_table_and_labels(tmp_path):
    pacsv.write_csv(pa.table({"a": [1, 2, 3], "b": [2, 3, 1]}), tmp_path / "e.csv")
    pacsv.write_csv(pa.table({"id": [1, 2, 3], "score": [0.5, 1.5, 2.5], "spam": [1, 0, None]}), tmp_path / "n.csv")
    out = tmp_path / "crawl"
    assert main(["import", "edgelist", str(tmp_path / "e.csv"), "--nodes", str(tmp_path / "n.csv"),
                 "--src-col", "a", "--dst-col", "b", "--label", "spam:binary", "--symmetric", "--out", str(out)]) == 0
    crawl = load_crawl(out)
    assert crawl.schema.relations["edge"].symmetric
    assert crawl.nodes["node"].features["score"].values[:, 0].tolist() == [0.5, 1.5, 2.5]
    assert crawl.labels["spam"].mask.tolist() == [True, True, False]


def test_edgelist_without_nodes(tmp_path):
    pacsv.write_csv(pa.table({"src": ["x", "y"], "dst": ["y", "z"]}), tmp_path / "e.csv")
    import_edgelist(tmp_path / "e.csv", tmp_path / "crawl")
    assert load_crawl(tmp_path / "crawl").nodes["node"].ids.to_pylist() == ["x", "y", "z"]


def test_edgelist_bad_columns_leave_nothing(tmp_path, capsys):
    pacsv.write_csv(pa.table({"from": [1], "to": [2]}), tmp_path / "e.csv")
    out = tmp_path / "crawl"
    assert main(["import", "edgelist", str(tmp_path / "e.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "e.csv: missing column(s) ['src', 'dst']" in err
    _no_leftovers(out)
    assert main(["import", "edgelist", str(tmp_path / "e.csv"), "--label", "spam", "--out", str(out)]) == 2
    assert "expected COLUMN:TYPE" in capsys.readouterr().err
    _no_leftovers(out)
