"""Batch predictions on disk: every file name of ``graviti infer``'s output, and its readers/writers.

An output directory::

    predictions/<node type>/part-<i>.parquet   # id (raw), node_type, embedding, one column per node task
    explanations/<node type>/part-<i>.parquet  # with --explain K: id, rank, neighbour_id, neighbour_type,
                                               #   relation, weight (last-layer attention), ts
    recommendations/<task>.parquet             # id (raw source), items (raw destinations), scores
    inference.json                             # the run's summary: run, partitions, rows, tasks, time
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch

PREDICTIONS_DIR = "predictions"
EXPLANATIONS_DIR = "explanations"
RECOMMENDATIONS_DIR = "recommendations"
SUMMARY = "inference.json"


class Predictions:
    """Paths and typed readers/writers of the predictions directory at ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def part_path(self, node_type: str, part_id: int) -> Path:
        return self.root / PREDICTIONS_DIR / node_type / f"part-{part_id:05d}.parquet"

    def explanations_path(self, node_type: str, part_id: int) -> Path:
        return self.root / EXPLANATIONS_DIR / node_type / f"part-{part_id:05d}.parquet"

    def recommendations_path(self, task: str) -> Path:
        return self.root / RECOMMENDATIONS_DIR / f"{task}.parquet"

    @property
    def summary_path(self) -> Path:
        return self.root / SUMMARY

    def write_part(self, node_type: str, part_id: int, table: pa.Table) -> None:
        path = self.part_path(node_type, part_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)

    def read_node_type(self, node_type: str, columns: list[str] | None = None) -> pa.Table:
        """Every partition's predictions for ``node_type`` as one table."""
        return pads.dataset(self.root / PREDICTIONS_DIR / node_type, format="parquet").to_table(columns=columns)

    def write_explanations(self, node_type: str, part_id: int, table: pa.Table) -> None:
        path = self.explanations_path(node_type, part_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)

    def read_explanations(self, node_type: str) -> pa.Table:
        """Every partition's explanations for ``node_type``: one row per (node, ranked neighbour)."""
        return pads.dataset(self.root / EXPLANATIONS_DIR / node_type, format="parquet").to_table()

    def read_embeddings(self, node_type: str) -> pa.Table:
        return self.read_node_type(node_type, columns=["id", "embedding"])

    def write_recommendations(self, task: str, table: pa.Table) -> None:
        path = self.recommendations_path(task)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)

    def read_recommendations(self, task: str) -> pa.Table:
        return pq.read_table(self.recommendations_path(task))

    def write_summary(self, summary: dict) -> None:
        self.summary_path.write_text(json.dumps(summary, indent=2))

    def read_summary(self) -> dict:
        return json.loads(self.summary_path.read_text())


def list_column(values: torch.Tensor) -> pa.Array:
    """Rows of a 2-D tensor (or scalars of a 1-D one) as a Parquet list<float> column."""
    values = values.float().contiguous()
    width = values.shape[1] if values.dim() == 2 else 1
    offsets = pa.array(np.arange(0, values.shape[0] * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1).numpy()))
