"""``graviti tune``: a hyper-parameter search over any training setting, on Ray Tune.

Each trial is a normal ``graviti train`` run (Ray Train + DDP inside a Tune trial, its per-epoch
reports forwarded to Tune by Ray's ``TuneReportCallback``) in its own run directory under the
study; an ASHA scheduler stops the trials that fall behind on the run's validation score (the
score the run selects its summed model by: the early-stopping metric, or minus the summed
validation loss). The first trial is the base config itself, so the best is never worse than it.
Trials run side by side as the cluster's CPUs allow (one per ``num_workers`` CPUs).

A study directory (this module owns its names)::

    trials/<trial id>/   # a run directory per trial (train/run_dir.py)
    trials.json          # every trial: its settings, best score, epochs run, status
    trials.md, trials.png
    best.yaml            # the base config with the best trial's settings; `graviti train best.yaml` trains it
    .ray-tune/           # Ray Tune's own experiment state
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
from pathlib import Path

import ray
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from graviti_dist.errors import FieldError, GravitiError
from graviti_dist.runtime.ray_cluster import ray_session
from graviti_dist.train.config import TrainConfig, check_against_partitions, set_dotted
from graviti_dist.train.run_dir import RunDir

log = logging.getLogger(__name__)

TRIALS_DIR, SUMMARY_JSON, SUMMARY_MD, SUMMARY_PLOT, BEST_CONFIG, RAY_DIR = (
    "trials", "trials.json", "trials.md", "trials.png", "best.yaml", ".ray-tune")
SCORE = "val_score"  # the run's selection score per evaluated epoch (train/trainer.py:_select), higher is better


class Distribution(BaseModel):
    """One setting's search range: exactly one of ``choice`` (values), ``uniform``, ``loguniform``
    ([low, high] floats) or ``randint`` ([low, high) integers)."""

    model_config = ConfigDict(extra="forbid")
    choice: list | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Distribution":
        given = [k for k in ("choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of choice, uniform, loguniform, randint (got {given or 'none'})")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        for kind in ("uniform", "loguniform", "randint"):
            bounds = getattr(self, kind)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{kind}: low must be below high, got {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform: low must be positive")
        return self

    def samples(self) -> list:
        """Values that must all be valid settings: every choice, or both ends of a range."""
        if self.choice is not None:
            return list(self.choice)
        low, high = self.uniform or self.loguniform or self.randint
        return [low, high - 1] if self.randint else [low, high]

    def to_tune(self):
        if self.choice is not None:
            return tune.choice(self.choice)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        return tune.randint(*self.randint)


def load_search_space(path: str | Path, base: dict) -> dict[str, Distribution]:
    """The search space file (``setting.path: {choice|uniform|loguniform|randint: ...}``), each
    setting checked against the base config with every value it may take."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise FieldError("search", f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise FieldError("search", f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise FieldError("search", f"{path}: expected a mapping of settings to ranges, e.g. optim.lr: {{loguniform: [1e-4, 1e-2]}}")
    space = {}
    for key, spec in raw.items():
        try:
            space[str(key)] = Distribution.model_validate(spec)
        except ValidationError as exc:
            raise FieldError("search", f"{path}: {key}: {exc.errors()[0]['msg']}") from None
        for value in space[str(key)].samples():
            _settings(base, {str(key): value}, f"{path}: {key}={value!r}")
    return space


def _settings(base: dict, params: dict, where: str) -> TrainConfig:
    raw = copy.deepcopy(base)
    for key, value in params.items():
        set_dotted(raw, key, value)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise FieldError("search", f"{where}: {'.'.join(str(p) for p in error['loc'])}: {error['msg']}") from None


