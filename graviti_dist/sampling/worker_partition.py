"""One partition in memory, as a training worker holds it.

A worker loads its partition (DGL's files plus our halo features), so neighbour
sampling up to the halo depth never leaves the partition. Per node type, a table
over its local nodes holds features, labels and split masks; dense features are
standardised once into one float32 matrix.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graviti_dist._dgl import dgl
from graviti_dist.model import NodeInputSpec
from graviti_dist.partition import DEGREE, EDGE_INPUTS, FeatureInfo, Manifest, PartitionSet, StructuralInfo, TaskInfo
from graviti_dist.errors import GravitiError


@dataclass
class WorkerPartition:
    """One partition in memory: the local graph and, per node type, a table over its local nodes."""

    graph: "dgl.DGLGraph"
    manifest: Manifest
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
        return self.manifest.ntypes

    @property
    def edge_inputs(self) -> torch.Tensor | None:
        """(E_local, F) standardised inputs of every local edge (``Manifest.edge_inputs`` names the
        columns); None for a set without them."""
        return self.graph.edata[EDGE_INPUTS] if EDGE_INPUTS in self.graph.edata else None


def load_worker_partition(part_dir: str | Path, part_id: int, edge_inputs: bool = True) -> WorkerPartition:
    """Load partition ``part_id`` of the set at ``part_dir`` with its halo features; ``edge_inputs``
    False leaves the set's edge inputs out, so that sampling does not gather them for a model that
    reads none (``model.edge_inputs: false``)."""
    parts = PartitionSet(part_dir)
    manifest = parts.read_manifest()
    if not 0 <= part_id < manifest.num_parts:
        raise GravitiError(f"{part_dir}: no partition {part_id} (the set has {manifest.num_parts})")
    parts.verify_files(manifest, [part_id])  # sizes, before DGL reads a byte
    graph, node_feats, _, _, _, _, _ = dgl.distributed.load_partition(str(parts.part_config), part_id)
    halo_feats = dgl.data.utils.load_tensors(str(parts.halo_feats(part_id)))
    if not edge_inputs:
        graph.edata.pop(EDGE_INPUTS, None)
    node_type = graph.ndata[dgl.NTYPE].long()
    inner = graph.ndata["inner_node"].bool()
    nid = graph.ndata[dgl.NID]
    row = torch.full((graph.num_nodes(),), -1, dtype=torch.long)
    tables, inputs, keys, dense = [], [], [], []
    for t, name in enumerate(manifest.ntypes):
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
        spec, kinds = _input_spec(manifest.features[name], table)
        own = _standardised_dense(table, kinds["dense"], manifest.features[name])
        structural = _standardised_degrees(table, manifest.structural.get(name))
        if structural is not None:  # last, where an encoder that does not read them leaves them
            own = structural if own is None else torch.cat([own, structural], 1)
            spec = dataclasses.replace(spec, dense_width=spec.dense_width + structural.shape[1],
                                       structural_width=structural.shape[1])
        inputs.append(spec)
        keys.append(kinds)
        dense.append(own)
    part = WorkerPartition(graph, manifest, node_type, row, inner, tables, inputs, keys, source=(str(part_dir), part_id),
                           dense=dense)
    if manifest.link_tasks:
        local_of = _local_of_type_id(parts, part)
        part.links = {t.name: _link_edges(parts, part, t, local_of) for t in manifest.link_tasks}
    return part


@dataclass
class PartitionArrays:
    """A loaded partition as plain numpy arrays (no DGL graph, no tensors): what Ray's object store
    holds once per node, so the training worker and the graph store beside it share one copy
    (``sampling.ray_store.load_shared``). Numpy arrays travel through Ray without copies; a
    DGL graph or a torch tensor would be pickled into bytes."""

    csc: tuple[np.ndarray, np.ndarray, np.ndarray]  # the local graph's in-edges: indptr, source, edge id
    num_nodes: int
    ndata: dict[str, np.ndarray]
    edata: dict[str, np.ndarray]
    fields: dict[str, Any]  # WorkerPartition's other fields, tensors as numpy arrays


def partition_arrays(part: WorkerPartition) -> PartitionArrays:
    """``part`` as numpy arrays, sharing memory with it (nothing is copied here)."""
    graph = part.graph
    others = {f.name: _as_numpy(getattr(part, f.name)) for f in dataclasses.fields(part) if f.name != "graph"}
    return PartitionArrays(tuple(t.numpy() for t in graph.adj_tensors("csc")), graph.num_nodes(),
                           {k: v.numpy() for k, v in graph.ndata.items()}, {k: v.numpy() for k, v in graph.edata.items()},
                           others)


def from_arrays(arrays: PartitionArrays) -> WorkerPartition:
    """The partition over ``arrays`` without copying them (they may be read-only views into Ray's
    object store: sampling and gathering only read). The graph keeps only its CSC, the format
    in-neighbour sampling reads: DGL would otherwise build and keep a COO copy beside it."""
    with warnings.catch_warnings():  # torch warns once that the object store's arrays are read-only
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        indptr, indices, eids = (torch.from_numpy(a) for a in arrays.csc)
        graph = dgl.graph(("csc", (indptr, indices, eids)), num_nodes=arrays.num_nodes).formats("csc")
        for key, value in arrays.ndata.items():
            graph.ndata[key] = torch.from_numpy(value)
        for key, value in arrays.edata.items():
            graph.edata[key] = torch.from_numpy(value)
        return WorkerPartition(graph=graph, **_as_torch(arrays.fields))


def _map_leaves(value, leaf: type, convert):
    """``value`` with every ``leaf`` inside it (in lists, dicts and LinkEdges) passed through ``convert``."""
    if isinstance(value, leaf):
        return convert(value)
    if isinstance(value, LinkEdges):
        return dataclasses.replace(value, **{f.name: _map_leaves(getattr(value, f.name), leaf, convert)
                                             for f in dataclasses.fields(value)})
    if isinstance(value, dict):
        return {k: _map_leaves(v, leaf, convert) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_leaves(v, leaf, convert) for v in value]
    return value


def _as_numpy(value):
    return _map_leaves(value, torch.Tensor, torch.Tensor.numpy)


def _as_torch(value):
    return _map_leaves(value, np.ndarray, torch.from_numpy)


def _standardised_dense(table: dict[str, torch.Tensor], keys: list[str], features: dict[str, FeatureInfo]) -> torch.Tensor | None:
    """The ``keys`` columns of ``table`` as one float32 matrix with zero mean and unit variance per
    column (raw epoch timestamps would swamp the rest); the columns leave ``table``. Done once per
    partition: gathering one matrix per step costs a fraction of gathering, concatenating and
    standardising the columns each time. The statistics are the set's (every node of the type,
    recorded by the partitioner), so rows of any partition are scaled alike; a set without them
    falls back to this partition's own rows."""
    if not keys:
        return None
    rows = next(iter(table.values())).shape[0]
    dense = torch.cat([table.pop(k).float().reshape(rows, -1) for k in keys], dim=1)
    infos = [features[k[len("feat_"):]] for k in keys]
    if all(info.mean is not None for info in infos):
        mean = torch.tensor([m for info in infos for m in info.mean], dtype=torch.float32)
        std = torch.tensor([s for info in infos for s in info.std], dtype=torch.float32)
        dense.sub_(mean).div_(std.clamp(min=1e-6))
    elif rows:
        dense.sub_(dense.mean(0)).div_(dense.std(0).clamp(min=1e-6) if rows > 1 else 1.0)
    return dense


