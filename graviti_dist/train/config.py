"""Training configuration: pydantic models validated up front, YAML loading and dotted overrides.

Imports nothing heavy, so a config can be checked without DGL, Ray or a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from graviti_dist.errors import GravitiError
from graviti_dist.partition import Manifest, PartitionSet, read_manifest  # the face is lazy: pydantic and pyarrow only


class _Strict(BaseModel):
    # Unknown keys are typos; inf and NaN are never a setting (optim.lr=.inf trained to NaN and exited 0).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(_Strict):
    kind: Literal["gat", "mlp"] = Field("gat", description="mlp: the features-only baseline with the same heads")
    hidden: int = Field(64, ge=1, description="width per head and of the embedding")
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    attn_dropout: float = Field(0.0, ge=0, lt=1)
    gatv2: bool = False
    relations: bool = Field(True, description="a learned embedding per edge type in attention and messages; "
                                              "false: a plain GAT that ignores edge types")
    # On Twitch, layer norm between GAT layers took views RMSE from 1.42 to 1.10 after 10 epochs.
    layer_norm: bool = Field(True, description="layer norm after each hidden GAT layer")
    residual: bool = Field(True, description="a residual connection around each GAT layer (a linear map where widths differ)")
    # Off: on Twitch (benchmarks/results/quality-multitask.json, 3 seeds) they moved mature ROC-AUC by
    # -0.012, views RMSE by +0.023 and days RMSE by -8.9, each within one sd: no measured gain.
    degree_features: bool = Field(False, description="each node's log1p in-degree per relation (the partitioner's, "
                                                      "standardised over the set) as inputs beside its features")
    edge_inputs: bool = Field(True, description="each edge's age (against the crawl's latest ts) and weight, where "
                                                "the set's relations have them, in attention and messages")
    head_hidden: int = Field(0, ge=0, description="a hidden layer of this width (ELU) in each node task's head; "
                                                  "0: linear heads on the shared embedding")
    fanouts: list[int] = Field(default_factory=lambda: [10, 10], min_length=1,
                               description="neighbours sampled per layer, outermost last; one GAT layer each")
    task_groups: list[list[str]] = Field(default_factory=list, description=(
        "groups of tasks that share an encoder, e.g. [[views, mature], [days]]; tasks no group names share one "
        "more; [] (default): every task shares one encoder. Each group costs one encoder's compute"))

    @model_validator(mode="after")
    def _positive_fanouts(self) -> "ModelConfig":
        if any(f < 1 for f in self.fanouts):
            raise ValueError("fanouts must be positive")
        return self

    @model_validator(mode="after")
    def _tasks_in_one_group(self) -> "ModelConfig":
        named = [task for group in self.task_groups for task in group]
        if any(not group for group in self.task_groups):
            raise ValueError("task_groups: a group names no task")
        twice = sorted({task for task in named if named.count(task) > 1})
        if twice:
            raise ValueError(f"task_groups: {', '.join(twice)} in more than one group")
        return self


class OptimConfig(_Strict):
    lr: float = Field(5e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["none", "cosine"] = "none"
    average_epochs: float = Field(0.0, ge=0, description=(
        "evaluate, select and save an exponential moving average of the weights over about this many epochs "
        "(train/averaging.py); 0: the weights of the epoch's last step"))


class EarlyStopping(_Strict):
    metric: str = Field(description="TASK/METRIC on the validation split, e.g. interest/accuracy")
    mode: Literal["max", "min"] = "max"
    patience: int = Field(3, ge=1)


class TrackingConfig(_Strict):
    mlflow: str | None = Field(None, description="an MLflow tracking URI (sqlite:///mlflow.db, http://HOST:5000); "
                                                 "needs the tracking extra")
    tensorboard: str | None = Field(None, description="a TensorBoard log directory; needs the tracking extra")
    experiment: str = Field("graviti", min_length=1, description="the MLflow experiment the run is logged under")


class TrainConfig(_Strict):
    partitions: str = Field(description="a partition set from graviti partition")
    out: str = Field("runs/train", description="run directory: config, epoch records, plots, checkpoints (train/run_dir.py)")
    tasks: list[str] | None = Field(None, min_length=1, description="subset of the partition set's tasks (default: all)")
    task_weights: dict[str, float] = Field(default_factory=dict)
    balancing: Literal["static", "uncertainty", "dwa", "gradnorm"] = "uncertainty"
    uncertainty_max_weight: float = Field(4.0, gt=0, description=(
        "cap on the weight uncertainty balancing learns for a task (times its task_weights entry): an all but "
        "solved task's weight otherwise grows without bound, and the runs diverged for a few epochs"))
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    batch_size: int = Field(512, ge=1, description="node-task seeds per step")
    link_pairs: int = Field(128, ge=1, description="link-task positive edges per step (with link_negatives each)")
    link_negatives: int = Field(5, ge=1, description="negative destinations drawn per positive edge")
    link_eval_negatives: int = Field(50, ge=1, description="negatives each validation/test edge is ranked against (MRR, hits@10); "
                                                               "the edges of one step share them")
    epochs: int = Field(5, ge=1)
    num_workers: int = Field(2, ge=1)
    device: Literal["cpu", "cuda"] = "cpu"
    threads_per_worker: int | None = Field(None, ge=1, description="default: the machine's cores / workers")
    sampler_workers: int | None = Field(None, ge=0, description="sampling processes per worker (default 0: in the worker process)")
    sampling: Literal["auto", "local", "remote"] = Field(
        "auto", description="local: inside each worker's partitions (needs a halo as deep as the model); remote: "
                            "through the graph store on Ray, for sets with a shallower halo; auto: remote only then")
    eval_every: int = Field(1, ge=1)
    early_stopping: EarlyStopping | None = None
    tracking: TrackingConfig = Field(default_factory=TrackingConfig,
                                     description="experiment tracking: the config, each epoch's record, the test metrics")
    seed: int = 0
    max_failures: int = Field(0, ge=0, description="Ray Train restarts after a worker dies")
    keep_checkpoints: int = Field(2, ge=1, description="newest Ray Train checkpoints kept (each holds the best model so far)")
    resume_from: str | None = Field(None, description="a checkpoint folder to continue from (set by graviti train --resume)")
    run_id: str | None = Field(None, description="names this run's graph-store actors (set by graviti train)")
    progress: bool = Field(False, description="a per-step progress bar from rank 0 (on by itself in a terminal)")
    build_dir: str | None = Field(None, description="set by graviti train --overwrite: where the new run is built "
                                                    "before it replaces the one at out (never recorded in the run)")

    def trains(self, task: str) -> bool:
        """Whether the run trains ``task`` of its partition set (``tasks`` unset: every task)."""
        return self.tasks is None or task in self.tasks


def _errors(exc: ValidationError, source: str) -> GravitiError:
    lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()]
    return GravitiError(f"{source}: invalid training config:\n" + "\n".join(lines))


def set_dotted(tree: dict, dotted: str, value) -> None:
    """``tree[a][b] = value`` for ``dotted`` ``a.b`` (a --set or a search-space key)."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise GravitiError(f"--set {dotted}: {key!r} is not a section")
    node[keys[-1]] = value


