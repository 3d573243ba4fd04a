"""The typed GAT encoder (and a features-only MLP baseline), in plain torch.

A layer is DGL's ``GATConv`` (same parameters, same maths; a test checks it
on real sampled blocks) plus what a typed social graph needs: a learned
relation embedding that enters both the attention score and the message,
edge inputs (age and weight of each edge) that bias attention and join the
message, optional GATv2
attention, layer norm and residuals.

Cost notes: the attention vectors are folded into the projection
(``el = h @ (a_l W)^T``), so scores never need projected features; a layer
then either projects every source and aggregates per head (through strided
views, no copies) or, when sources far outnumber destinations as in the outer
layers of a sampled minibatch, aggregates the raw inputs and projects only the
destinations: ``sum_e a_e W h_src = W sum_e a_e h_src``, whichever costs fewer
multiply-adds; edges only ever carry (E, heads) scalars; the relation's message term is aggregated as
attention mass per (dst, relation) times the relation embedding, so it never
builds an (E, heads, width) tensor either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from graviti_dist.model.block import Block
from graviti_dist.model.inputs import InputProjection, NodeInputSpec, TypedFeatures
from graviti_dist.model.ops import aggregate, aggregate_shared, edge_softmax, elu, headwise_linear


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of the encoder; ``hidden`` is the width per head and of the output embedding."""

    kind: str = "gat"  # "gat" or "mlp"
    hidden: int = 64
    heads: int = 4
    layers: int = 2
    dropout: float = 0.1
    attn_dropout: float = 0.0
    negative_slope: float = 0.2
    residual: bool = True
    layer_norm: bool = False
    gatv2: bool = False
    num_relations: int = 1  # > 1: a learned embedding per relation (edge type) in attention and messages
    typed_relations: bool = True  # False keeps one relation whatever the graph has: a plain GAT
    edge_feat_dim: int = 0  # width of the blocks' edge inputs (build_model sets it from the partition set)
    edge_inputs: bool = True  # False: ignore the set's edge inputs
    structural_inputs: bool = False  # read the inputs' structural columns (log degrees) where they have them

    def __post_init__(self):
        if self.kind not in ("gat", "mlp"):
            raise ValueError(f"encoder kind must be 'gat' or 'mlp', not {self.kind!r}")
        for name in ("hidden", "heads", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.dropout < 1 or not 0 <= self.attn_dropout < 1:
            raise ValueError("dropout rates must be in [0, 1)")


class GATLayer(nn.Module):
    """Multi-head graph attention over one block: (num_src, in) -> (num_dst, heads, out)."""

    def __init__(self, in_dim: int, out_dim: int, heads: int, *, num_relations: int = 1, edge_feat_dim: int = 0,
                 feat_drop: float = 0.0, attn_drop: float = 0.0, negative_slope: float = 0.2, residual: bool = False,
                 bias: bool = True, gatv2: bool = False, layer_norm: bool = False):
        super().__init__()
        self.heads, self.out_dim, self.gatv2 = heads, out_dim, gatv2
        self.fc = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.fc_dst = nn.Linear(in_dim, heads * out_dim, bias=False) if gatv2 else None
        self.attn_l = nn.Parameter(torch.empty(1, heads, out_dim))
        self.attn_r = None if gatv2 else nn.Parameter(torch.empty(1, heads, out_dim))
        self.feat_drop, self.attn_drop = nn.Dropout(feat_drop), nn.Dropout(attn_drop)
        self.negative_slope = negative_slope
        self.rel_emb = nn.Parameter(torch.zeros(num_relations, heads, out_dim)) if num_relations > 1 else None
        self.edge_attn = nn.Linear(edge_feat_dim, heads, bias=False) if edge_feat_dim else None
        # Edge inputs also enter the message: attention alone only reweighs neighbours, so a target
        # that depends on when edges were made (not on whom they came from) needs them in the sum too.
        self.edge_msg = nn.Parameter(torch.zeros(edge_feat_dim, heads, out_dim)) if edge_feat_dim else None
        self.res_fc: nn.Module | None = None
        if residual:
            self.res_fc = nn.Identity() if in_dim == heads * out_dim else nn.Linear(in_dim, heads * out_dim, bias=bias)
        has_linear_res = isinstance(self.res_fc, nn.Linear)
        self.bias = nn.Parameter(torch.zeros(heads * out_dim)) if bias and not has_linear_res else None
        self.norm = nn.LayerNorm(heads * out_dim) if layer_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        nn.init.xavier_normal_(self.fc.weight, gain=gain)
        if self.fc_dst is not None:
            nn.init.xavier_normal_(self.fc_dst.weight, gain=gain)
        nn.init.xavier_normal_(self.attn_l, gain=gain)
        if self.attn_r is not None:
            nn.init.xavier_normal_(self.attn_r, gain=gain)
        if isinstance(self.res_fc, nn.Linear):
            nn.init.xavier_normal_(self.res_fc.weight, gain=gain)
            nn.init.zeros_(self.res_fc.bias)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _aggregate_first(self, block: Block, in_dim: int) -> bool:
        """Multiply-adds of project-then-aggregate vs aggregate-then-project, forward."""
        heads, width = self.heads, self.out_dim
        project_first = block.num_src * in_dim * heads * width + block.num_edges * heads * width
        aggregate_first = block.num_edges * heads * in_dim + block.num_dst * heads * in_dim * width
        return aggregate_first < project_first

    def forward(self, block: Block, h: torch.Tensor, return_attention: bool = False):
        """(num_dst, heads, out); with ``return_attention`` also each edge's attention per head
        ((E, heads), summing to 1 over each destination's in-edges): what explanations read."""
        h = self.feat_drop(h)
        h_dst = h[: block.num_dst]
        heads, width = self.heads, self.out_dim
        w = self.fc.weight.view(heads, width, -1)
        if self.gatv2:
            feat_src = self.fc(h).view(-1, heads, width)
            # GATv2 scores a nonlinearity of the pair, so it needs the (E, heads, width) sum; opt-in.
            feat_dst = self.fc_dst(h_dst).view(-1, heads, width)
            pair = feat_src.index_select(0, block.src) + feat_dst.index_select(0, block.dst)
            scores = (F.leaky_relu(pair, self.negative_slope) * self.attn_l).sum(-1)
        else:
            # Fold the attention vectors into the projection: [el | er] = h @ ([a_l; a_r] W)^T, one matmul and
            # no (N, heads, width) product. er is computed for every source and sliced: slicing the (N, heads)
            # result is cheaper in the backward than slicing h (a zero-filled (N, in) gradient).
            attn_lr = torch.cat([self.attn_l[0], self.attn_r[0]])
            elr = h @ torch.einsum("hd,hdi->hi", attn_lr, w.repeat(2, 1, 1)).t()
            scores = elr[:, :heads].index_select(0, block.src) + elr[: block.num_dst, heads:].index_select(0, block.dst)
        if self.rel_emb is not None and block.etype is not None:
            rel_score = (self.rel_emb * self.attn_l).sum(-1)  # (R, heads): the relation's pull on attention
            scores = scores + rel_score.index_select(0, block.etype)
        if self.edge_attn is not None and block.efeat is not None:
            scores = scores + self.edge_attn(block.efeat)
        if not self.gatv2:
            scores = F.leaky_relu(scores, self.negative_slope)
        attn = self.attn_drop(edge_softmax(scores, block.dst, block.num_dst, block.indptr))
        if not self.gatv2 and self._aggregate_first(block, h.shape[1]):
            # sum_e a_e W h_src = W (sum_e a_e h_src): project num_dst rows per head instead of all num_src rows.
            out = headwise_linear(aggregate_shared(attn, h, block), w)
        else:
            feat_src = feat_src if self.gatv2 else self.fc(h).view(-1, heads, width)
            out = aggregate(attn, feat_src, block)
        if self.rel_emb is not None and block.etype is not None:
            # sum_e a_e * rel_emb[type(e)] = (attention mass per dst and relation) @ rel_emb
            num_rel = self.rel_emb.shape[0]
            mass = attn.new_zeros(block.num_dst * num_rel, heads).index_add_(0, block.dst * num_rel + block.etype, attn)
            out = out + torch.einsum("nrh,rhd->nhd", mass.view(block.num_dst, num_rel, heads), self.rel_emb)
        if self.edge_msg is not None and block.efeat is not None:
            out = out + self._edge_message(block, attn)
        if self.res_fc is not None:
            out = out + self.res_fc(h_dst).view(-1, heads, width)
        if self.bias is not None:
            out = out + self.bias.view(1, heads, width)
        if self.norm is not None:
            out = self.norm(out.reshape(-1, heads * width)).view(-1, heads, width)
        return (out, attn) if return_attention else out

    def _edge_message(self, block: Block, attn: torch.Tensor) -> torch.Tensor:
        """sum_e a_e (x_e W_x): the attention-weighted edge inputs per destination, then projected;
        (E, heads, F) with F the few edge inputs (2: age, weight), never (E, heads, width)."""
        weighted = attn.unsqueeze(-1) * block.efeat.unsqueeze(1)
        per_dst = weighted.new_zeros(block.num_dst, *weighted.shape[1:]).index_add_(0, block.dst, weighted)
        return torch.einsum("nhf,fhd->nhd", per_dst, self.edge_msg)


class GATEncoder(nn.Module):
    """Input projection + L GAT layers; hidden layers concatenate heads, the last averages them."""

    def __init__(self, config: EncoderConfig, inputs: list[NodeInputSpec]):
        super().__init__()
        self.config = config
        self.project = InputProjection(inputs, config.hidden)
        dims = [config.hidden] + [config.hidden * config.heads] * (config.layers - 1)
        self.layers = nn.ModuleList(
            GATLayer(dims[i], config.hidden, config.heads, num_relations=config.num_relations,
                     edge_feat_dim=config.edge_feat_dim, feat_drop=config.dropout if i else 0.0,
                     attn_drop=config.attn_dropout, negative_slope=config.negative_slope, residual=config.residual,
                     gatv2=config.gatv2, layer_norm=config.layer_norm and i < config.layers - 1)
            for i in range(config.layers)
        )

    @property
    def out_dim(self) -> int:
        return self.config.hidden

    def forward(self, blocks: list[Block], features: TypedFeatures) -> torch.Tensor:
        """Embeddings of the last block's dst nodes (the seeds): (num_seeds, hidden)."""
        if len(blocks) != len(self.layers):
            raise ValueError(f"encoder has {len(self.layers)} layers but got {len(blocks)} blocks")
        h = self.project(features)
        for i, block in enumerate(blocks):
            h = self.apply_layer(i, block, h)
        return h

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last layer's weights: where GradNorm compares the tasks' gradient norms."""
        return [p for p in self.layers[-1].parameters() if p.requires_grad]

    def apply_layer(self, i: int, block: Block, h: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` on ``block`` with its activation: what layer-wise (full-neighbourhood)
        inference calls once per layer over every node, instead of per sampled minibatch."""
        out = self.layers[i](block, h)
        return elu(out.flatten(1)) if i < len(self.layers) - 1 else out.mean(1)

    def last_layer_with_attention(self, block: Block, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last layer's embeddings and each edge's attention averaged over heads ((E,), summing to 1
        over each destination's in-edges): the model's own account of which neighbours it listened to."""
        out, attn = self.layers[-1](block, h, return_attention=True)
        return out.mean(1), attn.mean(1)


class MLPEncoder(nn.Module):
    """Features-only baseline with the same heads: what the graph adds is always measurable."""

    def __init__(self, config: EncoderConfig, inputs: list[NodeInputSpec]):
        super().__init__()
        self.config = config
        self.project = InputProjection(inputs, config.hidden)
        self.mlp = nn.ModuleList(nn.Linear(config.hidden, config.hidden) for _ in range(config.layers))
        self.dropout = nn.Dropout(config.dropout)

    @property
    def out_dim(self) -> int:
        return self.config.hidden

    def forward(self, blocks: list[Block], features: TypedFeatures) -> torch.Tensor:
        seeds = blocks[-1].num_dst if blocks else features.node_type.numel()
        h = self.project(features)[:seeds]
        for i in range(len(self.mlp)):
            h = self.apply_layer(i, None, h)
        return h

    @property
    def num_layers(self) -> int:
        return len(self.mlp)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last layer's weights: where GradNorm compares the tasks' gradient norms."""
        return [p for p in self.mlp[-1].parameters() if p.requires_grad]

    def apply_layer(self, i: int, block: Block | None, h: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` on each node's own row (the block only fixes how many rows are outputs)."""
        if block is not None:
            h = h[: block.num_dst]
        h = self.mlp[i](self.dropout(h))
        return F.elu(h) if i < len(self.mlp) - 1 else h


def build_encoder(config: EncoderConfig, inputs: list[NodeInputSpec]) -> nn.Module:
    """The encoder the config names."""
    if not config.structural_inputs:
        inputs = [spec.without_structural() for spec in inputs]
    return (GATEncoder if config.kind == "gat" else MLPEncoder)(config, inputs)
