"""Full-neighbourhood inference: every node's embedding and predictions, with no sampling noise.

Layer by layer over all of a partition's nodes (DGL's full-neighbour sampler, one
layer at a time, in chunks of destination nodes), as DGL's own layer-wise
inference does: layer ``i`` is computed once for every local node instead of
once per minibatch that touches it. Where a partition's halo is as deep as the model its
inner nodes' results are exact from its own files; over a shallower set the partitions
exchange their halo's rows between layers (``halo_exchange``).

Shared by ``graviti infer`` (``batch``: all nodes, to Parquet) and ``graviti serve``
(``predictor``: the layers below the last precomputed, the last one per request).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from graviti_dist._dgl import dgl
from graviti_dist.errors import GravitiError
from graviti_dist.infer.explain import EdgeTimes, Neighbours, top_edges
from graviti_dist.model import Block, MultiTaskModel
from graviti_dist.partition import Manifest, PartitionSet, TaskInfo
from graviti_dist.sampling import NodeMinibatches, WorkerPartition
from graviti_dist.train import TrainedRun, build_model, encoder_config


def trained_model(run: TrainedRun, part: WorkerPartition, device: torch.device | str = "cpu",
                  state: dict | None = None) -> MultiTaskModel:
    """The run's model, rebuilt for ``part``'s schema and loaded with its weights (``state``, default
    the summed selection's), in eval mode."""
    model = build_model(part, encoder_config(run.config), run.config.balancing, run.config.tasks, run.config.task_weights,
                        run.config.model.head_hidden, run.config.model.task_groups)
    try:
        model.load_state_dict(run.state if state is None else state)
    except RuntimeError as exc:
        raise GravitiError(f"{run.source}: the weights do not fit these partitions' schema or the run's config: "
                           f"{str(exc).splitlines()[0]}") from None
    return model.to(device).eval()


def selected_model_count(run: TrainedRun) -> int:
    """How many models :func:`selected_models` returns for ``run``, without loading them."""
    return 1 + len(set(run.task_epoch.values()))


def selected_models(run: TrainedRun, part: WorkerPartition, device: torch.device | str = "cpu"
                    ) -> list[tuple[MultiTaskModel, list[str] | None]]:
    """(model, the node tasks it answers): first the summed selection's model, for the embedding,
    the link tasks and every task without a choice of its own (None); then, with per-task
    selection, one model per selected epoch with the tasks that chose it."""
    tasks_of: dict[int, list[str]] = {}
    for task, epoch in run.task_epoch.items():
        tasks_of.setdefault(epoch, []).append(task)
    return [(trained_model(run, part, device), None)] + [
        (trained_model(run, part, device, run.task_states[epoch]), tasks) for epoch, tasks in sorted(tasks_of.items())]


@dataclass
class NodeOutputs:
    """Some nodes' final embeddings, each node task's prediction and, when asked, their explanations."""

    emb: torch.Tensor
    preds: dict[str, torch.Tensor]
    neighbours: Neighbours | None = None


def predict_selected(part: WorkerPartition, models: list[tuple[MultiTaskModel, list[str] | None]], node_sets: list[torch.Tensor],
                     device: torch.device | str = "cpu", explain: int = 0) -> list[NodeOutputs]:
    """For each tensor of local nodes in ``node_sets``: its outputs, every task from the model that
    :func:`selected_models` chose for it, and with ``explain`` each node's top-``explain`` neighbours by
    the embedding model's attention. Each model runs layer-wise once."""
    results: list[NodeOutputs] = []
    for model, tasks in models:
        inference = PartitionInference(part, model, device)
        h = inference.hidden(inference.num_layers - 1)
        for k, nodes in enumerate(node_sets):
            merge_outputs(results, k, tasks, inference.outputs(nodes, h, explain if tasks is None else 0))
        del h
    return results


def merge_outputs(results: list[NodeOutputs], k: int, tasks: list[str] | None, outputs: NodeOutputs) -> None:
    """Node set ``k``'s outputs of one of :func:`selected_models`' models into ``results``: the first
    model (``tasks`` None) gives the embedding, the explanations and every task, later ones replace the
    tasks they answer."""
    if tasks is None:
        results.append(outputs)
    else:
        results[k].preds.update({task: outputs.preds[task] for task in tasks if task in outputs.preds})


def needs_exchange(run: TrainedRun, manifest: Manifest) -> bool:
    """True when the set's halo is shallower than the model: its partitions then exchange their halo's
    rows layer by layer (``infer.halo_exchange``); otherwise each partition computes alone."""
    return len(run.config.model.fanouts) > manifest.num_hops


class PartitionInference:
    """One partition's nodes through a trained model, layer by layer over full neighbourhoods."""

    def __init__(self, part: WorkerPartition, model: MultiTaskModel, device: torch.device | str = "cpu", chunk: int = 8192):
        self.part, self.model, self.device, self.chunk = part, model, torch.device(device), chunk
        self.inputs = NodeMinibatches(part, [1], 1, "train", shuffle=False)  # feature gathering + standardisation
        self.sampler = dgl.dataloading.MultiLayerFullNeighborSampler(1)
        self.etype, self.edge_inputs = part.graph.edata[dgl.ETYPE], part.edge_inputs
        self.num_layers = model.encoder.num_layers
        self.edge_times: EdgeTimes | None = None  # read on the first explanation

    def block(self, dst: torch.Tensor) -> tuple[torch.Tensor, Block]:
        """All in-edges of local nodes ``dst``: (input nodes, dst first; the block)."""
        input_nodes, block, _ = self.block_with_edges(dst)
        return input_nodes, block

    def block_with_edges(self, dst: torch.Tensor) -> tuple[torch.Tensor, Block, torch.Tensor]:
        """:meth:`block` and the local edge id of each of its edges, in the block's order."""
        input_nodes, _, (b,) = self.sampler.sample_blocks(self.part.graph, dst)
        src, dst_local = b.edges()
        # DGL's parallel sampler numbers the extra source nodes and lists in-edges in no fixed order, and
        # float sums depend on both: renumber the sources by local id and sort edges by (dst, source, edge id), so
        # results are bitwise reproducible across runs and actors.
        num_dst = b.num_dst_nodes()
        extra = torch.argsort(input_nodes[num_dst:])
        renumber = torch.empty_like(input_nodes)
        renumber[:num_dst] = torch.arange(num_dst)
        renumber[num_dst + extra] = torch.arange(num_dst, input_nodes.numel())
        input_nodes = torch.cat([input_nodes[:num_dst], input_nodes[num_dst:][extra]])
        src, eid = renumber[src], b.edata[dgl.EID]
        by_eid = torch.argsort(eid)  # ties (parallel edges of several relations) in edge-id order
        order = by_eid[torch.argsort((dst_local * input_nodes.numel() + src)[by_eid], stable=True)]
        edges = eid[order]
        efeat = None if self.edge_inputs is None else self.edge_inputs.index_select(0, edges)
        block = Block.from_edges(src[order], dst_local[order], b.num_src_nodes(), num_dst, etype=self.etype[edges], efeat=efeat)
        return input_nodes, block, eid[order]

    @torch.no_grad()
    def hidden(self, layers: int) -> torch.Tensor:
        """Every local node's representation after the first ``layers`` layers (0 = projected inputs), on the CPU."""
        nodes = torch.arange(self.part.graph.num_nodes())
        h = torch.cat([self.model.encoder.project(self.inputs.features(c).to(self.device)).cpu() for c in nodes.split(self.chunk)])
        for i in range(layers):
            h = torch.cat([self.layer(i, c, h) for c in nodes.split(self.chunk)])
        return h

    @torch.no_grad()
    def layer(self, i: int, dst: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` for local nodes ``dst`` from every local node's input ``h`` (CPU in, CPU out)."""
        input_nodes, block = self.block(dst)
        return self.model.encoder.apply_layer(i, block.to(self.device), h[input_nodes].to(self.device)).cpu()

    def outputs(self, nodes: torch.Tensor, h_before_last: torch.Tensor, explain: int = 0) -> NodeOutputs:
        """:meth:`predict`, or with ``explain`` :meth:`predict_explained`, as one value."""
        return NodeOutputs(*(self.predict_explained(nodes, h_before_last, explain) if explain
                             else self.predict(nodes, h_before_last)))

    @torch.no_grad()
    def predict(self, nodes: torch.Tensor, h_before_last: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Embeddings of ``nodes`` and each node task's prediction (head ``predict``: probabilities or values)."""
        emb = torch.cat([self.layer(self.num_layers - 1, c, h_before_last) for c in nodes.split(self.chunk)]) \
            if nodes.numel() else torch.zeros(0, self.model.encoder.out_dim)
        return emb, self.heads(emb)

    def heads(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head.predict(head(self.model.task_embedding(name, emb.to(self.device)))).cpu()
                for name, head in self.model.heads.items() if not self.model.specs[name].is_link}

    @torch.no_grad()
    def predict_explained(self, nodes: torch.Tensor, h_before_last: torch.Tensor, k: int
                          ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Neighbours]:
        """:meth:`predict` and each node's ``k`` most attended in-neighbours in the last layer (the same
        pass: the embedding and the attention it was made with)."""
        if not hasattr(self.model.encoder, "last_layer_with_attention"):
            raise GravitiError("explanations read the GAT's attention: this run's encoder has none (model.kind mlp)")
        if self.edge_times is None:
            self.edge_times = EdgeTimes(self.part)
        nid = self.part.graph.ndata[dgl.NID]
        embs, pieces = [torch.zeros(0, self.model.encoder.out_dim)], [Neighbours.empty(k)]
        for c in nodes.split(self.chunk):
            input_nodes, block, eid = self.block_with_edges(c)
            emb, weight = self.model.encoder.last_layer_with_attention(block.to(self.device),
                                                                       h_before_last[input_nodes].to(self.device))
            top = top_edges(weight.cpu(), block.dst, block.num_dst, k)
            edge = eid[top.clamp(min=0)].numpy()
            pad = (top < 0).numpy()
            pieces.append(Neighbours(np.where(pad, -1, nid[input_nodes[block.src[top.clamp(min=0)]]].numpy()),
                                     np.where(pad, 0, self.etype[edge].numpy()),
                                     np.where(pad, np.nan, weight.cpu()[top.clamp(min=0)].numpy()).astype(np.float32),
                                     np.where(pad, np.nan, self.edge_times.of(edge))))
            embs.append(emb.cpu())
        emb = torch.cat(embs)
        return emb, self.heads(emb), Neighbours.concat(pieces)


def raw_ids_of_inner(parts: PartitionSet, part: WorkerPartition, part_id: int) -> dict[int, tuple[torch.Tensor, pa.Array]]:
    """Per node type id: this partition's inner local nodes, in the crawl's id order, and their raw ids."""
    shuffled = part.graph.ndata[dgl.NID]
    out = {}
    for t, name in enumerate(part.ntypes):
        id_map = parts.read_id_map(name)
        mine = id_map.filter(pa.compute.equal(id_map["part"], part_id)).sort_by("type_id")
        local = torch.nonzero(part.inner & (part.node_type == t)).squeeze(1)
        local_of_shuffled = dict(zip(shuffled[local].tolist(), local.tolist()))
        order = torch.tensor([local_of_shuffled[s] for s in mine["shuffled_id"].to_pylist()], dtype=torch.long)
        out[t] = (order, mine["raw_id"].combine_chunks())
    return out


def original_units(task: TaskInfo, values: torch.Tensor) -> torch.Tensor:
    """Undo the crawl schema's target transform: regression heads predict the transformed target."""
    if task.transform == "log1p":
        return torch.expm1(values)
    return values
