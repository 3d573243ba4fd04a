"""The multi-task model: one encoder shared by every task head, and the balanced loss."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import nn

from graviti_dist.model.balance import Balancer
from graviti_dist.model.block import Block
from graviti_dist.model.heads import TaskSpec, build_head
from graviti_dist.model.inputs import TypedFeatures


@dataclass
class LinkPairs:
    """A link task's examples, as positions among the seeds: P positives with K negatives each."""

    src: torch.Tensor  # (P,)
    pos: torch.Tensor  # (P,)
    neg: torch.Tensor  # (P, K)


@dataclass
class MiniBatch:
    """Everything one training step needs, as plain tensors (seeds = the last block's dst nodes)."""

    blocks: list[Block]
    features: TypedFeatures
    seed_type: torch.Tensor  # (S,) node type id per seed
    labels: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # task -> (target, mask), per seed
    links: dict[str, LinkPairs] = field(default_factory=dict)

    @property
    def num_seeds(self) -> int:
        return int(self.seed_type.numel())

    def to(self, device, non_blocking: bool = False) -> "MiniBatch":
        return self.apply(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "MiniBatch":
        """A copy in page-locked memory, so that ``to(cuda, non_blocking=True)`` is a true async copy."""
        return self.apply(torch.Tensor.pin_memory)

    def apply(self, move) -> "MiniBatch":
        """A copy with ``move`` applied to every tensor."""
        return MiniBatch(
            [b.apply(move) for b in self.blocks],
            self.features.apply(move),
            move(self.seed_type),
            {k: (move(t), move(m)) for k, (t, m) in self.labels.items()},
            {k: replace(p, **{f.name: move(getattr(p, f.name)) for f in fields(p)}) for k, p in self.links.items()},
        )


class MultiTaskModel(nn.Module):
    """Encoder + one head per task + a loss balancer. Knows nothing of DGL, Ray or DDP."""

    def __init__(self, encoder: nn.Module, tasks: list[TaskSpec], balancer: Balancer):
        super().__init__()
        self.encoder = encoder
        self.specs = {spec.name: spec for spec in tasks}
        # A grouped encoder (task_groups.py) gives each head its own group's columns only.
        self.heads = nn.ModuleDict({spec.name: build_head(spec, getattr(encoder, "group_dim", encoder.out_dim))
                                    for spec in tasks})
        self.balancer = balancer
        # Set for data-parallel training: every parameter joins each step's loss (see forward).
        self.every_parameter_in_loss = False

    def forward(self, batch: MiniBatch, with_loss: bool = False):
        """Seed embeddings and every task's raw head output; with ``with_loss``, (total, losses, outputs).

        The loss is computed inside forward so that DDP sees the balancer's
        learned parameters as part of the step.
        """
        if with_loss:
            _, outputs = self(batch)
            losses = self.task_losses(batch, outputs)
            total = self.balancer(losses, self.encoder.shared_parameters())
            if self.every_parameter_in_loss and self.training:
                total = total + self._zero_of_every_parameter()
            return total, losses, outputs
        emb = self.encoder(batch.blocks, batch.features)
        outputs: dict[str, object] = {}
        for name, head in self.heads.items():
            own = self.task_embedding(name, emb)
            if self.specs[name].is_link:
                pairs = batch.links.get(name)
                if pairs is None:
                    pairs = LinkPairs(*(torch.zeros(s, dtype=torch.long, device=emb.device) for s in ((0,), (0,), (0, 1))))
                outputs[name] = head(own[pairs.src], own[pairs.pos], own[pairs.neg])
            else:
                outputs[name] = head(own)
        return emb, outputs

    def task_embedding(self, name: str, emb: torch.Tensor) -> torch.Tensor:
        """The columns of the model's embedding that task ``name``'s head reads (all, unless grouped)."""
        return emb[:, self.encoder.slice_of(name)] if hasattr(self.encoder, "slice_of") else emb

    def _zero_of_every_parameter(self) -> torch.Tensor:
        """0 that depends on every parameter. A batch may lack a node type (its input projection
        unused), and DDP then needs find_unused_parameters, a search of the autograd graph every
        step; one element of each parameter times 0 keeps them all in the graph, each with an
        all-zero gradient, for a few tiny ops. 2 workers on 2 cores, 20k-user crawl: 7,402 seeds/s
        against 6,840 with the search (median epoch; ARCHITECTURE.md, "Training")."""
        return 0.0 * torch.stack([p.view(-1)[0] for p in self.parameters() if p.requires_grad]).sum()

    def task_losses(self, batch: MiniBatch, outputs: dict[str, object]) -> dict[str, torch.Tensor]:
        """Per-task losses; a seed without a label for a task (mask False) adds nothing to it."""
        losses = {}
        for name, head in self.heads.items():
            if self.specs[name].is_link:
                losses[name] = head.loss(outputs[name])
            else:
                target, mask = batch.labels[name]
                losses[name] = head.loss(outputs[name], target, mask)
        return losses

    def loss(self, batch: MiniBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, object]]:
        """(balanced total, per-task losses, head outputs) for one batch."""
        return self(batch, with_loss=True)
