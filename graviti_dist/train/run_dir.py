"""The training run on disk: every file name of a run directory, and typed readers and writers.

A run directory (``TrainConfig.out``)::

    config.yaml          # the resolved TrainConfig the run used (graviti train takes it as is)
    metrics.jsonl        # one JSON record per epoch (losses, weights, seeds/s, validation metrics)
    best_model.pt        # the model of lowest summed validation loss (or of early_stopping's metric)
    best/epoch-E.pt      # per-task selection: the weights of epoch E, while E is some task's best epoch
    selection.json       # which epoch each node task selected, on which validation metric (Selection)
    test_metrics.json    # each task's test metrics, from its own selected epoch
    test_metrics.md      # the same as a table, beside the summed model's
    losses.png, metrics.png
    ray/train/checkpoint_*/state.pt   # Ray Train's checkpoints, each a TrainingState

and beside it ``.NAME.lock``, held by the ``graviti train`` driver while it runs (:class:`RunLock`):
a second training into the same run is refused, and workers stop when the driver is gone.
Files are replaced whole (written beside, then renamed), so a killed run never leaves half a file.

This module is the only one that spells these names; ``infer`` reads runs through :func:`load_run`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import yaml
from pydantic import BaseModel, ValidationError

from graviti_dist.errors import FieldError, GravitiError
from graviti_dist.runtime.output import recover
from graviti_dist.train.config import TrainConfig

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
BEST_MODEL = "best_model.pt"
CHECKPOINT = "state.pt"
TEST_METRICS_JSON = "test_metrics.json"
TEST_METRICS_MD = "test_metrics.md"
LOSSES_PLOT = "losses.png"
METRICS_PLOT = "metrics.png"
RAY_DIR = "ray"
RAY_RUN_NAME = "train"
LOCK_SUFFIX = ".lock"
TASK_BEST_DIR = "best"
SELECTION = "selection.json"
SELECT_MODES = ("per_task", "summed")


def _replace_with(path: Path, write) -> None:
    """Write ``path`` whole: ``write(tmp)`` fills a sibling, which then replaces ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def lock_path(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


# flock's answers on filesystems without locks (some NFS mounts: ENOLCK; FUSE: EOPNOTSUPP/ENOSYS)
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class RunLock:
    """An exclusive lock on the run at ``out`` (``flock`` on a sibling file, released by the kernel
    when the holder dies), naming the holder's host, pid and run id for whoever is refused."""

    def __init__(self, out: str | Path, run_id: str):
        self.path, self.run_id, self._file = lock_path(out), run_id, None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.locked = True
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise GravitiError(f"out: {self.path.parent / self.path.name[1:-len(LOCK_SUFFIX)]} is in use by another "
                               f"graviti train ({holder}); wait for it to finish or choose another out") from None
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                f.close()
                raise
            self.locked = False
            log.warning("%s: this filesystem does not support locks (%s); training unlocked: a second graviti train "
                        "into the same out is not refused, and workers cannot notice that this driver died",
                        self.path, os.strerror(exc.errno))
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "run_id": self.run_id}))
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self.locked:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def driver_holds_lock(out: str | Path, run_id: str | None) -> bool:
    """Seen from a worker: whether the driver of run ``run_id`` still holds the run's lock (False
    once it died, or when a later run took the lock over)."""
    path = lock_path(out)
    if run_id is None or not path.exists():
        return True  # not started by graviti train's driver (a test calling the loop directly)
    with path.open("r") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                return True  # no locks on this filesystem (RunLock warned): no way to tell, keep going
            if not isinstance(exc, BlockingIOError):
                raise
            try:
                return json.loads(f.read() or "{}").get("run_id") == run_id
            except json.JSONDecodeError:
                return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


