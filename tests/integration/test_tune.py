"""graviti tune on the Twitch crawl with a real local Ray: trials are runs, ASHA stops some, the best
trial is at least as good as the base config, and its YAML trains with graviti train as it is."""

import json
import subprocess
import sys

import pytest
import yaml

from graviti_dist.cli import main
from graviti_dist.errors import FieldError
from graviti_dist.partition import PartitionSpec, partition_crawl
from graviti_dist.train import RunDir, StudyDir, load_search_space


@pytest.fixture(scope="module")
def twitch_parts(tmp_path_factory, twitch_crawl):
    parts = tmp_path_factory.mktemp("tune") / "parts"
    partition_crawl(twitch_crawl, parts, PartitionSpec(num_parts=1, executor="local"))
    return parts


def _base(tmp_path, parts) -> dict:
    base = {"partitions": str(parts), "out": str(tmp_path / "unused"), "num_workers": 1, "epochs": 3,
            "batch_size": 512, "model": {"hidden": 16, "heads": 2, "fanouts": [5, 5]},
            "early_stopping": {"metric": "mature/roc_auc", "mode": "max", "patience": 5}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    return base


def test_a_search_space_is_checked_against_the_config_before_anything_runs(tmp_path, twitch_parts):
    base = _base(tmp_path, twitch_parts)
    cases = [({"optim.lr": {"loguniform": [0, 1]}}, "loguniform: low must be positive"),
             ({"optim.lr": {"uniform": [0.1, 0.01]}}, "low must be below high"),
             ({"optim.lr": {"choice": [0.1], "uniform": [0, 1]}}, "exactly one of"),
             ({"model.hiden": {"choice": [8]}}, r"model.hiden=8.*model.hiden"),
             ({"model.dropout": {"uniform": [0.0, 1.5]}}, r"model.dropout=1.5.*dropout")]
    for space, message in cases:
        (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
        with pytest.raises(FieldError, match=message):
            load_search_space(tmp_path / "space.yaml", base)


@pytest.mark.ray_cluster
def test_tune_finds_a_config_at_least_as_good_as_the_base_and_its_yaml_trains(tmp_path, twitch_parts, ray_local, capsys):
    # The study starts its own local Ray, with the dashboard whose State API lets Ray Train free the
    # CPUs of trials that ASHA stops; the session's Ray (no dashboard) would compete for the 2 cores.
    ray_local.shutdown()
    _base(tmp_path, twitch_parts)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"optim.lr": {"loguniform": [3e-4, 3e-2]},
                                                        "model.dropout": {"choice": [0.0, 0.3]}}))
    study = StudyDir(tmp_path / "study")
    code = main(["tune", str(tmp_path / "base.yaml"), "--search", str(tmp_path / "space.yaml"), "--trials", "3",
                 "--out", str(study.root)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = study.read_summary()
    assert len(rows) == 3 and sum(r["is_base_config"] for r in rows) == 1
    base_row = next(r for r in rows if r["is_base_config"])
    assert rows[0]["best_score"] >= base_row["best_score"]  # the base config is one trial: never beaten by default
    assert [r["best_score"] for r in rows] == sorted((r["best_score"] for r in rows), reverse=True)
    for row in rows:  # each trial is a normal run directory whose records give its score
        records = RunDir(row["run"]).read_records()
        assert row["epochs_run"] == len(records) >= 1
        assert row["best_score"] == max(r["val_score"] for r in records)
        assert row["best_metric"] == pytest.approx(row["best_score"])  # mode max: the score is mature/roc_auc
        assert row["status"] in ("finished", "stopped by ASHA")
    header = study.summary_md.read_text().splitlines()[2]
    assert "`optim.lr`" in header and "`model.dropout`" in header and study.summary_plot.exists()
    assert f"best: trial {rows[0]['trial']}" in printed
    best = yaml.safe_load(study.best_config.read_text())
    assert best["optim"]["lr"] == pytest.approx(rows[0]["params"]["optim.lr"])
    assert best["model"]["dropout"] == rows[0]["params"]["model.dropout"] and best["model"]["hidden"] == 16
    result = subprocess.run([sys.executable, "-m", "graviti_dist.train", str(study.best_config), "--set", "epochs=1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(RunDir(best["out"]).test_metrics_path.read_text())["mature"]["count"] > 500
