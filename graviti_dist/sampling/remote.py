"""Sampling beyond a partition's halo: a graph store per partition, and minibatches that ask it.

With a halo shallower than the model (``graviti partition --num-hops 1``) a worker cannot
sample a whole neighbourhood from its own files: the in-edges of its halo nodes belong to
other partitions. Each partition is then served by a :class:`GraphStore`, which holds its
inner nodes' in-edges and every local node's input rows and answers two batched requests:

* ``sample(nodes, fanout)``: up to ``fanout`` in-neighbours of each of ``nodes`` (all inner to
  the store), drawn by DGL's ``sample_neighbors`` over the store's local graph, uniformly and
  without replacement: the distribution local sampling uses;
* ``gather(nodes)``: those nodes' standardised input features, by node type.

Ids crossing stores are the set's shuffled node ids (DGL's partition id space); every array is
numpy, so a store runs in this process or as a Ray actor (``sampling.ray_store``) alike.

:class:`RemoteMinibatches` samples hop by hop: each hop's frontier is split by owning
partition, nodes of this worker's own partitions are sampled in process, the rest in one
request per owner (issued together). Input rows a worker does not hold belong to nodes of
the last hop that other stores own or sampled, and those stores send them with that hop's answer
(one request per owner per hop in all); ``features`` of other nodes asks their owners. Dense rows are standardised with the set's statistics
(``partition.layout.FeatureInfo``), so a row is the same whichever partition serves it.
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from graviti_dist._dgl import dgl
from graviti_dist.model import Block, TypedFeatures
from graviti_dist.partition import PartitionSet
from graviti_dist.sampling.minibatches import NodeMinibatches
from graviti_dist.sampling.worker_partition import WorkerPartition, load_worker_partition


@dataclass(frozen=True)
class NodeRanges:
    """Owner partition and node type of any shuffled id: ids are sorted by (partition, type)."""

    starts: np.ndarray  # sorted start of each (partition, type) range
    parts: np.ndarray
    types: np.ndarray

    @classmethod
    def of(cls, parts: PartitionSet) -> "NodeRanges":
        config = parts.read_part_config()
        ranges = [(start, p, config["ntypes"][name]) for name, per_part in config["node_map"].items()
                  for p, (start, end) in enumerate(per_part) if end > start]
        ranges.sort()
        return cls(np.array([r[0] for r in ranges], np.int64), np.array([r[1] for r in ranges], np.int64),
                   np.array([r[2] for r in ranges], np.int64))

    def owner(self, nodes: np.ndarray) -> np.ndarray:
        return self.parts[np.searchsorted(self.starts, nodes, side="right") - 1]

    def node_type(self, nodes: np.ndarray) -> np.ndarray:
        return self.types[np.searchsorted(self.starts, nodes, side="right") - 1]


@dataclass
class SampledEdges:
    """Edges sampled into some destination nodes, in shuffled ids; for the input layer's hop also the
    input rows of those nodes and of their sources (``row_nodes``, ``rows``), which the store that
    sampled them holds."""

    src: np.ndarray
    dst: np.ndarray
    etype: np.ndarray
    efeat: np.ndarray | None = None  # (E, F) edge inputs, where the set has them
    row_nodes: np.ndarray | None = None
    rows: dict[int, "FeatureRows"] | None = None


@dataclass
class FeatureRows:
    """Input rows of some nodes of one type: dense (standardised), categorical codes, multi-hot indices."""

    dense: np.ndarray | None
    categorical: list[np.ndarray]
    multihot: list[np.ndarray]


class GraphStore:
    """One partition's structure and input rows, answering batched requests by shuffled id."""

    def __init__(self, part_dir: str, part_id: int, part: WorkerPartition | None = None, edge_inputs: bool = True):
        """``edge_inputs`` False (a model that reads none) leaves them out of what ``sample`` sends:
        where a store loads its own partition; one built over ``part`` sends what ``part`` holds."""
        self.part = part if part is not None else load_worker_partition(part_dir, part_id, edge_inputs=edge_inputs)
        self.part_id = part_id
        # Any local node (inner or halo) looked up by shuffled id through a hash index: 1.0 ms for
        # 60k ids where a binary search over the sorted ids took 7.3 (part 0 of synthetic-1m's 1-hop set).
        self._index = pd.Index(self.part.graph.ndata[dgl.NID].numpy())
        self._inner = self.part.inner.numpy()
        self._etype = self.part.graph.edata[dgl.ETYPE]
        self._edge_inputs = self.part.edge_inputs

    def ready(self) -> bool:
        """True once loaded (an actor's first answer)."""
        return True

    def local_ids(self, nodes: np.ndarray, inner_only: bool = False) -> np.ndarray:
        """Local ids of shuffled ids ``nodes`` (-1 where the partition does not hold them)."""
        local = self._index.get_indexer(nodes).astype(np.int64, copy=False)
        if inner_only:
            local = np.where((local >= 0) & self._inner[local.clip(min=0)], local, -1)
        return local

    def sample(self, nodes: np.ndarray, fanout: int, with_rows: bool = False) -> SampledEdges:
        """Up to ``fanout`` in-neighbours of each of ``nodes`` (this partition's inner nodes); ``with_rows``
        adds the input rows of ``nodes`` and of the sampled sources (held here: inner nodes'
        in-neighbours are inner or halo)."""
        local = self.local_ids(nodes, inner_only=True)
        if (local < 0).any():
            missing = nodes[local < 0][:5].tolist()
            raise ValueError(f"partition {self.part_id} does not own nodes {missing}: ask their owner")
        frontier = dgl.sampling.sample_neighbors(self.part.graph, torch.from_numpy(local), fanout)
        src, dst = frontier.edges()
        nid = self.part.graph.ndata[dgl.NID]
        eid = frontier.edata[dgl.EID]
        efeat = None if self._edge_inputs is None else self._edge_inputs.index_select(0, eid).numpy()
        edges = SampledEdges(nid[src].numpy(), nid[dst].numpy(), self._etype.index_select(0, eid).numpy(), efeat)
        if with_rows:
            held = torch.unique(torch.cat([torch.from_numpy(local), src]))
            edges.row_nodes, edges.rows = nid[held].numpy(), self._rows(held)
        return edges

    def gather(self, nodes: np.ndarray) -> dict[int, FeatureRows]:
        """Input rows of ``nodes`` (any node this partition holds), per node type id, in the order given."""
        local = torch.from_numpy(self.local_ids(nodes))
        if (local < 0).any():
            raise ValueError(f"partition {self.part_id} holds no row of nodes {nodes[(local < 0).numpy()][:5].tolist()}")
        return self._rows(local)

    def _rows(self, local: torch.Tensor) -> dict[int, FeatureRows]:
        features = NodeMinibatches.features_of(self.part, local)
        return {t: FeatureRows(features.dense[t].numpy() if t in features.dense else None,
                               [c.numpy() for c in features.categorical[t]], [m.numpy() for m in features.multihot[t]])
                for t in features.positions}


