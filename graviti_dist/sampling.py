"""From one partition to model-ready minibatches: DGL samples, plain tensors come out.

A worker loads its partition (DGL's files plus our halo features), so
neighbour sampling up to the halo depth never leaves the partition. Seeds mix
every node task (a seed carries whichever labels it has); blocks become
:class:`graviti_dist.model.Block` index tensors with relation ids, and input
features are grouped per node type as :class:`TypedFeatures`.

Link tasks add, per step, ``link_pairs`` of their edges whose source the
partition owns, each with ``negatives`` destinations drawn uniformly from the
partition's nodes of the destination type; their nodes join the seeds.
Not yet here: edge features of halo edges (DGL keeps only inner edges' data).
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import torch

from graviti_dist._dgl import dgl
from graviti_dist.model import Block, LinkPairs, MiniBatch, NodeInputSpec, TypedFeatures
from graviti_dist.partition_check import HALO_FEATS, MANIFEST


@dataclass
class WorkerPartition:
    """One partition in memory: the local graph and, per node type, a table over its local nodes."""

    graph: "dgl.DGLGraph"
    manifest: dict
    node_type: torch.Tensor  # (N_local,) type id
    row: torch.Tensor  # (N_local,) row of each local node in its type's tables
    inner: torch.Tensor  # (N_local,) bool
    tables: list[dict[str, torch.Tensor]]  # per type id: key -> (rows, ...)
    inputs: list[NodeInputSpec]
    feature_keys: list[dict[str, list[str]]]  # per type: kind -> feature keys in a fixed order
    links: dict[str, "LinkEdges"] = field(default_factory=dict)  # link task -> the edges this partition trains on
    source: tuple[str, int] | None = None  # (partition set, part id) it was loaded from
    # per type: its dense feature columns side by side as float32, standardised with this partition's
    # statistics (None: no dense features); the tables keep no separate copy of those columns
    dense: list[torch.Tensor | None] = field(default_factory=list)

    @property
    def ntypes(self) -> list[str]:
        return self.manifest["ntypes"]


def load_worker_partition(part_dir: str | Path, part_id: int) -> WorkerPartition:
    """Load partition ``part_id`` of the set at ``part_dir`` with its halo features."""
    part_dir = Path(part_dir)
    manifest = json.loads((part_dir / MANIFEST).read_text())
    graph, node_feats, _, _, _, _, _ = dgl.distributed.load_partition(str(part_dir / manifest["part_config"]), part_id)
    halo_feats = dgl.data.utils.load_tensors(str(part_dir / f"part{part_id}" / HALO_FEATS))
    node_type = graph.ndata[dgl.NTYPE].long()
    inner = graph.ndata["inner_node"].bool()
    nid = graph.ndata[dgl.NID]
    row = torch.full((graph.num_nodes(),), -1, dtype=torch.long)
    tables, inputs, keys, dense = [], [], [], []
    for t, name in enumerate(manifest["ntypes"]):
        inner_local = torch.nonzero(inner & (node_type == t)).squeeze(1)
        inner_local = inner_local[torch.argsort(nid[inner_local])]  # node_feat rows are in shuffled-id order
        halo_local = halo_feats[f"{name}/_local_id"]
        row[inner_local] = torch.arange(inner_local.numel())
        row[halo_local] = inner_local.numel() + torch.arange(halo_local.numel())
        prefix = f"{name}/"
        table = {key[len(prefix):]: torch.cat([node_feats[key], halo_feats[key]])
                 for key in node_feats if key.startswith(prefix)}
        for key in table:  # DGL's tensor files store booleans as uint8
            if key.startswith(("mask_", "train_", "val_", "test_")):
                table[key] = table[key].bool()
        tables.append(table)
        spec, kinds = _input_spec(manifest["features"][name], table)
        inputs.append(spec)
        keys.append(kinds)
        dense.append(_standardised_dense(table, kinds["dense"]))
    part = WorkerPartition(graph, manifest, node_type, row, inner, tables, inputs, keys, source=(str(part_dir), part_id),
                           dense=dense)
    link_tasks = [t for t in manifest["tasks"] if t["type"] == "link"]
    if link_tasks:
        local_of = _local_of_type_id(part_dir, part)
        part.links = {t["name"]: _link_edges(part_dir, part, t, local_of) for t in link_tasks}
    return part


def _standardised_dense(table: dict[str, torch.Tensor], keys: list[str]) -> torch.Tensor | None:
    """The ``keys`` columns of ``table`` as one float32 matrix with zero mean and unit variance per
    column (raw epoch timestamps would swamp the rest); the columns leave ``table``. Done once per
    partition: gathering one matrix per step costs a fraction of gathering, concatenating and
    standardising the columns each time."""
    if not keys:
        return None
    rows = next(iter(table.values())).shape[0]
    dense = torch.cat([table.pop(k).float().reshape(rows, -1) for k in keys], dim=1)
    if rows:
        dense.sub_(dense.mean(0)).div_(dense.std(0).clamp(min=1e-6) if rows > 1 else 1.0)
    return dense


@dataclass
class LinkEdges:
    """A link task's edges whose source node this partition owns (local ids), with their split.

    Destinations are local too: training edges are in the message-passing graph,
    so the halo holds them; a validation/test edge whose destination lies outside
    the partition is left out of this partition's evaluation.
    """

    src: torch.Tensor
    dst: torch.Tensor
    split: torch.Tensor
    src_type: int
    dst_type: int
    candidates: torch.Tensor  # every local node of the destination type: negatives are drawn here


def _local_of_type_id(part_dir: Path, part: WorkerPartition) -> list[torch.Tensor]:
    """Per node type: local node id of each of the type's (crawl-order) ids, -1 where not in this partition."""
    import numpy as np
    import pyarrow.parquet as pq

    out = []
    shuffled = part.graph.ndata[dgl.NID].numpy()
    for t, name in enumerate(part.ntypes):
        id_map = pq.read_table(part_dir / "id_map" / f"{name}.parquet", columns=["shuffled_id", "type_id"])
        order = np.argsort(id_map["shuffled_id"].to_numpy())
        sorted_shuffled = id_map["shuffled_id"].to_numpy()[order]
        local = torch.nonzero(part.node_type == t).squeeze(1).numpy()
        type_id = id_map["type_id"].to_numpy()[order][np.searchsorted(sorted_shuffled, shuffled[local])]
        table = torch.full((id_map.num_rows,), -1, dtype=torch.long)
        table[torch.from_numpy(type_id)] = torch.from_numpy(local).long()
        out.append(table)
    return out