@dataclass
class TrainingState:
    """Everything a run needs to continue after a failure or with ``--resume``."""

    model: dict
    optimizer: dict
    schedule: dict | None
    epoch: int
    best: tuple[float, int] | None  # (score, epoch) of the selected model so far
    best_state: dict | None  # that model's weights
    stale: int  # evaluations since the best one (early stopping)
    rng: torch.Tensor
    # per node task: (score, epoch) of its best validation metric so far; weights in RunDir.task_best_path
    task_best: dict[str, tuple[float, int]] = field(default_factory=dict)
    averaged: dict | None = None  # the weight average's state (optim.average_epochs), None without one

    def save(self, directory: str | Path) -> None:
        # Not dataclasses.asdict: it deep-copies every tensor of the model and optimiser state.
        torch.save({f.name: getattr(self, f.name) for f in fields(self)}, Path(directory) / CHECKPOINT)

    @classmethod
    def load(cls, directory: str | Path) -> "TrainingState":
        return cls(**torch.load(Path(directory) / CHECKPOINT, weights_only=False))


class TaskChoice(BaseModel):
    """One node task's selected epoch: the best ``metric`` on the validation split."""

    epoch: int
    metric: str
    mode: str  # max or min
    value: float


class Selection(BaseModel):
    """``selection.json``: per-task selection of the run's epochs, and the summed model's own."""

    tasks: dict[str, TaskChoice]
    summed_epoch: int | None
    summed_test: dict[str, dict[str, float]]  # the summed model's test metrics (best_model.pt)


