"""In-memory crawl tables: what loading a crawl produces.

Contiguous ids are row positions: node ``i`` of type ``t`` is row ``i`` of
``Crawl.nodes[t]`` (shards in sorted file order), and ``ids[i]`` is its raw
crawl id. Arrays are numpy so that DGL, torch or plain numpy can adopt them
without copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from graviti_dist.crawl.schema import CrawlSchema


@dataclass
class FeatureArray:
    """One node feature, encoded for a model.

    numeric/vector: float32 ``(N, width)``; categorical: int64 codes ``(N,)``
    with ``categories`` listing the raw values (code ``k`` is ``categories[k]``);
    multihot: int64 active indices padded with -1 to ``(N, max_active)``.
    """

    kind: str
    values: np.ndarray
    width: int
    categories: list | None = None
    missing: int = 0  # values that were null/NaN and were filled with 0


@dataclass
class TaskLabels:
    """A node task's targets: ``values[i]`` counts only where ``mask[i]``.

    binary/regression: float32 ``(N,)`` (regression already transformed);
    multiclass: int64 class index ``(N,)`` with ``classes`` the raw values;
    multilabel: float32 ``(N, width)``.
    """

    values: np.ndarray
    mask: np.ndarray
    classes: list | None = None

    @property
    def coverage(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


@dataclass
class NodeTable:
    ids: pa.Array  # raw ids: int64 or large_string
    features: dict[str, FeatureArray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class EdgeTable:
    src: np.ndarray  # int64 contiguous ids of the relation's src type
    dst: np.ndarray
    ts: np.ndarray | None = None  # int64
    weight: np.ndarray | None = None  # float32
    self_loops: int = 0  # found in the files (dropped when the schema says so)
    duplicates: int = 0

    def __len__(self) -> int:
        return len(self.src)

    def select(self, keep: np.ndarray) -> "EdgeTable":
        """The edges where ``keep`` is true, attributes and counters carried along."""
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return EdgeTable(self.src[keep], self.dst[keep], pick(self.ts), pick(self.weight), self.self_loops, self.duplicates)


@dataclass
class LoadReport:
    """What loading changed or noticed, for the summary."""

    dropped_duplicate_nodes: dict[str, int] = field(default_factory=dict)
    dropped_dangling_edges: dict[str, int] = field(default_factory=dict)
    dropped_self_loops: dict[str, int] = field(default_factory=dict)
    dropped_duplicate_edges: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Crawl:
    schema: CrawlSchema
    nodes: dict[str, NodeTable]
    edges: dict[str, EdgeTable]
    labels: dict[str, TaskLabels]  # node tasks only; link tasks use their relation's edges
    report: LoadReport = field(default_factory=LoadReport)

    def num_nodes(self, node_type: str) -> int:
        return len(self.nodes[node_type])