def _link_edges(part_dir: Path, part: WorkerPartition, task: dict, local_of: list[torch.Tensor]) -> LinkEdges:
    import pyarrow.parquet as pq

    relation = part.manifest["schema"]["relations"][task["relation"]]
    src_type, dst_type = part.ntypes.index(relation["src"]), part.ntypes.index(relation["dst"])
    table = pq.read_table(part_dir / "link_splits" / f"{task['name']}.parquet")
    src = local_of[src_type][torch.tensor(table["src"].to_numpy(), dtype=torch.long)]
    dst = local_of[dst_type][torch.tensor(table["dst"].to_numpy(), dtype=torch.long)]
    keep = (src >= 0) & (dst >= 0)
    keep &= part.inner[src.clamp(min=0)]
    split = torch.tensor(table["split"].to_numpy(), dtype=torch.long)
    candidates = torch.nonzero(part.node_type == dst_type).squeeze(1)
    return LinkEdges(src[keep], dst[keep], split[keep], src_type, dst_type, candidates)


def _input_spec(features: dict, table: dict[str, torch.Tensor]) -> tuple[NodeInputSpec, dict[str, list[str]]]:
    kinds: dict[str, list[str]] = {"dense": [], "categorical": [], "multihot": []}
    categorical, multihot, dense_width = [], [], 0
    for fname, info in features.items():
        key = f"feat_{fname}"
        if info["kind"] in ("numeric", "vector"):
            kinds["dense"].append(key)
            dense_width += table[key].shape[1]
        elif info["kind"] == "categorical":
            kinds["categorical"].append(key)
            categorical.append(int(info["categories"]))
        else:
            kinds["multihot"].append(key)
            multihot.append(int(info["width"]))
    return NodeInputSpec(dense_width, tuple(categorical), tuple(multihot)), kinds