class RunDir:
    """Paths and typed readers/writers of the run directory at ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / CONFIG)
    metrics_path = property(lambda self: self.path / METRICS)
    best_model_path = property(lambda self: self.path / BEST_MODEL)
    test_metrics_path = property(lambda self: self.path / TEST_METRICS_JSON)
    test_table_path = property(lambda self: self.path / TEST_METRICS_MD)
    losses_plot = property(lambda self: self.path / LOSSES_PLOT)
    metrics_plot = property(lambda self: self.path / METRICS_PLOT)
    ray_storage = property(lambda self: self.path / RAY_DIR)
    selection_path = property(lambda self: self.path / SELECTION)

    def task_best_path(self, epoch: int) -> Path:
        return self.path / TASK_BEST_DIR / f"epoch-{epoch:05d}.pt"

    def save_task_best(self, epoch: int, state_dict: dict) -> None:
        self.task_best_path(epoch).parent.mkdir(parents=True, exist_ok=True)
        _replace_with(self.task_best_path(epoch), lambda tmp: torch.save(state_dict, tmp))

    def prune_task_bests(self, keep: set[int]) -> None:
        """Remove the per-task weights of epochs neither in ``keep`` (the training state's) nor named
        by the published ``selection.json`` (a resumed run that fails must leave that one whole)."""
        published = self.read_selection()
        keep = set(keep) | ({c.epoch for c in published.tasks.values()} if published else set())
        for path in (self.path / TASK_BEST_DIR).glob("epoch-*.pt"):
            if int(path.stem.split("-")[1]) not in keep:
                path.unlink(missing_ok=True)

    def remove_selection(self) -> None:
        self.selection_path.unlink(missing_ok=True)
        shutil.rmtree(self.path / TASK_BEST_DIR, ignore_errors=True)

    def write_selection(self, selection: Selection) -> None:
        _replace_with(self.selection_path, lambda tmp: tmp.write_text(selection.model_dump_json(indent=2)))

    def read_selection(self) -> Selection | None:
        """The run's per-task selection; None for runs written before it existed."""
        if not self.selection_path.exists():
            return None
        try:
            return Selection.model_validate_json(self.selection_path.read_text())
        except ValidationError as exc:
            raise GravitiError(f"{self.selection_path}: not a valid selection: {exc}") from None

    def holds_run(self) -> bool:
        """Whether a run has written here (its epoch records)."""
        return self.metrics_path.exists()

    def write_config(self, config: TrainConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(config.model_dump(mode="json", exclude={"build_dir"}), sort_keys=False)
        _replace_with(self.config_path, lambda tmp: tmp.write_text(text))

    def read_config(self) -> TrainConfig:
        try:
            return TrainConfig.model_validate(yaml.safe_load(self.config_path.read_text()))
        except (ValidationError, yaml.YAMLError) as exc:
            raise GravitiError(f"{self.config_path}: not a valid training config: {exc}") from None

    def append_record(self, record: dict) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read_records(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def keep_records_before(self, epoch: int) -> None:
        """Drop the records of ``epoch`` and later: a resumed run computes them again."""
        if self.metrics_path.exists():
            kept = "".join(json.dumps(r) + "\n" for r in self.read_records() if r["epoch"] < epoch)
            _replace_with(self.metrics_path, lambda tmp: tmp.write_text(kept))

    def clear_records(self) -> None:
        self.metrics_path.unlink(missing_ok=True)

    def write_test_metrics(self, metrics: dict, table: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _replace_with(self.test_metrics_path, lambda tmp: tmp.write_text(json.dumps(metrics, indent=2)))
        _replace_with(self.test_table_path, lambda tmp: tmp.write_text(table))

    def read_test_metrics(self) -> dict:
        return json.loads(self.test_metrics_path.read_text())

    def test_table(self) -> str | None:
        return self.test_table_path.read_text() if self.test_table_path.exists() else None

    def save_best_model(self, state_dict: dict) -> None:
        _replace_with(self.best_model_path, lambda tmp: torch.save(state_dict, tmp))

    def latest_checkpoint(self) -> Path | None:
        """The newest Ray Train checkpoint folder of the run (holding a TrainingState), if any."""
        found = [(torch.load(p, map_location="cpu", weights_only=False)["epoch"], p.parent)
                 for p in self.ray_storage.glob(f"**/checkpoint_*/{CHECKPOINT}")]
        return max(found, key=lambda item: item[0])[1] if found else None

    def remove_checkpoints(self) -> None:
        shutil.rmtree(self.ray_storage, ignore_errors=True)


@dataclass
class TrainedRun:
    """A training run's resolved config and model weights: ``state`` is the summed selection
    (best_model.pt, or a checkpoint's model); with per-task selection ``task_states`` holds the
    weights of each epoch some node task selected and ``task_epoch`` which task uses which."""

    config: TrainConfig
    state: dict
    source: Path
    task_states: dict[int, dict] = field(default_factory=dict)
    task_epoch: dict[str, int] = field(default_factory=dict)


def load_run(path: str | Path, select: str = "per_task") -> TrainedRun:
    """A run directory (its selected models) or a checkpoint (``state.pt`` or its folder) inside one.

    ``select="per_task"`` answers each node task with the weights of its own best validation epoch
    where the run recorded them (``selection.json``); ``"summed"``, a checkpoint, or a run from
    before per-task selection give one model for every task."""
    if select not in SELECT_MODES:
        raise FieldError("select", f"must be one of {', '.join(SELECT_MODES)}, not {select!r}")
    path = Path(path)
    recover(path)  # a replacing run that died between its renames
    if path.is_dir() and RunDir(path).config_path.exists():
        weights, run = RunDir(path).best_model_path, RunDir(path)
        if not weights.exists():
            raise GravitiError(f"{path}: no {BEST_MODEL} (the run did not finish); pass one of its checkpoints' {CHECKPOINT}")
    elif path.is_file() or (path / CHECKPOINT).is_file():
        weights, select = (path if path.is_file() else path / CHECKPOINT), "summed"
        run = next((RunDir(d) for d in weights.parents if RunDir(d).config_path.exists()), None)
        if run is None:
            raise GravitiError(f"{weights}: no {CONFIG} in any folder above it; is it inside a graviti train run?")
    else:
        raise GravitiError(f"{path}: not a training run (no {CONFIG}) or a checkpoint ({CHECKPOINT})")
    config = run.read_config()
    state = _load_weights(weights)
    if isinstance(state, dict) and "model" in state and "optimizer" in state:
        state = state["model"]  # a training checkpoint
    trained = TrainedRun(config, state, weights)
    selection = run.read_selection() if select == "per_task" else None
    if selection is not None:
        trained.task_epoch = {task: choice.epoch for task, choice in selection.tasks.items()}
        trained.task_states = {epoch: _load_weights(run.task_best_path(epoch)) for epoch in set(trained.task_epoch.values())}
    return trained


def _load_weights(path: Path) -> dict:
    if not path.exists():
        raise GravitiError(f"{path}: missing (the run's selection names it); pass --select summed to use "
                           f"{BEST_MODEL} for every task")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a bad file
        raise GravitiError(f"{path}: cannot load model weights: {exc}") from None
