"""Why a node got its prediction: its in-neighbours ranked by the last GAT layer's attention.

The last layer's attention, averaged over heads, sums to 1 over each node's in-edges: it is the
share of the node's final embedding (which every head reads) that came from each neighbour's
message. The top ``k`` edges per node are kept with the neighbour's shuffled id, the relation,
the weight and the edge's ``ts`` where its relation has one (NaN otherwise), then named by raw id
(:class:`RawIds`) for ``graviti infer --explain`` and ``graviti serve``'s ``"explain": k``.
The attention is the one of the model that gives the embedding (the summed selection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from graviti_dist._dgl import dgl
from graviti_dist.partition import Manifest, PartitionSet
from graviti_dist.sampling import WorkerPartition


@dataclass
class Neighbours:
    """Each node's top-k in-edges by attention, padded with -1 ids (and NaN) past its in-degree."""

    src: np.ndarray  # (n, k) shuffled ids of the neighbours
    etype: np.ndarray  # (n, k) relation id of the edge
    weight: np.ndarray  # (n, k) float32 attention, heads averaged
    ts: np.ndarray  # (n, k) float64 edge time, NaN where the relation has none

    @classmethod
    def empty(cls, k: int) -> "Neighbours":
        return cls(np.zeros((0, k), np.int64), np.zeros((0, k), np.int64), np.zeros((0, k), np.float32),
                   np.zeros((0, k), np.float64))

    @classmethod
    def concat(cls, pieces: list["Neighbours"]) -> "Neighbours":
        return cls(*(np.concatenate([getattr(p, f) for p in pieces]) for f in ("src", "etype", "weight", "ts")))

    def rows(self, positions: np.ndarray) -> "Neighbours":
        return Neighbours(self.src[positions], self.etype[positions], self.weight[positions], self.ts[positions])


def top_edges(weight: torch.Tensor, dst: torch.Tensor, num_dst: int, k: int) -> torch.Tensor:
    """(num_dst, k) positions of each destination's ``k`` heaviest in-edges, heaviest first, -1 past
    its in-degree; ``dst`` is each edge's destination. Ties keep edge order (a sort, not a dense matrix:
    one destination may have millions of in-edges)."""
    by_weight = torch.argsort(weight, descending=True, stable=True)
    order = by_weight[torch.argsort(dst[by_weight], stable=True)]  # grouped by dst, heaviest first
    sorted_dst = dst[order]
    starts = torch.searchsorted(sorted_dst, torch.arange(num_dst))
    rank = torch.arange(order.numel()) - starts[sorted_dst]
    keep = rank < k
    out = torch.full((num_dst, k), -1, dtype=torch.long)
    out[sorted_dst[keep], rank[keep]] = order[keep]
    return out


class EdgeTimes:
    """``ts`` of a partition's local edges (NaN where the relation has none), from its edge data file:
    the partitioner writes each relation's inner edges in shuffled edge id order."""

    def __init__(self, part: WorkerPartition):
        graph = part.graph
        self.ts = np.full(graph.num_edges(), np.nan)
        if part.source is None:
            return
        stored = dgl.data.utils.load_tensors(str(PartitionSet(part.source[0]).edge_feats(part.source[1])))
        eid, etype, inner = graph.edata[dgl.EID], graph.edata[dgl.ETYPE], graph.edata["inner_edge"].bool()
        for e, canonical in enumerate(part.manifest.etypes):
            values = stored.get(":".join(canonical) + "/ts")
            if values is None:
                continue
            local = torch.nonzero(inner & (etype == e)).squeeze(1)
            self.ts[local[torch.argsort(eid[local])].numpy()] = values.numpy()

    def of(self, local_eids: np.ndarray) -> np.ndarray:
        return np.where(local_eids >= 0, self.ts[local_eids.clip(min=0)], np.nan)


class RawIds:
    """Shuffled id -> (node type, raw id) over the whole set, from its id maps."""

    def __init__(self, parts: PartitionSet, manifest: Manifest):
        self.types = manifest.ntypes
        shuffled, type_of, raw = [], [], []
        for t, name in enumerate(manifest.ntypes):
            id_map = parts.read_id_map(name, columns=["shuffled_id", "raw_id"])
            shuffled.append(id_map["shuffled_id"].to_numpy())
            type_of.append(np.full(len(id_map), t))
            raw.append(id_map["raw_id"].cast(pa.string()).combine_chunks())
        self.shuffled = np.concatenate(shuffled)
        self.order = np.argsort(self.shuffled, kind="stable")
        self.type_of = np.concatenate(type_of)
        self.raw = pa.concat_arrays(raw)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, pa.Array]:
        """(type id, raw id as a string) of each shuffled id."""
        pos = self.order[np.searchsorted(self.shuffled[self.order], ids)]
        return self.type_of[pos], self.raw.take(pa.array(pos))


def explanation_table(node_ids: pa.Array, node_type: str, neighbours: Neighbours, raw_ids: RawIds,
                      manifest: Manifest) -> pa.Table:
    """One row per (node, ranked neighbour): ``id``, ``node_type``, ``rank`` (0 = most attended),
    ``neighbour_id`` (a string: neighbours of several types share the column), ``neighbour_type``, ``relation``,
    ``weight``, ``ts`` (null where the edge has none)."""
    n, k = neighbours.src.shape
    node, rank = np.nonzero(neighbours.src >= 0)
    src = neighbours.src[node, rank]
    types, raw = raw_ids.lookup(src) if src.size else (np.zeros(0, np.int64), pa.array([], pa.string()))
    relations = np.array([rel for _, rel, _ in manifest.etypes] or [""], dtype=object)
    ts = neighbours.ts[node, rank]
    return pa.table({
        "id": node_ids.take(pa.array(node)), "node_type": pa.array([node_type] * len(node), pa.string()),
        "rank": pa.array(rank.astype(np.int32)), "neighbour_id": raw,
        "neighbour_type": pa.array(np.array(raw_ids.types, dtype=object)[types].tolist(), pa.string()),
        "relation": pa.array(relations[neighbours.etype[node, rank]].tolist(), pa.string()),
        "weight": pa.array(neighbours.weight[node, rank]), "ts": pa.array(ts, mask=np.isnan(ts))})