class StoreHandle(Protocol):
    """A store in this process or in a Ray actor: requests return futures, so several owners' work overlaps."""

    def sample(self, nodes: np.ndarray, fanout: int, with_rows: bool = False) -> Future: ...

    def gather(self, nodes: np.ndarray) -> Future: ...


class LocalStore:
    """A :class:`GraphStore` in this process behind the :class:`StoreHandle` interface."""

    def __init__(self, store: GraphStore):
        self.store = store

    def sample(self, nodes: np.ndarray, fanout: int, with_rows: bool = False) -> Future:
        return _done(self.store.sample(nodes, fanout, with_rows))

    def gather(self, nodes: np.ndarray) -> Future:
        return _done(self.store.gather(nodes))


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class RemoteMinibatches(NodeMinibatches):
    """:class:`NodeMinibatches` over a partition whose halo is shallower than the model: the same
    seeds, labels and link pairs, with neighbourhoods and input rows completed through the stores."""

    def __init__(self, part: WorkerPartition, stores: dict[int, StoreHandle], ranges: NodeRanges, fanouts: list[int],
                 batch_size: int, split: str = "train", **kwargs):
        super().__init__(part, fanouts, batch_size, split, **kwargs)
        self.stores, self.ranges, self.fanouts = stores, ranges, list(fanouts)
        self.local = GraphStore("", part.source[1] if part.source else -1, part)
        self.nid = part.graph.ndata[dgl.NID]
        self.requests = 0  # store requests sent to other partitions (the run's records and the benchmark read them)
        self.wait_s = 0.0  # time spent waiting for their answers
        # (input nodes, the stores' replies carrying rows) of the last sample(), for features() of those nodes
        self._sampled_rows: tuple[torch.Tensor, list[SampledEdges]] | None = None

    def __reduce__(self):
        raise TypeError("remote minibatches hold store handles: sample in the training process")

    def sample(self, seeds: torch.Tensor) -> tuple[torch.Tensor, list[Block]]:
        """Hop by hop from local ``seeds``: (input nodes as shuffled ids, blocks as index tensors)."""
        dst = self.nid[seeds].numpy()
        blocks, replies = [], []
        for hop, fanout in enumerate(reversed(self.fanouts)):  # the seeds' layer first, as DGL's NeighborSampler does
            # The input layer's nodes are the ones this worker may not hold: the stores that own or
            # sample them send their rows along, which saves features() a round of requests.
            edges, replies = self._sample_hop(dst, fanout, with_rows=hop == len(self.fanouts) - 1)
            src_nodes, block = _block(dst, edges)
            blocks.insert(0, block)
            dst = src_nodes
        input_nodes = torch.from_numpy(dst)
        self._sampled_rows = (input_nodes, replies)
        return input_nodes, blocks

    def _sample_hop(self, nodes: np.ndarray, fanout: int, with_rows: bool) -> tuple[SampledEdges, list[SampledEdges]]:
        """This hop's edges, and the other owners' replies (with rows, if asked)."""
        owner = self.ranges.owner(nodes)
        owners = np.unique(owner).tolist()
        # other owners' requests go out first, so that they are answered while this partition's own
        # nodes are sampled here
        futures = [self.stores[p].sample(nodes[owner == p], fanout, with_rows) for p in owners if p != self.local.part_id]
        self.requests += len(futures)
        own = [self.local.sample(nodes[owner == self.local.part_id], fanout)] if self.local.part_id in owners else []
        replies = self._results(futures)
        return _concatenated(replies + own, self.part.edge_inputs), replies

    def features(self, input_nodes: torch.Tensor) -> TypedFeatures:
        """Input rows of shuffled ids ``input_nodes``: from this worker's partition where it holds
        them (inner or halo), the rest from the replies of the last ``sample`` (when these are its
        input nodes) or else in one request per owner."""
        nodes = input_nodes.numpy()
        local = self.local.local_ids(nodes)
        types = self.ranges.node_type(nodes)
        features = TypedFeatures(torch.from_numpy(types))
        missing = np.flatnonzero(local < 0)
        pieces = []
        if self._sampled_rows is not None and self._sampled_rows[0] is input_nodes:  # rows came with the last hop
            missing = self._take_sampled_rows(nodes, types, missing, pieces)
        owner = self.ranges.owner(nodes[missing])
        requests = []  # sent before this partition's own rows are gathered, to be answered meanwhile
        for p in np.unique(owner).tolist():
            positions = missing[owner == p]
            self.requests += 1
            requests.append((positions, self.stores[p].gather(nodes[positions])))
        held = np.flatnonzero(local >= 0)
        pieces.append((held, NodeMinibatches.features_of(self.part, torch.from_numpy(local[held]))))
        replies = self._results([future for _, future in requests])
        pieces += [(positions, _typed(reply, types[positions])) for (positions, _), reply in zip(requests, replies)]
        return _merge(features, pieces, types)

    def _take_sampled_rows(self, nodes: np.ndarray, types: np.ndarray, missing: np.ndarray, pieces: list) -> np.ndarray:
        """Rows of ``nodes[missing]`` from the last hop's replies, appended to ``pieces`` as
        (positions, features); returns the positions no reply held."""
        for reply in self._sampled_rows[1]:
            at = pd.Index(reply.row_nodes).get_indexer(nodes[missing])
            found = at >= 0
            if found.any():
                rows = _typed(reply.rows, self.ranges.node_type(reply.row_nodes), only_read=True)
                pieces.append((missing[found], _take(rows, at[found], types[missing[found]])))
            missing = missing[~found]
        self._sampled_rows = None
        return missing

    def _results(self, futures: list) -> list:
        started = time.perf_counter()
        results = [f.result() for f in futures]
        self.wait_s += time.perf_counter() - started
        return results