class StudyDir:
    """The files of a study directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()

    def trial_dir(self, trial_id: str) -> Path:
        return self.root / TRIALS_DIR / trial_id

    @property
    def best_config(self) -> Path:
        return self.root / BEST_CONFIG

    @property
    def summary_json(self) -> Path:
        return self.root / SUMMARY_JSON

    @property
    def summary_md(self) -> Path:
        return self.root / SUMMARY_MD

    @property
    def summary_plot(self) -> Path:
        return self.root / SUMMARY_PLOT

    @property
    def ray_storage(self) -> Path:
        return self.root / RAY_DIR

    def read_summary(self) -> list[dict]:
        return json.loads(self.summary_json.read_text())["trials"]


def run_study(base: dict, space: dict[str, Distribution], study: str | Path, trials: int, *, grace_epochs: int = 1,
              address: str | None = None, overwrite: bool = False) -> list[dict]:
    """Search ``space`` around the config ``base`` (a raw mapping, as the YAML reads) with ``trials``
    trials; returns the trials, best first (also written to the study directory)."""
    if trials < 1:
        raise FieldError("trials", f"must be at least 1, got {trials}")
    config = _settings(base, {}, "config")
    if not 1 <= grace_epochs <= config.epochs:
        raise FieldError("grace_epochs", f"must be between 1 and the config's epochs ({config.epochs}), got {grace_epochs}")
    check_against_partitions(config)
    out = StudyDir(study)
    _prepare(out, overwrite)
    defaults = {key: _current(config, key) for key in space}
    # With the dashboard: ASHA ends a trial by killing it, and Ray Train frees the killed run's worker
    # CPUs only once its placement-group cleaner sees, through the State API the dashboard serves,
    # that the run's controller is gone; without it the next trial waited for those CPUs forever.
    with ray_session(address, num_threads=config.threads_per_worker or 1, dashboard=True):
        concurrent = max(1, int(ray.cluster_resources().get("CPU", 1)) // config.num_workers)
        lines = _TrialLines(config.epochs)
        tuner = tune.Tuner(
            # A trial's own process only drives its Ray Train run: it reserves memory, not a CPU, so a
            # trial and its workers fit where the workers alone do (a bundle cannot be empty).
            tune.with_resources(tune.with_parameters(_trial, base=base, study=str(out.root)), {"CPU": 0, "memory": 2**20}),
            param_space={key: dist.to_tune() for key, dist in space.items()},
            tune_config=tune.TuneConfig(
                num_samples=trials, metric=SCORE, mode="max", max_concurrent_trials=concurrent,
                # max_t past the last epoch: at max_t ASHA stops a trial, and one stopped on its last
                # report was killed before its test evaluation and outputs (seen as 'failed' in CI)
                scheduler=ASHAScheduler(max_t=config.epochs + 1, grace_period=grace_epochs, reduction_factor=2),
                # the base config is trial 1; the limit goes here: Tune applies max_concurrent_trials only to
                # searchers, and a third trial on 2 CPUs waited for its worker group forever
                search_alg=BasicVariantGenerator(points_to_evaluate=[defaults], max_concurrent=concurrent)),
            run_config=tune.RunConfig(storage_path=str(out.ray_storage), name="study", verbose=0,
                                      callbacks=[lines]))
        tuner.fit()
    rows = _summarise(out, list(space), defaults, config, failed=lines.failed)
    best = next((r for r in rows if r["best_score"] is not None), None)
    if best is None:
        raise GravitiError(f"tune: no trial finished an evaluated epoch; see {out.root / TRIALS_DIR}")
    best_raw = copy.deepcopy(base)
    for key, value in best["params"].items():
        set_dotted(best_raw, key, value)
    best_raw["out"] = str(out.root / "best")
    out.best_config.write_text(yaml.safe_dump(best_raw, sort_keys=False))
    return rows


def _current(config: TrainConfig, key: str):
    value = config.model_dump(mode="json")
    for part in key.split("."):
        value = value[part]
    return value


def _prepare(out: StudyDir, overwrite: bool) -> None:
    if out.root.exists() and any(out.root.iterdir()):
        if not overwrite:
            raise FieldError("out", f"{out.root} already holds a study; choose another --out or pass --overwrite")
        shutil.rmtree(out.root)
    out.root.mkdir(parents=True, exist_ok=True)


def _trial(params: dict, base: dict, study: str) -> None:
    """One trial, in a Tune trial actor: a normal run into the study's trial directory; every epoch
    evaluated, since ASHA compares trials on each epoch's score."""
    from graviti_dist.train.trainer import fit  # here: the trial actor, not the driver, pays for torch

    # A trial that starts as another is stopped finds its CPUs freed only a moment later; the
    # concurrency limit guarantees they come, so the workers wait for them rather than time out
    # (Ray Train's default 60 s start timeout, then retries).
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "3600")
    trial_id = tune.get_context().get_trial_id()
    raw = copy.deepcopy(base)
    for key, value in params.items():
        set_dotted(raw, key, value)
    raw.update(out=str(StudyDir(study).trial_dir(trial_id)), eval_every=1, progress=False)
    fit(TrainConfig.model_validate(raw))


