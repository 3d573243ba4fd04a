"""From one partition to model-ready minibatches: DGL samples, plain tensors come out.

A worker loads its partition (DGL's files plus our halo features), so
neighbour sampling up to the halo depth never leaves the partition. Seeds mix
every node task (a seed carries whichever labels it has); blocks become
:class:`graviti_dist.model.Block` index tensors with relation ids, and input
features are grouped per node type as :class:`TypedFeatures`.

Not yet here (training issue): link-task pairs with negatives, edge features
of halo edges (DGL keeps only inner edges' data).
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import torch

from graviti_dist._dgl import dgl
from graviti_dist.model import Block, MiniBatch, NodeInputSpec, TypedFeatures
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
    tables, inputs, keys = [], [], []
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
    return WorkerPartition(graph, manifest, node_type, row, inner, tables, inputs, keys)


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

    ``standardize`` maps each dense feature column to zero mean and unit variance
    with this partition's statistics (raw epoch timestamps would swamp the rest).
    """

    def __init__(self, part: WorkerPartition, fanouts: list[int], batch_size: int, split: str = "train",
                 seed: int = 0, shuffle: bool = True, tasks: list[str] | None = None):
        self.part, self.batch_size, self.split, self.shuffle = part, batch_size, split, shuffle
        self.sampler = dgl.dataloading.NeighborSampler(list(fanouts))
        self.generator = torch.Generator().manual_seed(seed)
        self.tasks = [t for t in part.manifest["tasks"] if t["type"] != "link" and (tasks is None or t["name"] in tasks)]
        type_id = {name: i for i, name in enumerate(part.ntypes)}
        eligible = torch.zeros(part.graph.num_nodes(), dtype=torch.bool)
        for task in self.tasks:
            t = type_id[task["node_type"]]
            local = torch.nonzero(part.inner & (part.node_type == t)).squeeze(1)
            eligible[local] |= part.tables[t][f"{split}_{task['name']}"][part.row[local]]
        self.seeds = torch.nonzero(eligible).squeeze(1)
        self.type_id = type_id
        self.dense_stats = []
        for t, table in enumerate(part.tables):
            dense = self._dense(t, torch.arange(next(iter(table.values())).shape[0]) if table else torch.zeros(0, dtype=torch.long))
            if dense is None:
                self.dense_stats.append(None)
            else:
                self.dense_stats.append((dense.mean(0), dense.std(0).clamp(min=1e-6)))

    def __len__(self) -> int:
        return -(-self.seeds.numel() // self.batch_size)

    def _dense(self, t: int, rows: torch.Tensor) -> torch.Tensor | None:
        keys = self.part.feature_keys[t]["dense"]
        if not keys:
            return None
        return torch.cat([self.part.tables[t][k][rows].float().reshape(len(rows), -1) for k in keys], dim=1)

    def __iter__(self) -> Iterator[MiniBatch]:
        order = self.seeds[torch.randperm(self.seeds.numel(), generator=self.generator)] if self.shuffle else self.seeds
        for start in range(0, order.numel(), self.batch_size):
            yield self.batch(order[start:start + self.batch_size])

    def batch(self, seeds: torch.Tensor) -> MiniBatch:
        """Sample the neighbourhood of ``seeds`` (local node ids) into a MiniBatch."""
        return self.gather(seeds, *self.sample(seeds))

    def sample(self, seeds: torch.Tensor) -> tuple[torch.Tensor, list[Block]]:
        """DGL's neighbour sampling of ``seeds``: (input nodes, blocks as index tensors with relation ids)."""
        part = self.part
        input_nodes, _, dgl_blocks = self.sampler.sample_blocks(part.graph, seeds)
        etype = part.graph.edata[dgl.ETYPE]
        blocks = [Block.from_edges(*b.edges(), b.num_src_nodes(), b.num_dst_nodes(), etype=etype[b.edata[dgl.EID]])
                  for b in dgl_blocks]
        return input_nodes, blocks

    def gather(self, seeds: torch.Tensor, input_nodes: torch.Tensor, blocks: list[Block]) -> MiniBatch:
        """Features of ``input_nodes`` and labels of ``seeds`` around sampled ``blocks``."""
        part = self.part
        features = self._features(input_nodes)
        seed_type = part.node_type[seeds]
        labels = {}
        for task in self.tasks:
            t = self.type_id[task["node_type"]]
            of_type = seed_type == t
            rows = torch.where(of_type, part.row[seeds], 0)  # other types' seeds read row 0 and are masked out
            table = part.tables[t]
            target = table[f"label_{task['name']}"][rows]
            mask = of_type & table[f"{self.split}_{task['name']}"][rows]
            labels[task["name"]] = (target, mask)
        return MiniBatch(blocks, features, seed_type, labels)

    def _features(self, input_nodes: torch.Tensor) -> TypedFeatures:
        part = self.part
        node_type = part.node_type[input_nodes]
        features = TypedFeatures(node_type)
        for t in range(len(part.ntypes)):
            positions = torch.nonzero(node_type == t).squeeze(1)
            if positions.numel() == 0:
                continue
            rows = part.row[input_nodes[positions]]
            features.positions[t] = positions
            dense = self._dense(t, rows)
            if dense is not None:
                mean, std = self.dense_stats[t]
                features.dense[t] = (dense - mean) / std
            features.categorical[t] = [part.tables[t][k][rows].long().reshape(-1) for k in part.feature_keys[t]["categorical"]]
            features.multihot[t] = [part.tables[t][k][rows].long() for k in part.feature_keys[t]["multihot"]]
        return features


T = TypeVar("T")
_DONE = object()


def on_device(batches: Iterable[MiniBatch], device: torch.device | str) -> Iterator[MiniBatch]:
    """``batches`` moved to ``device``; for CUDA through pinned memory with an asynchronous copy.

    Meant to run inside :func:`prefetch`'s thread, so the host-to-device copy leaves the
    training step's critical path.
    """
    device = torch.device(device)
    for batch in batches:
        if device.type == "cuda":
            yield batch.pin_memory().to(device, non_blocking=True)
        else:
            yield batch.to(device)


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
