"""Layer-wise inference on a set whose halo is shallower than the model (``--num-hops 1``).

A partition of a 1-hop set holds every in-edge of its inner nodes and its halo's input rows, but
not the in-edges of its halo: it can compute layer ``i`` exactly for its inner nodes only, and
only once its halo's layer ``i - 1`` rows are right. So the partitions go through the layers in
step: each computes layer ``i`` for its inner nodes and keeps it (the store's *put*), then asks
each owner of its halo nodes for their layer-``i`` rows in one request per owner (the store's
*get*), before any starts layer ``i + 1``. The last layer is computed for the inner nodes from
there, as full-halo inference does, so a node's outputs are the same whichever set it comes
from, to float32 summation order (tested on Twitch in 2 and 4 parts).

:class:`ShallowPartition` is one partition's side, all numpy and tensors in and out, so it runs
in this process (``graviti serve``, ``graviti infer --executor local``) or as a Ray actor
(``graviti infer``); :func:`run_layers` is the driver, the same for both.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from graviti_dist._dgl import dgl
from graviti_dist.infer.layerwise import NodeOutputs, PartitionInference, merge_outputs
from graviti_dist.model import MultiTaskModel
from graviti_dist.sampling import GraphStore, NodeRanges, WorkerPartition



class ShallowPartition:
    """One partition's inference over a shallow halo: its inner nodes' layers, its halo's from their owners."""

    def __init__(self, part: WorkerPartition, part_id: int, models: list[tuple[MultiTaskModel, list[str] | None]],
                 ranges: NodeRanges, node_sets: list[torch.Tensor], device: torch.device | str = "cpu", explain: int = 0):
        self.part, self.models, self.node_sets, self.explain = part, models, node_sets, explain
        self.index = GraphStore("", part_id, part)  # shuffled id -> local id
        self.inner = torch.nonzero(part.inner).squeeze(1)
        halo = torch.nonzero(~part.inner).squeeze(1)
        halo_ids = part.graph.ndata[dgl.NID][halo].numpy()
        owner = ranges.owner(halo_ids)
        # owner -> (its nodes in this partition's halo: local ids, shuffled ids)
        self.halo = {int(p): (halo[torch.from_numpy(owner == p)], halo_ids[owner == p]) for p in np.unique(owner)}
        self.device = device
        self.inference: PartitionInference | None = None
        self.h: torch.Tensor | None = None
        self.outputs: list[NodeOutputs] = []

    def halo_requests(self) -> dict[int, np.ndarray]:
        """Owner -> the shuffled ids of its inner nodes that this partition's halo holds."""
        return {p: ids for p, (_, ids) in self.halo.items()}

    def begin(self, m: int) -> None:
        """Start model ``m``: every local node's projected inputs (the halo's input rows are here)."""
        self.inference = PartitionInference(self.part, self.models[m][0], self.device)
        self.h = self.inference.hidden(0)

    def compute(self, i: int) -> None:
        """Layer ``i`` for the inner nodes; the halo's rows stay unset until :meth:`fill`."""
        chunks = self.inner.split(self.inference.chunk) or (self.inner,)  # a partition may own no node
        inner_h = torch.cat([self.inference.layer(i, c, self.h) for c in chunks])
        self.h = torch.zeros(self.part.graph.num_nodes(), inner_h.shape[1])
        self.h[self.inner] = inner_h

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The current layer's rows of inner nodes ``ids`` (shuffled ids), for a partition whose halo holds them."""
        local = self.index.local_ids(ids, inner_only=True)
        if (local < 0).any():
            raise ValueError(f"partition {self.index.part_id} does not own nodes {ids[local < 0][:5].tolist()}")
        return self.h[torch.from_numpy(local)].numpy()

    def fill(self, owners: list[int], *replies: np.ndarray) -> None:
        """The halo's rows of the current layer, one reply per owner (in ``owners``' order)."""
        for p, reply in zip(owners, replies):
            self.h[self.halo[p][0]] = torch.from_numpy(np.array(reply, copy=True))

    def finish(self, m: int) -> None:
        """The last layer and the heads of model ``m`` for each node set, merged into :attr:`outputs`."""
        for k, nodes in enumerate(self.node_sets):
            tasks = self.models[m][1]
            merge_outputs(self.outputs, k, tasks, self.inference.outputs(nodes, self.h, self.explain if tasks is None else 0))
        self.inference, self.h = None, None


def run_layers(parts: dict[int, object], num_models: int, num_layers: int,
               call: Callable[..., object], wait: Callable[[list], list]) -> None:
    """Drive every partition's :class:`ShallowPartition` through each model's layers in step.

    ``call(handle, method, *args)`` starts a method (returns its result, or a future that
    ``wait`` resolves and that may be passed on as an argument: Ray object refs), so the driver
    is the same in one process and over Ray actors; halo rows go from owner to asker without
    passing through the driver when ``call`` is Ray's.
    """
    requests = dict(zip(parts, wait([call(h, "halo_requests") for h in parts.values()])))
    for m in range(num_models):
        wait([call(h, "begin", m) for h in parts.values()])
        for i in range(num_layers - 1):
            wait([call(h, "compute", i) for h in parts.values()])
            fills = []
            for p, handle in parts.items():
                owners = sorted(requests[p])
                replies = [call(parts[o], "rows", requests[p][o]) for o in owners]
                fills.append(call(handle, "fill", owners, *replies))
            wait(fills)
        wait([call(h, "finish", m) for h in parts.values()])


def in_process(parts: dict[int, ShallowPartition], num_layers: int) -> None:
    """:func:`run_layers` over partitions held in this process."""
    num_models = len(next(iter(parts.values())).models)
    run_layers(parts, num_models, num_layers, lambda h, name, *args: getattr(h, name)(*args), list)