class _TrialLines(tune.Callback):
    """One console line per trial that ends: its settings, best score and epochs run; remembers the
    trials that failed, which a run directory alone cannot tell from trials ASHA stopped."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.failed: set[str] = set()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trial, "finished" if trial.last_result.get("training_iteration", 0) >= self.epochs else "stopped by ASHA")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed.add(trial.trial_id)
        self._line(trial, "failed")

    def _line(self, trial, status: str) -> None:
        score = trial.metric_analysis.get(SCORE, {}).get("max")
        settings = ", ".join(f"{k}={_short(v)}" for k, v in trial.config.items())
        shown = "no evaluated epoch" if score is None else f"best score {score:.4f}"
        print(f"trial {trial.trial_id}: {status} after {trial.last_result.get('training_iteration', 0)} epochs, "
              f"{shown} ({settings})", flush=True)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _summarise(out: StudyDir, keys: list[str], defaults: dict, config: TrainConfig, *, failed: set[str]) -> list[dict]:
    """Every trial from its own run directory (its settings from the run's config), best score first;
    written as JSON, Markdown and a plot. ``failed``: the ids of trials Tune saw raise."""
    metric = config.early_stopping.metric if config.early_stopping else None
    rows = []
    for path in sorted((out.root / TRIALS_DIR).glob("*/")):
        run = RunDir(path)
        if not run.config_path.exists():
            continue
        trial_config = run.read_config()
        records = run.read_records() if run.metrics_path.exists() else []
        evaluated = [r for r in records if SCORE in r]
        best = max(evaluated, key=lambda r: r[SCORE], default=None)
        params = {k: _current(trial_config, k) for k in keys}
        rows.append({
            "trial": path.name, "params": params, "is_base_config": params == defaults,
            "best_score": best[SCORE] if best else None,
            "best_metric": best.get(f"val/{metric}") if metric and best else None,
            "best_epoch": best["epoch"] if best else None, "epochs_run": len(records),
            # Not from the records: ASHA's stop reaches a trial asynchronously, so one stopped after
            # epoch 2 of 3 may already have written epoch 3 when it is killed (seen in CI as 'failed').
            "status": _status(run, path.name, failed),
            "run": str(run.path), "scores": [r[SCORE] for r in evaluated]})
    rows.sort(key=lambda r: -math.inf if r["best_score"] is None else r["best_score"], reverse=True)
    out.summary_json.write_text(json.dumps({"metric": metric or "minus the summed validation loss", "score": SCORE,
                                            "failed_trials": len(failed), "trials": rows}, indent=2))
    out.summary_md.write_text(_table(rows, keys, metric))
    _plot(out, rows)
    return rows


def _status(run: RunDir, trial_id: str, failed: set[str]) -> str:
    if run.test_metrics_path.exists():
        return "finished"
    return "failed" if trial_id in failed else "stopped by ASHA"


def _table(rows: list[dict], keys: list[str], metric: str | None) -> str:
    what = f"`{metric}`" if metric else "minus the summed validation loss"
    lines = [f"Trials by best validation score ({what}; higher is better).", "",
             "| trial | " + " | ".join(f"`{k}`" for k in keys) + " | best score | best epoch | epochs run | status |",
             "|---|" + "---|" * (len(keys) + 4)]
    for r in rows:
        score = "n/a" if r["best_score"] is None else f"{r['best_score']:.4f}"
        base = " (base config)" if r["is_base_config"] else ""
        lines.append(f"| {r['trial']}{base} | " + " | ".join(_short(r["params"][k]) for k in keys)
                     + f" | {score} | {'' if r['best_epoch'] is None else r['best_epoch'] + 1} | {r['epochs_run']} | {r['status']} |")
    return "\n".join(lines) + "\n"


def _plot(out: StudyDir, rows: list[dict]) -> None:
    import matplotlib  # here: only a finished study pays for importing matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for r in rows:
        if r["scores"]:
            ax.plot(range(1, len(r["scores"]) + 1), r["scores"], marker="o", label=r["trial"])
    ax.set(xlabel="epoch", ylabel="validation score (higher is better)", title="trials")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.summary_plot, dpi=110)
    plt.close(fig)
