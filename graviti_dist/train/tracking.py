"""Experiment tracking: a run's resolved config, each epoch's record and its test metrics, sent
to MLflow and/or TensorBoard (``tracking:`` in the training config).

The driver logs what rank 0 writes to ``metrics.jsonl`` as the console follows it, so nothing
runs inside the Ray Train workers and a tracking server that is slow or down cannot stall DDP.
Ray Train 2.60 has no driver-side tracking callback for a TorchTrainer (``setup_mlflow`` runs in
a worker, ``MLflowLoggerCallback`` only in Tune), hence our own. Both libraries are optional
(the ``tracking`` extra); a config that asks for one that is not installed is refused before
Ray starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from graviti_dist.errors import GravitiError
from graviti_dist.train.config import TrainConfig, TrackingConfig

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install -e '.[tracking]'"


def numeric_items(record: dict, prefix: str = "") -> dict[str, float]:
    """A record's numbers, nested keys joined with '/' (MLflow and TensorBoard take flat names)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numeric_items(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class _MlflowSink:
    def __init__(self, tracking: TrackingConfig, config: TrainConfig):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # schema creation logs a dozen INFO lines on a new database
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client = MlflowClient(tracking.mlflow)
        experiment = self.client.get_experiment_by_name(tracking.experiment)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(tracking.experiment))
        run = self.client.create_run(experiment_id, run_name=Path(config.out).name,
                                     tags={"graviti.run_id": config.run_id or "", "graviti.out": config.out})
        self.run_id = run.info.run_id
        params = flat_params(config.model_dump(mode="json", exclude={"tracking", "build_dir", "resume_from"}))
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in list(params.items())[start:start + 100]])

    def epoch(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, v, 0, step) for k, v in values.items()]
        for start in range(0, len(metrics), 1000):  # the batch limit is 1000 metrics
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def finish(self, test: dict[str, float], status: str) -> None:
        if test:
            self.epoch(0, {f"test/{k}": v for k, v in test.items()})
        self.client.set_terminated(self.run_id, status=status)


class _TensorBoardSink:
    def __init__(self, tracking: TrackingConfig, config: TrainConfig):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(tracking.tensorboard) / Path(config.out).name))
        self.writer.add_text("config", "```yaml\n" + _yaml(config) + "\n```")

    def epoch(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, test: dict[str, float], status: str) -> None:
        for key, value in test.items():
            self.writer.add_scalar(f"test/{key}", value, 0)
        self.writer.close()


def flat_params(tree: dict, prefix: str = "") -> dict[str, str]:
    """A config as flat MLflow params: dotted names, as ``--set`` spells them."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, name + "."))
        else:
            out[name] = str(value)[:6000]  # MLflow's limit on a param value
    return out


def _yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json", exclude={"build_dir", "resume_from"}), sort_keys=False)


def check_tracking(tracking: TrackingConfig) -> None:
    """Refuse a tracking target whose library is missing, before anything starts."""
    wanted = {"mlflow": ("mlflow", tracking.mlflow), "tensorboard": ("tensorboard", tracking.tensorboard)}
    for field, (module, target) in wanted.items():
        if target is None:
            continue
        try:
            __import__(module)
        except ImportError:
            raise GravitiError(f"tracking.{field}: {module} is not installed ({INSTALL_HINT})") from None


class RunTracker:
    """Sends a run to every configured sink; ``epoch`` takes each new record of metrics.jsonl."""

    def __init__(self, config: TrainConfig):
        tracking = config.tracking
        self.sinks = []
        try:
            if tracking.mlflow:
                self.sinks.append(_MlflowSink(tracking, config))
            if tracking.tensorboard:
                self.sinks.append(_TensorBoardSink(tracking, config))
        except GravitiError:
            raise
        except Exception as exc:  # a bad URI, an unwritable directory: named, before training starts
            raise GravitiError(f"tracking: cannot open {tracking.mlflow or tracking.tensorboard}: {exc}") from None

    def epoch(self, record: dict) -> None:
        values = {k: v for k, v in numeric_items(record).items() if k != "epoch"}
        for sink in list(self.sinks):
            try:
                sink.epoch(int(record["epoch"]), values)
            except Exception as exc:  # the run matters more than its tracking: warn once, stop sending there
                log.warning("tracking: %s failed (%s); not sending it more epochs", type(sink).__name__[1:-4], exc)
                self.sinks.remove(sink)

    def finish(self, test_metrics: dict | None, ok: bool) -> None:
        test = numeric_items(test_metrics or {})
        for sink in self.sinks:
            sink.finish(test, "FINISHED" if ok else "FAILED")
