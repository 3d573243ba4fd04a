"""Task groups: one encoder per group of tasks that learn well together, in one model and one run.

Tasks that pull a shared encoder in different directions learn worse together
than apart (negative transfer; Standley et al., 2020, "Which tasks should be
learned together in multi-task learning?"). On Twitch, ``days`` in the same
encoder as ``views`` cost ``views`` 0.06-0.18 RMSE while ``views`` and
``mature`` together beat both single-task models (benchmarks/README.md,
"Task groups"). A group is an encoder of the configured shape; the model's
embedding is the groups' embeddings side by side, and each task's head reads
its own group's slice. Cost: one encoder's compute and parameters per group.

The grouped encoder keeps the single encoder's interface (``project``,
``apply_layer``, ``out_dim``), so layer-wise inference runs it unchanged: every
layer's input is the groups' inputs side by side, split evenly (every group has
the same shape).
"""

from __future__ import annotations

import torch
from torch import nn

from graviti_dist.model.block import Block
from graviti_dist.model.inputs import TypedFeatures


class TaskGroupEncoder(nn.Module):
    """Encoders side by side, one per group of task names; ``slice_of(task)`` is the task's columns."""

    def __init__(self, encoders: list[nn.Module], groups: list[list[str]]):
        super().__init__()
        if len(encoders) != len(groups) or len(groups) < 2:
            raise ValueError(f"need one encoder per group and at least 2 groups, got {len(encoders)} and {len(groups)}")
        self.groups = [list(g) for g in groups]
        self.encoders = nn.ModuleList(encoders)
        self.group_dim = encoders[0].out_dim

    @property
    def out_dim(self) -> int:
        return self.group_dim * len(self.encoders)

    @property
    def num_layers(self) -> int:
        return self.encoders[0].num_layers

    def slice_of(self, task: str) -> slice:
        return task_columns(self.groups, task, self.group_dim)

    def forward(self, blocks: list[Block], features: TypedFeatures) -> torch.Tensor:
        return torch.cat([encoder(blocks, features) for encoder in self.encoders], dim=1)

    def project(self, features: TypedFeatures) -> torch.Tensor:
        return torch.cat([encoder.project(features) for encoder in self.encoders], dim=1)

    def apply_layer(self, i: int, block: Block | None, h: torch.Tensor) -> torch.Tensor:
        pieces = h.chunk(len(self.encoders), dim=1)
        return torch.cat([encoder.apply_layer(i, block, piece) for encoder, piece in zip(self.encoders, pieces)], dim=1)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every group's last layer: a task's gradient reaches only its own group's, so GradNorm's
        per-task norms over the union are each task's norm over its own encoder."""
        return [p for encoder in self.encoders for p in encoder.shared_parameters()]

    @property
    def last_layer_with_attention(self):
        """Only where every group has attention (GAT groups): ``hasattr`` is how explanations ask."""
        if not all(hasattr(encoder, "last_layer_with_attention") for encoder in self.encoders):
            raise AttributeError("last_layer_with_attention")
        return self._last_layer_with_attention

    def _last_layer_with_attention(self, block: Block, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The groups' embeddings side by side and their attention averaged over groups (each group's
        sums to 1 over a destination's in-edges, so the mean does too)."""
        pieces = h.chunk(len(self.encoders), dim=1)
        outs = [encoder.last_layer_with_attention(block, piece) for encoder, piece in zip(self.encoders, pieces)]
        return torch.cat([out for out, _ in outs], dim=1), torch.stack([attn for _, attn in outs]).mean(0)


def resolve_task_groups(groups: list[list[str]], tasks: list[str]) -> list[list[str]]:
    """The groups a run of ``tasks`` trains: named tasks it lacks dropped, then empty groups dropped,
    and tasks no group names together in one more group. ``[]`` (or one group) means one shared encoder."""
    named = {task for group in groups for task in group}
    resolved = [[t for t in group if t in tasks] for group in groups]
    resolved.append([t for t in tasks if t not in named])
    resolved = [group for group in resolved if group]
    return resolved if len(resolved) > 1 else []


def task_columns(groups: list[list[str]], task: str, group_dim: int) -> slice:
    """The columns of a grouped model's embedding (groups side by side, ``group_dim`` each) that
    ``task``'s head reads; every column where there are no groups."""
    if not groups:
        return slice(None)
    index = next(i for i, group in enumerate(groups) if task in group)
    return slice(index * group_dim, (index + 1) * group_dim)
