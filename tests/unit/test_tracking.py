"""Experiment tracking without Ray: what RunTracker sends reads back with MLflow's and TensorBoard's readers."""

import pytest

from graviti_dist.errors import GravitiError
from graviti_dist.train.config import TrainConfig
from graviti_dist.train.tracking import RunTracker, check_tracking, numeric_items


def _config(tmp_path, **tracking) -> TrainConfig:
    return TrainConfig(partitions=str(tmp_path / "parts"), out=str(tmp_path / "run-a"), tracking=tracking)


def test_nested_records_flatten_to_numbers_only():
    record = {"epoch": 2, "loss/x": 0.5, "best_epoch/x": 1, "flag": True, "note": "text", "nested": {"a": 3}}
    assert numeric_items(record) == {"epoch": 2.0, "loss/x": 0.5, "best_epoch/x": 1.0, "nested/a": 3.0}


def test_a_run_reads_back_from_mlflow_and_tensorboard(tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = RunTracker(_config(tmp_path, mlflow=uri, tensorboard=str(tmp_path / "tb"), experiment="e1"))
    for epoch, loss in enumerate([0.9, 0.7, 0.6]):
        tracker.epoch({"epoch": epoch, "loss/x": loss, "seeds_per_s": 100.0 + epoch})
    tracker.finish({"x": {"accuracy": 0.75, "count": 10}}, ok=True)

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("e1").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run-a"
    assert run.data.params["model.fanouts"] == "[10, 10]" and run.data.params["batch_size"] == "512"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss/x")] == \
        [(0, 0.9), (1, 0.7), (2, 0.6)]
    assert run.data.metrics["test/x/accuracy"] == 0.75
    events = EventAccumulator(str(tmp_path / "tb" / "run-a")).Reload()
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("seeds_per_s")] == [(0, 100.0), (1, 101.0), (2, 102.0)]
    assert [e.value for e in events.Scalars("test/x/accuracy")] == [0.75]


def test_a_failed_run_is_marked_failed(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    RunTracker(_config(tmp_path, mlflow=uri)).finish(None, ok=False)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("graviti").experiment_id])
    assert run.info.status == "FAILED"


def test_a_missing_library_is_refused_by_field(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(GravitiError, match=r"tracking\.mlflow: mlflow is not installed \(pip install"):
        check_tracking(TrainConfig(partitions="p", tracking={"mlflow": "sqlite:///x.db"}).tracking)


def test_an_unopenable_target_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(GravitiError, match="tracking: cannot open"):
        RunTracker(_config(tmp_path, tensorboard=str(blocker / "tb")))
