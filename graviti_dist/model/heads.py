"""Task heads: one small module per task kind, found through a registry.

Every node head takes seed embeddings and a label mask: unlabelled seeds add
nothing to the loss (an all-unlabelled batch gives a zero loss that still
touches the head's parameters, so DDP sees the same graph on every worker).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TaskSpec:
    """What a head needs to know about its task; built from the crawl schema and training statistics."""

    name: str
    type: str  # multiclass | binary | multilabel | regression | link
    node_type: int = 0  # node type id of the labelled nodes (link: of the source nodes)
    num_classes: int = 2
    width: int = 1  # multilabel width
    pos_weight: float | None = None  # binary/multilabel: weight of positives in BCE
    loss: str = "mse"  # regression: mse | huber
    target_mean: float = 0.0  # regression: training-set statistics, for standardising targets
    target_std: float = 1.0
    dst_node_type: int = 0  # link: node type id of the destination nodes
    scorer: str = "dot"  # link: dot | mlp
    hidden: int = 0  # node tasks: width of the head's own hidden layer; 0, a linear head

    def __post_init__(self):
        if self.hidden < 0:
            raise ValueError(f"task {self.name!r}: head hidden width must be >= 0, not {self.hidden}")

    @property
    def is_link(self) -> bool:
        return self.type == "link"


HEADS: dict[str, type["TaskHead"]] = {}


def register(kind: str):
    def wrap(cls):
        HEADS[kind] = cls
        return cls
    return wrap


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; 0 (with a zero gradient) when nothing is labelled.

    Written without boolean indexing or ``mask.any()``: both wait for the GPU, and five task
    heads doing so every step stalled CUDA training. ``anchor`` keeps the graph connected.
    """
    picked = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return picked.sum() / mask.sum().clamp(min=1).to(values.dtype) + anchor.sum() * 0.0