def _typed(rows: dict[int, FeatureRows], types: np.ndarray, only_read: bool = False) -> TypedFeatures:
    """A store's reply as TypedFeatures over the nodes it was asked for; ``only_read``: the caller
    only selects rows from it, so read-only arrays are used in place rather than copied whole."""
    tensor = _read_only_view if only_read else _tensor
    out = TypedFeatures(torch.from_numpy(types))
    for t, r in rows.items():
        out.positions[t] = torch.from_numpy(np.flatnonzero(types == t))
        if r.dense is not None:
            out.dense[t] = tensor(r.dense)
        out.categorical[t] = [tensor(c) for c in r.categorical]
        out.multihot[t] = [tensor(m) for m in r.multihot]
    return out


def _read_only_view(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # never written: torch's warning about read-only arrays does not apply
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _take(features: TypedFeatures, index: np.ndarray, types: np.ndarray) -> TypedFeatures:
    """The rows of ``features`` (over some nodes) of the nodes at ``index``, as TypedFeatures over those."""
    rank = np.empty(len(features.node_type), np.int64)  # each node's row among the rows of its type
    out = TypedFeatures(torch.from_numpy(types))
    for t, positions in features.positions.items():
        rank[positions.numpy()] = np.arange(positions.numel())
        where = np.flatnonzero(types == t)
        if len(where) == 0:
            continue
        rows = torch.from_numpy(rank[index[where]])
        out.positions[t] = torch.from_numpy(where)
        if t in features.dense:
            out.dense[t] = features.dense[t].index_select(0, rows)
        out.categorical[t] = [c.index_select(0, rows) for c in features.categorical[t]]
        out.multihot[t] = [m.index_select(0, rows) for m in features.multihot[t]]
    return out


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor of a reply's array; Ray hands replies over read-only, and these few rows are cheap to copy."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _merge(out: TypedFeatures, pieces: list[tuple[np.ndarray, TypedFeatures]], types: np.ndarray) -> TypedFeatures:
    """One TypedFeatures over all input nodes from pieces over subsets (``positions`` into the whole):
    each piece's rows are scattered to their rank among the nodes of their type (no sort)."""
    rank = np.empty(len(types), np.int64)  # each input node's position among the input nodes of its type
    for t in np.unique(types).tolist():
        where = np.flatnonzero(types == t)
        rank[where] = np.arange(len(where))
        out.positions[t] = torch.from_numpy(where)
        chunks = [(torch.from_numpy(rank[at[f.positions[t].numpy()]]), f) for at, f in pieces if t in f.positions]
        if chunks[0][1].dense.get(t) is not None:
            out.dense[t] = _scatter([(i, f.dense[t]) for i, f in chunks], len(where))
        out.categorical[t] = [_scatter(list(zip((i for i, _ in chunks), cols)), len(where))
                              for cols in zip(*(f.categorical[t] for _, f in chunks))]
        out.multihot[t] = [_scatter(list(zip((i for i, _ in chunks), cols)), len(where), fill=-1)
                           for cols in zip(*(f.multihot[t] for _, f in chunks))]
    return out


def _scatter(chunks: list[tuple[torch.Tensor, torch.Tensor]], rows: int, fill: int | None = None) -> torch.Tensor:
    """Rows ``chunk[k]`` placed at ``index[k]`` of one tensor; multi-hot lists padded with ``fill`` to the widest."""
    first = chunks[0][1]
    width = max(c.shape[1] for _, c in chunks) if first.dim() > 1 else None
    shape = (rows,) if width is None else (rows, width)
    out = torch.empty(shape, dtype=first.dtype) if fill is None else torch.full(shape, fill, dtype=first.dtype)
    for index, chunk in chunks:
        if width is None or chunk.shape[1] == width:
            out[index] = chunk
        else:
            out[index, :chunk.shape[1]] = chunk
    return out


def _concatenated(parts: list[SampledEdges], edge_inputs: torch.Tensor | None) -> SampledEdges:
    """One hop's edges from every store that sampled some; ``edge_inputs`` (this worker's) says
    whether the set has edge inputs, and their width."""
    def joined(key: str, empty: np.ndarray) -> np.ndarray:
        return np.concatenate([getattr(e, key) for e in parts]) if parts else empty

    no_ids = np.zeros(0, np.int64)
    efeat = None
    if edge_inputs is not None:
        if any(e.efeat is None for e in parts):
            raise ValueError("a graph store sent edges without their edge inputs to a worker whose model reads them: "
                             "stores and workers must load partitions with the same edge_inputs")
        efeat = joined("efeat", np.zeros((0, edge_inputs.shape[1]), np.float32))
    return SampledEdges(joined("src", no_ids), joined("dst", no_ids), joined("etype", no_ids), efeat)


def _block(dst: np.ndarray, edges: SampledEdges) -> tuple[np.ndarray, Block]:
    """A block into ``dst`` (shuffled ids) from sampled edges: its source nodes are ``dst`` first,
    then the new ones in order of first appearance among the sources (as DGL's ``to_block``).

    A hash factorisation (pandas) numbers every id in one pass: on synthetic-1m's second hop
    (52k edges) it takes 1.0 ms where the earlier sort-based ``np.unique`` with inverse took 9.3
    (``benchmarks/bench_remote.py``'s harness); ``dst`` is unique and comes first, so it keeps its positions."""
    count, sampled = len(dst), len(edges.src)
    position, src_nodes = pd.factorize(np.concatenate([dst, edges.src, edges.dst]))
    src = torch.from_numpy(position[count:count + sampled])
    dst_index = torch.from_numpy(position[count + sampled:])
    efeat = None if edges.efeat is None else torch.from_numpy(np.ascontiguousarray(edges.efeat))
    block = Block.from_edges(src, dst_index, len(src_nodes), count, etype=torch.from_numpy(edges.etype).long(), efeat=efeat)
    return np.asarray(src_nodes, np.int64), block
