"""Plain edge-list importer: a CSV/Parquet edge list with an optional node table.

Node-table columns become numeric features, except the id column and the
columns named as labels (``--label COLUMN:TYPE``, one task per label). Without
a node table, the nodes are the distinct endpoints and have no features.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from graviti_dist.crawl.importers._source import read_table, require_columns, unique_rows
from graviti_dist.crawl.schema import NODE_TASK_TYPES, CrawlSchema, schema_from_dict
from graviti_dist.crawl.write import CrawlWriter
from graviti_dist.errors import GravitiError


def parse_label_specs(specs: list[str]) -> dict[str, str]:
    """``["col:binary", ...]`` -> ``{"col": "binary"}``, with clear errors."""
    labels = {}
    for spec in specs:
        column, _, task_type = spec.partition(":")
        if not column or task_type not in NODE_TASK_TYPES or task_type == "multilabel":
            raise GravitiError(f"--label {spec!r}: expected COLUMN:TYPE with TYPE one of binary, multiclass, regression")
        labels[column] = task_type
    return labels


def import_edgelist(
    edges_path: str | Path,
    out: str | Path,
    *,
    nodes_path: str | Path | None = None,
    src_col: str = "src",
    dst_col: str = "dst",
    id_col: str = "id",
    labels: dict[str, str] | None = None,
    symmetric: bool = False,
    node_type: str = "node",
    relation: str = "edge",
    delimiter: str = ",",
    overwrite: bool = False,
    dedupe: str = "error",
) -> CrawlSchema:
    """Import an edge list (and optional node table) into a single-type crawl at ``out``."""
    labels = labels or {}
    edges_path = Path(edges_path)
    edges = read_table(edges_path, delimiter=delimiter)
    require_columns(edges, [src_col, dst_col], edges_path)
    edges = pa.table({"src": edges[src_col], "dst": edges[dst_col]})
    if nodes_path is None:
        if labels:
            raise GravitiError("--label needs a node table (--nodes) to read the label columns from")
        ids = pc.unique(pa.chunked_array(edges["src"].chunks + edges["dst"].chunks))
        nodes = pa.table({"id": ids.take(pc.array_sort_indices(ids))})
        features = []
    else:
        nodes_path = Path(nodes_path)
        raw = read_table(nodes_path, delimiter=delimiter)
        require_columns(raw, [id_col, *labels], nodes_path)
        raw = unique_rows(raw, id_col, nodes_path, dedupe)
        feature_cols = [c for c in raw.column_names if c != id_col and c not in labels]
        skipped = [c for c in feature_cols if not (pa.types.is_integer(raw[c].type) or pa.types.is_floating(raw[c].type) or pa.types.is_boolean(raw[c].type))]
        if skipped:
            raise GravitiError(f"{nodes_path}: non-numeric column(s) {skipped}; declare them with --label or remove them")
        nodes = raw.rename_columns(["id" if c == id_col else c for c in raw.column_names])
        features = [{"name": c, "kind": "numeric"} for c in feature_cols]
    schema = schema_from_dict({
        "name": Path(out).name,
        "node_types": {node_type: {"features": features, "labels": list(labels)}},
        "relations": {relation: {"src": node_type, "dst": node_type, "symmetric": symmetric}},
        "tasks": [{"name": c, "type": t, "node_type": node_type, "label": c} for c, t in labels.items()],
    }, source="import edgelist")
    with CrawlWriter(out, schema, overwrite=overwrite) as writer:
        writer.write_nodes(node_type, nodes)
        writer.write_edges(relation, edges)
    return schema
