"""Per-task metrics that are exact across distributed workers.

Node tasks gather every worker's predictions and targets before computing
(ROC-AUC and macro-F1 are not averages of per-worker values); link tasks
reduce sums of reciprocal ranks and hits. ``gather`` is any function that
returns the list of every worker's object (``torch.distributed.all_gather_object``
in training; the identity on one worker).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from sklearn import metrics as skm

Gather = Callable[[object], list]


def single_worker(obj: object) -> list:
    return [obj]


def torch_distributed_gather(obj: object) -> list:
    """all_gather_object over the default process group (or just ``[obj]`` without one)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


# Each task type's headline validation metric, on which per-task selection keeps a task's best epoch.
SELECTION_METRIC = {"binary": ("roc_auc", "max"), "multiclass": ("accuracy", "max"),
                    "multilabel": ("micro_roc_auc", "max"), "regression": ("rmse", "min"), "link": ("mrr", "max")}


class TaskMetric:
    """Accumulates one task's predictions over batches; :meth:`compute` gives its metrics."""

    def __init__(self, task_type: str, num_classes: int = 2, hits_k: int = 10):
        self.type, self.num_classes, self.hits_k = task_type, num_classes, hits_k
        self.preds: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.rr_sum = self.hits = self.count = 0.0
        self.loss_sum = self.loss_count = 0.0

    def add_loss(self, mean_loss: float, count: int) -> None:
        """The head's loss (its training objective) averaged over ``count`` items of this split; reported as ``loss``."""
        if count:
            self.loss_sum += float(mean_loss) * count
            self.loss_count += count

    def update(self, pred: torch.Tensor, target: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> None:
        """Node tasks: ``pred`` from the head's ``predict``; link tasks: ``pred`` = (pos, neg) scores."""
        if self.type == "link":
            # A NaN score ranks worst: a positive below every negative, a negative above the positive
            # (NaN compares false, which would rank a NaN positive first: MRR 1.0 for a diverged model).
            pos, neg = pred[0].nan_to_num(nan=-math.inf), pred[1].nan_to_num(nan=math.inf)
            # Optimistic ties would flatter a constant scorer; count ties as half above.
            rank = 1 + (neg > pos.unsqueeze(1)).sum(1).double() + 0.5 * (neg == pos.unsqueeze(1)).sum(1).double()
            self.rr_sum += float((1.0 / rank).sum())
            self.hits += float((rank <= self.hits_k).sum())
            self.count += pos.numel()
            return
        keep = mask.bool()
        self.preds.append(pred.detach()[keep].float().cpu().numpy())
        self.targets.append(target.detach()[keep].cpu().numpy())

    def compute(self, gather: Gather = single_worker) -> dict[str, float]:
        if self.type == "link":
            rr, hits, count, loss_sum, loss_count = (
                sum(x) for x in zip(*gather((self.rr_sum, self.hits, self.count, self.loss_sum, self.loss_count))))
            return {"mrr": rr / count if count else math.nan, f"hits@{self.hits_k}": hits / count if count else math.nan,
                    **_loss(loss_sum, loss_count), "count": int(count)}
        parts = gather((self.preds, self.targets, self.loss_sum, self.loss_count))
        preds = [p for worker in parts for p in worker[0]]
        targets = [t for worker in parts for t in worker[1]]
        if not preds or sum(len(p) for p in preds) == 0:
            return {"count": 0}
        pred, target = np.concatenate(preds), np.concatenate(targets)
        loss = _loss(sum(w[2] for w in parts), sum(w[3] for w in parts))
        return {**_node_metrics(self.type, pred, target, self.num_classes), **loss, "count": int(len(target))}


def _loss(total: float, count: float) -> dict[str, float]:
    return {"loss": total / count} if count else {}


def _safe(fn, *args, **kwargs) -> float:
    try:
        return float(fn(*args, **kwargs))
    except ValueError:  # e.g. one class only: AUC is undefined
        return math.nan


def _node_metrics(task_type: str, pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[str, float]:
    if task_type == "multiclass":
        labels = pred.argmax(1)
        return {"accuracy": float((labels == target).mean()),
                "macro_f1": float(skm.f1_score(target, labels, average="macro", labels=list(range(num_classes)), zero_division=0))}
    if task_type == "binary":
        return {"roc_auc": _safe(skm.roc_auc_score, target, pred), "avg_precision": _safe(skm.average_precision_score, target, pred),
                "f1": float(skm.f1_score(target.astype(int), (pred >= 0.5).astype(int), zero_division=0))}
    if task_type == "multilabel":
        return {"micro_roc_auc": _safe(skm.roc_auc_score, target, pred, average="micro"),
                "macro_f1": float(skm.f1_score(target.astype(int), (pred >= 0.5).astype(int), average="macro", zero_division=0))}
    if task_type == "regression":
        err = pred - target
        return {"rmse": float(np.sqrt((err ** 2).mean())), "mae": float(np.abs(err).mean())}
    raise ValueError(f"unknown task type {task_type!r}")