def load_train_config(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> TrainConfig:
    """Read YAML (or start from ``base``), apply ``key.sub=value`` overrides (values parsed as YAML), validate."""
    raw: dict = dict(base or {})
    source = "config"
    if path is not None:
        path, source = Path(path), str(path)
        if not path.is_file():
            raise GravitiError(f"{path}: training config not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise GravitiError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise GravitiError(f"{path}: expected a mapping of training settings")
        raw.update(loaded)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GravitiError(f"--set {item!r}: expected KEY=VALUE, e.g. model.hidden=32")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = str(getattr(exc, "problem", None) or exc).strip()
            raise GravitiError(f"--set {item!r}: the value is not valid YAML ({problem}); quote a string value, "
                               "e.g. --set 'name=\"a[b\"'") from None
        set_dotted(raw, key, parsed)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise _errors(exc, source) from None


def check_against_partitions(config: TrainConfig) -> Manifest:
    """Validate the config against the partition set's manifest; returns the manifest."""
    part_dir = Path(config.partitions)
    manifest = read_manifest(part_dir)
    PartitionSet(part_dir).verify_files(manifest)  # a damaged file is named here, not in a worker's traceback
    all_tasks = [t.name for t in manifest.tasks]
    for name in (config.tasks or []) + list(config.task_weights):
        if name not in all_tasks:
            raise GravitiError(f"tasks: {name!r} is not a task of {part_dir} (tasks there: {all_tasks})")
    hops = manifest.num_hops
    if len(config.model.fanouts) > hops and config.sampling == "local":
        raise GravitiError(f"model.fanouts: {len(config.model.fanouts)} layers need a halo of {len(config.model.fanouts)} "
                           f"hops to sample locally, but {part_dir} was partitioned with num_hops {hops} "
                           "(sampling: remote or auto samples beyond it through the graph store)")
    if sampling_mode(config, manifest) == "remote" and config.sampler_workers:
        raise GravitiError("sampler_workers: remote sampling runs in the training process (its requests overlap the "
                           "step in a thread); leave sampler_workers at 0")
    if config.model.degree_features and not manifest.structural:
        raise GravitiError(f"model.degree_features: {part_dir} was written without degree columns (an older "
                           "graviti partition); re-partition it with --overwrite, or set model.degree_features=false")
    for name in (task for group in config.model.task_groups for task in group):
        if name not in all_tasks:
            raise GravitiError(f"model.task_groups: {name!r} is not a task of {part_dir} (tasks there: {all_tasks})")
    if config.num_workers > manifest.num_parts:
        raise GravitiError(f"num_workers: {config.num_workers} workers but {part_dir} has only {manifest.num_parts} partitions")
    if config.early_stopping is not None:
        task, _, metric = config.early_stopping.metric.partition("/")
        if task not in all_tasks or not metric:
            raise GravitiError(f"early_stopping.metric: {config.early_stopping.metric!r} is not TASK/METRIC of a task")
    return manifest


# What a checkpoint's weights and balancer were shaped by: a resumed run must keep them.
# Everything else (epochs, lr, workers, dropout, early stopping, ...) may change on --resume.
_CHECKPOINT_SHAPE = ("partitions", "tasks", "balancing", "model.kind", "model.hidden", "model.heads", "model.gatv2",
                     "model.relations", "model.layer_norm", "model.residual", "model.fanouts",
                     "model.degree_features", "model.edge_inputs", "model.head_hidden", "model.task_groups")


def _dotted(config: TrainConfig, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def resume_conflicts(stored: TrainConfig, new: TrainConfig) -> list[str]:
    """The settings in which ``new`` differs from the run it would resume, where the checkpoint
    could not be loaded into the model ``new`` builds (one line per setting)."""
    return [f"{key} is {_dotted(stored, key)!r} in the run and {_dotted(new, key)!r} now"
            for key in _CHECKPOINT_SHAPE if _dotted(stored, key) != _dotted(new, key)]


def sampling_mode(config: TrainConfig, manifest: Manifest) -> str:
    """``local`` or ``remote``: ``auto`` samples remotely only when the model is deeper than the set's halo."""
    if config.sampling != "auto":
        return config.sampling
    return "remote" if len(config.model.fanouts) > manifest.num_hops else "local"


def encoder_config(config: TrainConfig):
    """The model package's EncoderConfig for a training config (imported lazily: torch is heavy)."""
    from graviti_dist.model import EncoderConfig

    m = config.model
    return EncoderConfig(kind=m.kind, hidden=m.hidden, heads=m.heads, layers=len(m.fanouts), dropout=m.dropout,
                         attn_dropout=m.attn_dropout, gatv2=m.gatv2, layer_norm=m.layer_norm,
                         residual=m.residual, typed_relations=m.relations, structural_inputs=m.degree_features,
                         edge_inputs=m.edge_inputs)