def _standardised_degrees(table: dict[str, torch.Tensor], info: StructuralInfo | None) -> torch.Tensor | None:
    """The type's structural columns (the partitioner's log in-degrees), standardised with the set's
    statistics; they leave ``table``. None for a set written without them."""
    if info is None or DEGREE not in table:
        return None
    mean = torch.tensor(info.mean, dtype=torch.float32)
    std = torch.tensor(info.std, dtype=torch.float32).clamp(min=1e-6)
    return table.pop(DEGREE).float().sub_(mean).div_(std)


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


def _local_of_type_id(parts: PartitionSet, part: WorkerPartition) -> list[torch.Tensor]:
    """Per node type: local node id of each of the type's (crawl-order) ids, -1 where not in this partition."""
    out = []
    shuffled = part.graph.ndata[dgl.NID].numpy()
    for t, name in enumerate(part.ntypes):
        id_map = parts.read_id_map(name, columns=["shuffled_id", "type_id"])
        order = np.argsort(id_map["shuffled_id"].to_numpy())
        sorted_shuffled = id_map["shuffled_id"].to_numpy()[order]
        local = torch.nonzero(part.node_type == t).squeeze(1).numpy()
        type_id = id_map["type_id"].to_numpy()[order][np.searchsorted(sorted_shuffled, shuffled[local])]
        table = torch.full((id_map.num_rows,), -1, dtype=torch.long)
        table[torch.from_numpy(type_id)] = torch.from_numpy(local).long()
        out.append(table)
    return out


def _link_edges(parts: PartitionSet, part: WorkerPartition, task: TaskInfo, local_of: list[torch.Tensor]) -> LinkEdges:
    relation = part.manifest.relation(task.relation)
    src_type, dst_type = part.ntypes.index(relation.src), part.ntypes.index(relation.dst)
    table = parts.read_link_split(task.name)
    src = local_of[src_type][torch.tensor(table["src"].to_numpy(), dtype=torch.long)]
    dst = local_of[dst_type][torch.tensor(table["dst"].to_numpy(), dtype=torch.long)]
    keep = (src >= 0) & (dst >= 0)
    keep &= part.inner[src.clamp(min=0)]
    split = torch.tensor(table["split"].to_numpy(), dtype=torch.long)
    candidates = torch.nonzero(part.node_type == dst_type).squeeze(1)
    return LinkEdges(src[keep], dst[keep], split[keep], src_type, dst_type, candidates)


def _input_spec(features: dict[str, FeatureInfo], table: dict[str, torch.Tensor]) -> tuple[NodeInputSpec, dict[str, list[str]]]:
    kinds: dict[str, list[str]] = {"dense": [], "categorical": [], "multihot": []}
    categorical, multihot, dense_width = [], [], 0
    for fname, info in features.items():
        key = f"feat_{fname}"
        if info.kind in ("numeric", "vector"):
            kinds["dense"].append(key)
            dense_width += table[key].shape[1]
        elif info.kind == "categorical":
            kinds["categorical"].append(key)
            categorical.append(int(info.categories))
        else:
            kinds["multihot"].append(key)
            multihot.append(int(info.width))
    return NodeInputSpec(dense_width, tuple(categorical), tuple(multihot)), kinds
