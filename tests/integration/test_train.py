"""graviti train on Ray Train: 2 CPU workers with DDP (gloo) on 2 partitions of a synthetic crawl."""

import json
import subprocess
import sys

import pytest
import torch

from graviti_dist.cli import main
from graviti_dist.train.config import load_train_config
from graviti_dist.crawl.synthetic import SyntheticSpec
from graviti_dist.errors import GravitiError
from graviti_dist.crawl.generate import generate_crawl
from graviti_dist.partition import PartitionSpec, partition_crawl
from graviti_dist.train import RunDir, fit
from graviti_dist.train.run_dir import TrainingState


@pytest.fixture(scope="module")
def two_parts(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("train")
    generate_crawl(root / "crawl", SyntheticSpec(users=3000, seed=2), progress=False)
    partition_crawl(root / "crawl", root / "parts", PartitionSpec(num_parts=2))
    return root / "parts"


def test_two_workers_train_jointly_and_stay_in_sync(two_parts, tmp_path):
    # Through the CLI in a fresh process with its own local Ray: what `ray job submit -- graviti train` runs,
    # and Ray Train's controller never shares a Ray instance with the other tests.
    overrides = [f"partitions={two_parts}", f"out={tmp_path / 'run'}", "epochs=3", "num_workers=2", "model.hidden=16",
                 "model.heads=2", "batch_size=256", "tasks=[interest, influence, is_bot, is_rumor]",
                 "task_weights={is_rumor: 0.5}"]
    config_file = tmp_path / "train.yaml"
    config_file.write_text(f"balancing: uncertainty\ntracking:\n  mlflow: sqlite:///{tmp_path / 'mlflow.db'}\n"
                           f"  tensorboard: {tmp_path / 'tb'}\n")
    command = [sys.executable, "-m", "graviti_dist.train", str(config_file)] + [a for o in overrides for a in ("--set", o)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| interest | accuracy |" in result.stdout
    test_metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    for r in records:
        assert r["ddp_param_spread"] == 0.0  # replicas identical after every epoch
        assert r["train_seeds"] > 0 and r["seeds_per_s"] > 0
        assert {"loss/interest", "weight/is_bot", "val/interest/accuracy", "val/is_bot/roc_auc", "val/influence/loss"} <= set(r)
    # The best model is the epoch with the lowest summed validation loss, and the test split uses it.
    summed = [sum(v for k, v in r.items() if k.startswith("val/") and k.endswith("/loss")) for r in records]
    assert records[-1]["best_epoch"] == min(range(len(records)), key=summed.__getitem__)
    table = (tmp_path / "run" / "test_metrics.md").read_text()  # epochs counted from 1 there
    assert f"Summed selection (`--select summed`, best_model.pt): epoch {records[-1]['best_epoch'] + 1} " in table
    assert records[-1]["loss/interest"] < records[0]["loss/interest"]
    assert set(test_metrics) == {"interest", "influence", "is_bot", "is_rumor"}
    assert test_metrics["interest"]["accuracy"] > 0.3  # chance is 1/8
    assert table.startswith("| task | metric | per-task selection | summed selection |")
    assert (tmp_path / "run" / "config.yaml").exists() and (tmp_path / "run" / "best_model.pt").exists()
    # one checkpoint per epoch, but only the newest keep_checkpoints (2) stay on disk
    assert len(list((tmp_path / "run" / "ray").glob("**/checkpoint_*/state.pt"))) == 2
    _tracked_runs_read_back(tmp_path, records, test_metrics)


def _tracked_runs_read_back(tmp_path, records, test_metrics):
    """The run as MLflow's and TensorBoard's own readers see it: config, every epoch, test metrics."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("graviti").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["model.hidden"] == "16"
    history = client.get_metric_history(run.info.run_id, "val/interest/accuracy")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["val/interest/accuracy"]) for r in records]
    assert run.data.metrics["test/interest/accuracy"] == pytest.approx(test_metrics["interest"]["accuracy"])
    (log_dir,) = (tmp_path / "tb").iterdir()
    events = EventAccumulator(str(log_dir)).Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss/interest")] == \
        [(r["epoch"], pytest.approx(r["loss/interest"])) for r in records]
    (config_text,) = events.Tensors("config/text_summary")
    assert b"hidden: 16" in config_text.tensor_proto.string_val[0]


def test_averaged_weights_are_what_is_evaluated_selected_and_saved(two_parts, tmp_path):
    """optim.average_epochs: best_model.pt and each task's best epoch hold the average, not the last
    step's weights, and every checkpoint carries the average so that a resume continues it."""
    out = tmp_path / "run"
    fit(load_train_config(None, [f"partitions={two_parts}", f"out={out}", "epochs=2", "num_workers=2", "model.hidden=16",
                                 "model.heads=2", "batch_size=256", "optim.average_epochs=20", "keep_checkpoints=2",
                                 "tasks=[interest, influence]", "progress=false"]))
    run = RunDir(out)
    states = {s.epoch: s for s in (TrainingState.load(p.parent) for p in run.ray_storage.glob("**/checkpoint_*/state.pt"))}
    assert sorted(states) == [0, 1]
    best = states[1].best[1]
    saved = torch.load(run.best_model_path, weights_only=False)
    averaged, live = states[best].averaged, states[best].model
    assert int(averaged["n_averaged"]) == sum(r["steps"] for r in run.read_records()[:best + 1])  # one update a step
    for name, value in saved.items():
        if f"module.{name}" in averaged and value.is_floating_point():
            torch.testing.assert_close(value, averaged[f"module.{name}"])
    moved = [n for n, v in live.items() if f"module.{n}" in averaged and not torch.allclose(v, averaged[f"module.{n}"])]
    assert moved, "the average over 20 epochs should lag the live weights"
    for epoch in set(run.read_selection().tasks[t].epoch for t in ("interest", "influence")):
        task_best = torch.load(run.task_best_path(epoch), weights_only=False)
        torch.testing.assert_close(task_best[moved[0]], states[epoch].averaged[f"module.{moved[0]}"])


def test_config_errors_name_the_field(two_parts, tmp_path, capsys):
    with pytest.raises(GravitiError, match="model.hidden"):
        load_train_config(None, [f"partitions={two_parts}", "model.hidden=0"])
    with pytest.raises(GravitiError, match="colour"):
        load_train_config(None, [f"partitions={two_parts}", "colour=red"])
    with pytest.raises(GravitiError, match="3 layers need a halo of 3 hops"):
        fit(load_train_config(None, [f"partitions={two_parts}", "model.fanouts=[5,5,5]", "sampling=local", f"out={tmp_path}/r"]))
    with pytest.raises(GravitiError, match="'likes' is not a task"):
        fit(load_train_config(None, [f"partitions={two_parts}", "tasks=[likes]", f"out={tmp_path}/r"]))
    with pytest.raises(GravitiError, match="only 2 partitions"):
        fit(load_train_config(None, [f"partitions={two_parts}", "num_workers=3", f"out={tmp_path}/r"]))
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(GravitiError, match="already holds a run"):
        fit(load_train_config(None, [f"partitions={two_parts}", f"out={tmp_path}/done"]))
    assert (tmp_path / "done" / "metrics.jsonl").read_text() == "{}\n"
    if not torch.cuda.is_available():  # the session's Ray has no GPU: refused at once, not waited for forever
        with pytest.raises(GravitiError, match="device cannot be placed: 2 GPUs wanted"):
            fit(load_train_config(None, [f"partitions={two_parts}", "device=cuda", f"out={tmp_path}/gpu"]))
        assert not (tmp_path / "gpu").exists() or not any((tmp_path / "gpu").iterdir())
    config_file = tmp_path / "c.yaml"
    config_file.write_text("partitions: [unclosed")
    assert main(["train", str(config_file)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