def _labelled(target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``target`` with unlabelled rows zeroed, so that no NaN there can reach a gradient."""
    mask = mask.reshape(mask.shape + (1,) * (target.dim() - mask.dim()))
    return torch.where(mask, target, torch.zeros((), dtype=target.dtype, device=target.device))


def _output_map(emb_dim: int, outputs: int, hidden: int) -> nn.Module:
    """The head's map from the shared embedding: linear, or with ``hidden`` > 0 one hidden layer of its
    own (ELU), so that tasks which need different nonlinear reads of the embedding need not share one."""
    if not hidden:
        return nn.Linear(emb_dim, outputs)
    return nn.Sequential(nn.Linear(emb_dim, hidden), nn.ELU(), nn.Linear(hidden, outputs))


class TaskHead(nn.Module):
    def __init__(self, spec: TaskSpec, emb_dim: int):
        super().__init__()
        self.spec = spec

    def loss(self, out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        """Predictions in the task's units: class probabilities, probabilities, or values."""
        raise NotImplementedError


@register("multiclass")
class MulticlassHead(TaskHead):
    def __init__(self, spec: TaskSpec, emb_dim: int):
        super().__init__(spec, emb_dim)
        self.linear = _output_map(emb_dim, spec.num_classes, spec.hidden)

    def forward(self, emb):
        return self.linear(emb)

    def loss(self, out, target, mask):
        return _masked_mean(F.cross_entropy(out, target.long().clamp(min=0), reduction="none"), mask, out)

    def predict(self, out):
        return out.softmax(-1)


@register("binary")
class BinaryHead(TaskHead):
    def __init__(self, spec: TaskSpec, emb_dim: int):
        super().__init__(spec, emb_dim)
        self.linear = _output_map(emb_dim, 1, spec.hidden)
        self.register_buffer("pos_weight", torch.tensor(spec.pos_weight if spec.pos_weight else 1.0))

    def forward(self, emb):
        return self.linear(emb).squeeze(-1)

    def loss(self, out, target, mask):
        per_node = F.binary_cross_entropy_with_logits(out, _labelled(target.float(), mask), pos_weight=self.pos_weight,
                                                      reduction="none")
        return _masked_mean(per_node, mask, out)

    def predict(self, out):
        return torch.sigmoid(out)


@register("multilabel")
class MultilabelHead(BinaryHead):
    def __init__(self, spec: TaskSpec, emb_dim: int):
        TaskHead.__init__(self, spec, emb_dim)
        self.linear = _output_map(emb_dim, spec.width, spec.hidden)
        self.register_buffer("pos_weight", torch.full((spec.width,), spec.pos_weight if spec.pos_weight else 1.0))

    def forward(self, emb):
        return self.linear(emb)

    def loss(self, out, target, mask):
        per_label = F.binary_cross_entropy_with_logits(out, _labelled(target.float(), mask), pos_weight=self.pos_weight,
                                                       reduction="none")
        return _masked_mean(per_label.mean(-1), mask, out)


@register("regression")
class RegressionHead(TaskHead):
    """Trains on standardised targets; predicts in the task's own units."""

    def __init__(self, spec: TaskSpec, emb_dim: int):
        super().__init__(spec, emb_dim)
        if spec.loss not in ("mse", "huber"):
            raise ValueError(f"regression loss must be mse or huber, not {spec.loss!r}")
        self.linear = _output_map(emb_dim, 1, spec.hidden)
        self.register_buffer("mean", torch.tensor(float(spec.target_mean)))
        self.register_buffer("std", torch.tensor(float(spec.target_std) if spec.target_std > 0 else 1.0))

    def forward(self, emb):
        return self.linear(emb).squeeze(-1)

    def loss(self, out, target, mask):
        z = (_labelled(target.float(), mask) - self.mean) / self.std
        per_node = F.mse_loss(out, z, reduction="none") if self.spec.loss == "mse" else F.huber_loss(out, z, reduction="none")
        return _masked_mean(per_node, mask, out)

    def predict(self, out):
        return out * self.std + self.mean


@register("link")
class LinkHead(TaskHead):
    """Scores (source, destination) embedding pairs; trained against sampled negatives."""

    def __init__(self, spec: TaskSpec, emb_dim: int):
        super().__init__(spec, emb_dim)
        if spec.scorer not in ("dot", "mlp"):
            raise ValueError(f"link scorer must be dot or mlp, not {spec.scorer!r}")
        self.src_proj = nn.Linear(emb_dim, emb_dim)
        self.mlp = (nn.Sequential(nn.Linear(3 * emb_dim, emb_dim), nn.ELU(), nn.Linear(emb_dim, 1))
                    if spec.scorer == "mlp" else None)

    def score(self, src_emb: torch.Tensor, dst_emb: torch.Tensor) -> torch.Tensor:
        """Logit per pair; ``src_emb`` (..., D) broadcasts against ``dst_emb`` (..., D)."""
        s = self.src_proj(src_emb)
        if self.mlp is None:
            return (s * dst_emb).sum(-1)
        s, d = torch.broadcast_tensors(s, dst_emb)
        return self.mlp(torch.cat([s, d, s * d], -1)).squeeze(-1)

    def forward(self, src_emb: torch.Tensor, pos_emb: torch.Tensor, neg_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive logits (P,), negative logits (P, K)) for P positives with K negatives each."""
        return self.score(src_emb, pos_emb), self.score(src_emb.unsqueeze(1), neg_emb)

    def loss(self, out, target=None, mask=None):
        pos, neg = out
        if pos.numel() == 0:
            return sum(p.sum() for p in self.parameters()) * 0.0
        return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
                + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))

    def predict(self, out):
        pos, neg = out
        return torch.sigmoid(pos), torch.sigmoid(neg)


def build_head(spec: TaskSpec, emb_dim: int) -> TaskHead:
    if spec.type not in HEADS:
        raise ValueError(f"task {spec.name!r}: no head for type {spec.type!r} (known: {sorted(HEADS)})")
    return HEADS[spec.type](spec, emb_dim)
