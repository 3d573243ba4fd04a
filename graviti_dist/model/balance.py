"""Loss balancing across tasks: static, uncertainty (Kendall et al. 2018), DWA (Liu et al. 2019),
GradNorm (Chen et al. 2018).

A balancer turns per-task losses into the one loss to minimise and reports
each task's effective weight, which training logs every epoch.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Balancer(nn.Module):
    def __init__(self, tasks: list[str], weights: dict[str, float] | None = None):
        super().__init__()
        self.tasks = list(tasks)
        weights = weights or {}
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"loss weights given for unknown task(s) {unknown}")
        self.register_buffer("static", torch.tensor([float(weights.get(t, 1.0)) for t in self.tasks]))

    def forward(self, losses: dict[str, torch.Tensor], shared: list[nn.Parameter] | None = None) -> torch.Tensor:
        """The loss to minimise; ``shared`` are the encoder's last-layer weights (GradNorm reads
        the tasks' gradients there; the others ignore them)."""
        raise NotImplementedError

    def effective_weights(self) -> dict[str, float]:
        raise NotImplementedError

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Called once per epoch with each task's mean training loss."""


class StaticBalancer(Balancer):
    def forward(self, losses, shared=None):
        return sum(self.static[i] * losses[t] for i, t in enumerate(self.tasks) if t in losses)

    def effective_weights(self):
        return {t: float(w) for t, w in zip(self.tasks, self.static)}


class UncertaintyBalancer(Balancer):
    """Learned homoscedastic uncertainty: L = sum_i exp(-s_i) * w_i * L_i + s_i / 2, s_i = log sigma_i^2.

    A noisy task learns a large s_i and so a small weight, instead of a
    hand-tuned one. The s_i are ordinary parameters updated by the optimiser.

    The learned factor exp(-s_i) is capped at ``max_weight``: its optimum is 1 / (2 L_i), so a
    task that is all but solved (loss -> 0) gets an unbounded weight. On Twitch, `language` and
    `partner` reached 50-600 by epoch 100, and in every uncapped 100-epoch run a slip of theirs
    knocked `views` and `days` off course (their losses up 3-7x at once); capped at 4, only the
    solved task's own loss wobbled (benchmarks/README.md, "Capped uncertainty weights").
    """

    def __init__(self, tasks, weights=None, max_weight: float = 4.0):
        super().__init__(tasks, weights)
        self.log_var = nn.Parameter(torch.zeros(len(self.tasks)))
        self.min_log_var = -math.log(max_weight)

    def _log_var(self) -> torch.Tensor:
        return self.log_var.clamp(min=self.min_log_var)

    def forward(self, losses, shared=None):
        log_var = self._log_var()
        total = log_var.sum() * 0.0
        for i, task in enumerate(self.tasks):
            if task in losses:
                total = total + torch.exp(-log_var[i]) * self.static[i] * losses[task] + 0.5 * log_var[i]
        return total

    def effective_weights(self):
        log_var = self._log_var().detach()
        return {t: float(torch.exp(-log_var[i]) * self.static[i]) for i, t in enumerate(self.tasks)}


class DWABalancer(Balancer):
    """Dynamic weight average: a task whose loss falls slowly gets more weight next epoch.

    w_i = K * softmax_i(r_i / T) with r_i = L_i(t-1) / L_i(t-2); equal weights for the first two epochs.
    """

    def __init__(self, tasks, weights=None, temperature: float = 2.0):
        super().__init__(tasks, weights)
        self.temperature = temperature
        self.register_buffer("history", torch.full((2, len(self.tasks)), float("nan")))
        self.register_buffer("weights", torch.ones(len(self.tasks)))

    def forward(self, losses, shared=None):
        return sum(self.weights[i] * self.static[i] * losses[t] for i, t in enumerate(self.tasks) if t in losses)

    def end_epoch(self, mean_losses):
        latest = torch.tensor([float(mean_losses.get(t, math.nan)) for t in self.tasks], device=self.history.device)
        self.history = torch.stack([self.history[1], latest])
        if torch.isnan(self.history).any():
            return
        ratio = self.history[1] / self.history[0].clamp(min=1e-12)
        self.weights = len(self.tasks) * torch.softmax(ratio / self.temperature, 0)

    def effective_weights(self):
        return {t: float(self.weights[i] * self.static[i]) for i, t in enumerate(self.tasks)}


