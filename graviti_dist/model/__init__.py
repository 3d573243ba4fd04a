"""Stage 4, the multi-task GAT model in plain torch: no DGL, Ray or Arrow in here.

Heads take tensors, not graphs; blocks arrive as index tensors from the
sampler. See ``encoder.py`` for the layer and its cost notes.
"""

from graviti_dist.model.balance import build_balancer
from graviti_dist.model.block import Block
from graviti_dist.model.encoder import EncoderConfig, GATEncoder, GATLayer, MLPEncoder, build_encoder
from graviti_dist.model.heads import TaskSpec, build_head
from graviti_dist.model.inputs import NodeInputSpec, TypedFeatures
from graviti_dist.model.multitask import LinkPairs, MiniBatch, MultiTaskModel
from graviti_dist.model.task_groups import TaskGroupEncoder, resolve_task_groups, task_columns

__all__ = [
    "Block", "EncoderConfig", "GATEncoder", "GATLayer", "LinkPairs", "MLPEncoder", "MiniBatch", "MultiTaskModel",
    "NodeInputSpec", "TaskGroupEncoder", "TaskSpec", "TypedFeatures", "build_balancer", "build_encoder", "build_head",
    "resolve_task_groups", "task_columns",
]