class NodeMinibatches:
    """Shuffled minibatches of seeds that hold a label for some node task in ``split``.

    Dense features come standardised from the partition (:attr:`WorkerPartition.dense`).
    """

    def __init__(self, part: WorkerPartition, fanouts: list[int], batch_size: int, split: str = "train",
                 seed: int = 0, shuffle: bool = True, tasks: list[str] | None = None, link_pairs: int = 128,
                 negatives: int = 5):
        self.part, self.batch_size, self.split, self.shuffle = part, batch_size, split, shuffle
        self._recipe = dict(fanouts=list(fanouts), batch_size=batch_size, split=split, seed=seed, shuffle=shuffle,
                            tasks=tasks, link_pairs=link_pairs, negatives=negatives)
        self.sampler = dgl.dataloading.NeighborSampler(list(fanouts))
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.tasks = [t for t in part.manifest["tasks"] if t["type"] != "link" and (tasks is None or t["name"] in tasks)]
        split_id = {"train": 0, "val": 1, "test": 2}[split]
        # link task -> (edge positions of this split); each step adds ``link_pairs`` of them with ``negatives`` each
        self.links = {name: torch.nonzero(edges.split == split_id).squeeze(1) for name, edges in part.links.items()
                      if tasks is None or name in tasks}
        self.link_pairs, self.negatives = link_pairs, negatives
        type_id = {name: i for i, name in enumerate(part.ntypes)}
        eligible = torch.zeros(part.graph.num_nodes(), dtype=torch.bool)
        for task in self.tasks:
            t = type_id[task["node_type"]]
            local = torch.nonzero(part.inner & (part.node_type == t)).squeeze(1)
            eligible[local] |= part.tables[t][f"{split}_{task['name']}"][part.row[local]]
        self.seeds = torch.nonzero(eligible).squeeze(1)
        self.type_id = type_id

    def __reduce__(self):
        # Sampling processes load the partition from disk rather than receive it pickled: no copy of
        # a large partition through a pipe (and torch cannot share its empty tensors that way).
        if self.part.source is None:
            raise TypeError("minibatches over a partition not loaded from disk cannot go to sampling processes")
        return _rebuild_minibatches, (self.part.source, self._recipe)

    def __len__(self) -> int:
        """Steps per pass: enough for every node seed (link edges cycle alongside while training); when
        evaluating, or with no node seeds, also enough for every link edge."""
        node_steps = -(-self.seeds.numel() // self.batch_size)
        link_steps = max((-(-e.numel() // self.link_pairs) for e in self.links.values()), default=0)
        if self.shuffle and node_steps:
            return node_steps
        return max(node_steps, link_steps)

    def __iter__(self) -> Iterator[MiniBatch]:
        for seeds, links in self.plan():
            yield self.batch(seeds, links)

    def plan(self) -> Iterator[tuple[torch.Tensor, dict]]:
        """One pass's steps as (node seeds, link triples): cheap index work, so it can run in the
        training process while the sampling itself runs elsewhere (:class:`MinibatchStream`)."""
        if not self.shuffle:  # evaluation: the same negatives every pass
            self.generator.manual_seed(self.seed)
        order = self.seeds[torch.randperm(self.seeds.numel(), generator=self.generator)] if self.shuffle else self.seeds
        link_order = {name: e[torch.randperm(e.numel(), generator=self.generator)] if self.shuffle else e
                      for name, e in self.links.items()}
        for step in range(len(self)):
            yield order[step * self.batch_size:(step + 1) * self.batch_size], self.link_batch(link_order, step)

    def link_batch(self, link_order: dict[str, torch.Tensor], step: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Step ``step``'s (src, pos, neg) local ids per link task, cycling through each task's edges."""
        out = {}
        for name, positions in link_order.items():
            if positions.numel() == 0:
                continue
            edges = self.part.links[name]
            pick = positions[torch.arange(step * self.link_pairs, (step + 1) * self.link_pairs) % positions.numel()]
            if not self.shuffle:  # evaluation: each edge once
                pick = positions[step * self.link_pairs:(step + 1) * self.link_pairs]
                if pick.numel() == 0:
                    continue
            draw = torch.randint(edges.candidates.numel(), (pick.numel(), self.negatives), generator=self.generator)
            out[name] = (edges.src[pick], edges.dst[pick], edges.candidates[draw])
        return out

    def batch(self, seeds: torch.Tensor, links: dict | None = None) -> MiniBatch:
        """Sample the neighbourhood of ``seeds`` (local node ids) and of the link pairs' nodes into a MiniBatch."""
        if not links:
            return self.gather(seeds, *self.sample(seeds))
        pieces = [seeds] + [t.reshape(-1) for triple in links.values() for t in triple]
        nodes, inverse = torch.unique(torch.cat(pieces), return_inverse=True)
        node_seed = torch.zeros(nodes.numel(), dtype=torch.bool)
        node_seed[inverse[:seeds.numel()]] = True  # node-task labels count only for the node seeds drawn
        pairs, offset = {}, seeds.numel()
        for name, (src, pos, neg) in links.items():
            p, k = src.numel(), neg.shape[1]
            pairs[name] = LinkPairs(inverse[offset:offset + p], inverse[offset + p:offset + 2 * p],
                                    inverse[offset + 2 * p:offset + 2 * p + p * k].view(p, k))
            offset += 2 * p + p * k
        return self.gather(nodes, *self.sample(nodes), node_seed=node_seed, links=pairs)

    def sample(self, seeds: torch.Tensor) -> tuple[torch.Tensor, list[Block]]:
        """DGL's neighbour sampling of ``seeds``: (input nodes, blocks as index tensors with relation ids)."""
        part = self.part
        input_nodes, _, dgl_blocks = self.sampler.sample_blocks(part.graph, seeds)
        etype = part.graph.edata[dgl.ETYPE]
        # DGL's sampler has built each block's source-major CSR already (edge ids = COO positions):
        # taking it saves an argsort per block.
        blocks = [Block.from_edges(*b.edges(), b.num_src_nodes(), b.num_dst_nodes(), etype=etype.index_select(0, b.edata[dgl.EID]),
                                   transposed=b.adj_tensors("csr"))
                  for b in dgl_blocks]
        return input_nodes, blocks

    def gather(self, seeds: torch.Tensor, input_nodes: torch.Tensor, blocks: list[Block],
               node_seed: torch.Tensor | None = None, links: dict[str, LinkPairs] | None = None) -> MiniBatch:
        """Features of ``input_nodes`` and labels of ``seeds`` around sampled ``blocks``; ``node_seed``
        limits node-task labels to some seeds (the rest are link-pair nodes)."""
        part = self.part
        features = self.features(input_nodes)
        seed_type = part.node_type[seeds]
        labels = {}
        for task in self.tasks:
            t = self.type_id[task["node_type"]]
            of_type = seed_type == t
            rows = torch.where(of_type, part.row[seeds], 0)  # other types' seeds read row 0 and are masked out
            table = part.tables[t]
            target = table[f"label_{task['name']}"][rows]
            mask = of_type & table[f"{self.split}_{task['name']}"][rows]
            if node_seed is not None:
                mask &= node_seed
            labels[task["name"]] = (target, mask)
        return MiniBatch(blocks, features, seed_type, labels, links or {})

    def features(self, input_nodes: torch.Tensor) -> TypedFeatures:
        """Standardised input features of local nodes ``input_nodes``, grouped by type."""
        part = self.part
        node_type = part.node_type[input_nodes]
        features = TypedFeatures(node_type)
        for t in range(len(part.ntypes)):
            positions = torch.nonzero(node_type == t).squeeze(1)
            if positions.numel() == 0:
                continue
            rows = part.row.index_select(0, input_nodes.index_select(0, positions))
            features.positions[t] = positions
            if part.dense[t] is not None:
                features.dense[t] = part.dense[t].index_select(0, rows)
            columns = part.tables[t]
            features.categorical[t] = [columns[k].index_select(0, rows).long().reshape(-1) for k in part.feature_keys[t]["categorical"]]
            features.multihot[t] = [columns[k].index_select(0, rows).long() for k in part.feature_keys[t]["multihot"]]
        return features


T = TypeVar("T")
_DONE = object()


def _rebuild_minibatches(source: tuple[str, int], recipe: dict) -> "NodeMinibatches":
    return NodeMinibatches(load_worker_partition(*source), **recipe)


class MinibatchStream:
    """``steps`` minibatches per epoch, round-robin over a worker's partitions (cycling the shorter
    ones), sampled in ``workers`` background processes, or in this process when ``workers`` is 0.

    Sampling processes take DGL sampling and feature gathering off the training process, whose
    Python thread is then free to launch GPU kernels. Measured on an H100 machine they cost more
    than they save at fanout 10,10 (each minibatch's ~30 tensors cross shared memory), so the
    default samples in the training process (:func:`to_model`).
    """

    def __init__(self, batches: list[NodeMinibatches], workers: int = 0, pin_memory: bool = False):
        self.batches, self.workers = batches, workers
        self._plans = [iter(()) for _ in batches]
        self._loader = None
        if workers > 0:
            self._keys = _EpochKeys()
            self._loader = torch.utils.data.DataLoader(
                _PlannedBatches(batches), sampler=self._keys, batch_size=None, num_workers=workers,
                pin_memory=pin_memory, persistent_workers=True, prefetch_factor=4,
                multiprocessing_context="spawn", worker_init_fn=_sampler_worker_init)

    def next_key(self, k: int) -> tuple[torch.Tensor, dict]:
        """The next (node seeds, link triples) of partition ``k``'s plan, starting a new pass when one ends."""
        try:
            return next(self._plans[k])
        except StopIteration:
            self._plans[k] = self.batches[k].plan()
            return next(self._plans[k])

    def epoch(self, steps: int) -> Iterator[MiniBatch]:
        keys = [(i % len(self.batches), *self.next_key(i % len(self.batches))) for i in range(steps)]
        if self._loader is None:
            return (self.batches[k].batch(seeds, links) for k, seeds, links in keys)
        self._keys.keys = keys
        return iter(self._loader)


class _EpochKeys:
    """The DataLoader's sampler: this epoch's keys, set before each pass."""

    keys: list = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self):
        return len(self.keys)


class _PlannedBatches(torch.utils.data.Dataset):
    def __init__(self, batches: list[NodeMinibatches]):
        self.batches = batches

    def __getitem__(self, key) -> MiniBatch:
        k, seeds, links = key
        return self.batches[k].batch(seeds, links)


def _sampler_worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # one core per sampling process
    dgl.seed(torch.initial_seed() % 2**31 + worker_id)


def on_device(batches: Iterable[MiniBatch], device: torch.device | str) -> Iterator[MiniBatch]:
    """``batches`` moved to ``device``; for CUDA through pinned memory with an asynchronous copy.

    On CUDA :func:`to_model` runs it inside :func:`prefetch`'s thread, so the host-to-device
    copy leaves the training step's critical path; on the CPU the move is a no-op.
    """
    device = torch.device(device)
    for batch in batches:
        if device.type == "cuda":
            pinned = batch if batch.seed_type.is_pinned() else batch.pin_memory()  # DataLoader workers pin already
            yield pinned.to(device, non_blocking=True)
        else:
            yield batch.to(device)


def to_model(batches: Iterable[MiniBatch], device: torch.device | str) -> Iterator[MiniBatch]:
    """``batches`` on ``device``, sampled ahead in a background thread only where that overlaps
    with the model: on CUDA, whose kernels leave the host's cores idle. On the CPU the model's
    OpenMP threads already hold every core the worker has; a sampling thread beside them only
    preempts them (measured on 2 cores: 12.0k seeds/s with the thread, 14.8k in line)."""
    moved = on_device(batches, device)
    return prefetch(moved) if torch.device(device).type == "cuda" else moved


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` while a background thread prepares up to ``depth`` of the next ones.

    DGL's sampler and torch's indexing release the GIL, so sampling the next
    batch overlaps with the model's step. An exception in the producer is
    raised here; leaving the loop early stops the producer.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            buffer.put(_Failure(exc))
            return
        buffer.put(_DONE)

    thread = threading.Thread(target=produce, name="graviti-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


@dataclass
class _Failure:
    exc: BaseException