class GradNormBalancer(Balancer):
    """GradNorm: learned weights that keep each task's gradient norm at the encoder's last layer
    in proportion to how slowly its loss falls.

    Per step, with G_i = w_i * ||d L_i / d W|| (W: the last layer's weights), r_i = (L_i / L_i(0)) /
    mean_j (L_j / L_j(0)) and the target G_avg * r_i ** alpha held constant, the weights minimise
    sum_i |G_i - target_i| while the model minimises sum_i w_i L_i (w held constant there). The
    weights are T * softmax(theta): positive and summing to the number of tasks T at every step,
    which is the paper's renormalisation. L_i(0) is a task's first non-zero training loss. The
    norms cost one extra partial backward per task (heads and last layer only).
    """

    def __init__(self, tasks, weights=None, alpha: float = 1.5):
        super().__init__(tasks, weights)
        self.alpha = alpha
        self.logits = nn.Parameter(torch.zeros(len(self.tasks)))
        self.register_buffer("initial", torch.full((len(self.tasks),), float("nan")))

    def weights(self) -> torch.Tensor:
        return len(self.tasks) * torch.softmax(self.logits, 0)

    def forward(self, losses, shared=None):
        w = self.weights()
        present = [i for i, t in enumerate(self.tasks) if t in losses]
        total = 0.0 * self.logits.sum() + sum(w[i].detach() * self.static[i] * losses[self.tasks[i]] for i in present)
        if not (self.training and shared and torch.is_grad_enabled()):
            return total
        norms = self._gradient_norms(losses, present, shared)
        active = norms > 0
        if not bool(active.any()):
            return total
        zero = torch.zeros((), device=w.device)
        current = torch.stack([losses[t].detach().float() if t in losses else zero for t in self.tasks])
        first = active & torch.isnan(self.initial) & (current > 0)
        self.initial = torch.where(first, current, self.initial)
        rate = torch.where(torch.isnan(self.initial), torch.ones_like(current), current / self.initial)
        rate = rate / rate[active].mean().clamp(min=1e-12)
        norm_w = w * norms
        target = (norm_w[active].mean() * rate ** self.alpha).detach()
        return total + (norm_w - target).abs()[active].sum()

    def _gradient_norms(self, losses, present: list[int], shared: list[nn.Parameter]) -> torch.Tensor:
        norms = torch.zeros(len(self.tasks), device=self.logits.device)
        for i in present:
            loss = losses[self.tasks[i]]
            if not loss.requires_grad:
                continue
            grads = torch.autograd.grad(self.static[i] * loss, shared, retain_graph=True, allow_unused=True)
            squares = [g.pow(2).sum() for g in grads if g is not None]
            if squares:
                norms[i] = torch.stack(squares).sum().sqrt()
        return norms

    def effective_weights(self):
        return {t: float(w * s) for t, w, s in zip(self.tasks, self.weights().detach(), self.static)}


BALANCERS = {"static": StaticBalancer, "uncertainty": UncertaintyBalancer, "dwa": DWABalancer, "gradnorm": GradNormBalancer}


def build_balancer(kind: str, tasks: list[str], weights: dict[str, float] | None = None,
                   max_weight: float | None = None) -> Balancer:
    """The balancer ``kind``; ``max_weight`` caps uncertainty's learned factor (its default if None)."""
    if kind not in BALANCERS:
        raise ValueError(f"loss balancing must be one of {sorted(BALANCERS)}, not {kind!r}")
    if kind == "uncertainty" and max_weight is not None:
        return UncertaintyBalancer(tasks, weights, max_weight)
    return BALANCERS[kind](tasks, weights)
