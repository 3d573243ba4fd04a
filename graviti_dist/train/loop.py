"""The per-worker training loop, runnable without Ray: the one epoch loop that both
:func:`fit_local` (one process) and the Ray Train worker (``trainer.py``) run.

Builds the multi-task model for a partition's tasks, runs epochs of
minibatches and evaluates with exact metrics; ``gather`` lets the same code
reduce metrics across DDP workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from graviti_dist.errors import GravitiError
from graviti_dist.model import (EncoderConfig, MiniBatch, MultiTaskModel, TaskGroupEncoder, TaskSpec, build_balancer,
                                build_encoder, resolve_task_groups)
from graviti_dist.sampling import MinibatchStream, NodeMinibatches, WorkerPartition, to_model
from graviti_dist.train.metrics import Gather, TaskMetric, single_worker


def task_specs(part: WorkerPartition, head_hidden: int = 0) -> list[TaskSpec]:
    """Head specs for the partition's tasks (node tasks with the partitioner's training statistics and
    ``head_hidden``, link tasks)."""
    type_id = {name: i for i, name in enumerate(part.ntypes)}
    specs = []
    for task in part.manifest.tasks:
        if task.is_link:
            relation = part.manifest.relation(task.relation)
            specs.append(TaskSpec(name=task.name, type="link", node_type=type_id[relation.src],
                                  dst_node_type=type_id[relation.dst]))
            continue
        specs.append(TaskSpec(
            name=task.name, type=task.type, node_type=type_id[task.node_type],
            num_classes=len(task.classes or []) or (task.num_classes or 2), width=task.width or 1,
            target_mean=task.train_mean if task.train_mean is not None else 0.0,
            target_std=task.train_std if task.train_std is not None else 1.0, hidden=head_hidden,
        ))
    return specs


def build_model(part: WorkerPartition, encoder: EncoderConfig, balancing: str = "static", tasks: list[str] | None = None,
                weights: dict[str, float] | None = None, head_hidden: int = 0,
                task_groups: list[list[str]] | None = None, max_weight: float | None = None) -> MultiTaskModel:
    """The multi-task model for the partition's node tasks (or the ``tasks`` subset), weights into the
    balancer (``max_weight``: uncertainty's cap); with ``task_groups`` (``model.task_groups``) an encoder per group."""
    specs = [s for s in task_specs(part, head_hidden) if tasks is None or s.name in tasks]
    relations = len(part.manifest.etypes) if encoder.typed_relations else 1
    edge_inputs = part.manifest.edge_inputs
    edge_feat_dim = edge_inputs.width if encoder.edge_inputs and edge_inputs is not None else 0
    encoder = EncoderConfig(**{**encoder.__dict__, "num_relations": relations, "edge_feat_dim": edge_feat_dim})
    names = [s.name for s in specs]
    groups = resolve_task_groups(task_groups or [], names)
    built = TaskGroupEncoder([build_encoder(encoder, part.inputs) for _ in groups], groups) if groups \
        else build_encoder(encoder, part.inputs)
    return MultiTaskModel(built, specs, build_balancer(balancing, names, weights, max_weight))


def train_step(model: torch.nn.Module, batch: MiniBatch, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """One optimiser step on a batch already on the model's device; ``model`` may be DDP-wrapped
    (the loss is computed inside its forward). Returns the per-task losses."""
    total, losses, _ = model(batch, with_loss=True)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return losses


@dataclass
class EpochTotals:
    """What one worker's epoch adds up: steps, node-task seeds and each task's summed loss."""

    steps: int = 0
    seeds: int = 0
    loss_sums: dict[str, torch.Tensor] = field(default_factory=dict)  # on the device: no per-step wait for the GPU
    empty_steps: int = 0  # steps with no seeds and no link pairs (a worker without training seeds; MinibatchStream.epoch)

    def add(self, batch: MiniBatch, losses: dict[str, torch.Tensor]) -> None:
        self.steps += 1
        self.seeds += batch.num_seeds
        self.empty_steps += batch.num_seeds == 0 and not batch.links
        for name, loss in losses.items():
            self.loss_sums[name] = self.loss_sums.get(name, 0.0) + loss.detach()

    def mean_losses(self) -> dict[str, float]:
        """Each task's loss per step that had something to learn from (empty steps add zero)."""
        return {name: float(value) / max(self.steps - self.empty_steps, 1) for name, value in self.loss_sums.items()}


def train_epoch(model: torch.nn.Module, batches: Iterable[MiniBatch], optimizer: torch.optim.Optimizer,
                device: torch.device | str = "cpu", on_step: Callable[[], None] | None = None,
                ahead: bool = False) -> EpochTotals:
    """One pass over ``batches``: a step each (``model`` may be DDP-wrapped), ``on_step`` after each;
    ``ahead`` samples the next batches in a thread (see ``sampling.to_model``)."""
    model.train()
    totals = EpochTotals()
    for batch in to_model(batches, device, ahead):
        totals.add(batch, train_step(model, batch, optimizer))
        if on_step is not None:
            on_step()
    return totals


def check_finite_losses(losses: dict[str, float], epoch: int) -> None:
    """Stop a run whose training loss went non-finite, naming the tasks and the epoch: a NaN model must
    never be checkpointed or published (it once was, and served null probabilities with status 200)."""
    bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
    if bad:
        tasks = ", ".join(f"{name} is {value}" for name, value in sorted(bad.items()))
        raise GravitiError(f"training diverged in epoch {epoch}: the loss of {tasks}; nothing of this epoch was saved "
                           "(lower optim.lr, or look for non-finite inputs with graviti inspect)")


def make_optimizer(params, lr: float, weight_decay: float = 0.0, device: torch.device | str = "cpu") -> torch.optim.Optimizer:
    """Adam with its fused kernel on CPU and CUDA (one pass over every parameter instead of several
    kernels per tensor: 0.2 vs 1.0 ms per step on the CPU here)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=torch.device(device).type in ("cpu", "cuda"))


@torch.no_grad()
def evaluate(model: MultiTaskModel, batches: Iterable[MiniBatch], device: torch.device | str = "cpu",
             gather: Gather = single_worker) -> dict[str, dict[str, float]]:
    """Metrics of every task over ``batches`` (labelled seeds of their split; link tasks: the split's
    edges ranked against their negatives), each with the head's ``loss`` there; ``gather`` collects
    every worker's predictions first, so the metrics are exact under DDP."""
    model.eval()
    metrics = {name: TaskMetric(spec.type, spec.num_classes) for name, spec in model.specs.items()}
    for batch in batches:
        batch = batch.to(device)
        _, outputs = model(batch)
        for name, metric in metrics.items():
            head = model.heads[name]
            if model.specs[name].is_link:
                if name in batch.links:
                    metric.update(outputs[name])
                    metric.add_loss(head.loss(outputs[name]), outputs[name][0].numel())
                continue
            target, mask = batch.labels[name]
            metric.update(head.predict(outputs[name]), target, mask)
            metric.add_loss(head.loss(outputs[name], target, mask), int(mask.sum()))
    return {name: metric.compute(gather) for name, metric in metrics.items()}


def fit_local(part: WorkerPartition, encoder: EncoderConfig, *, epochs: int, fanouts: list[int], batch_size: int = 512,
              lr: float = 5e-3, seed: int = 0, balancing: str = "static", device: torch.device | str = "cpu",
              sampler_workers: int = 0) -> tuple[MultiTaskModel, dict]:
    """Train on one partition in this process (no Ray; CPU or one GPU) and return the model and its test metrics."""
    torch.manual_seed(seed)
    model = build_model(part, encoder, balancing).to(device)
    optimizer = make_optimizer(model.parameters(), lr, device=device)
    train = NodeMinibatches(part, fanouts, batch_size, "train", seed=seed)
    stream = MinibatchStream([train], workers=sampler_workers, pin_memory=torch.device(device).type == "cuda")
    history = []
    for _ in range(epochs):
        losses = train_epoch(model, stream.epoch(len(train)), optimizer, device).mean_losses()
        check_finite_losses(losses, len(history))
        model.balancer.end_epoch(losses)
        history.append(losses)
    test = NodeMinibatches(part, fanouts, batch_size, "test", shuffle=False)
    return model, {"test": evaluate(model, test, device), "history": history,
                   "final_loss": {k: v for k, v in history[-1].items() if not math.isnan(v)}}
