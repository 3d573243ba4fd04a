"""MUSAE Twitch importer (benedekrozemberczki/MUSAE ``input/`` layout).

Each language folder ``L`` holds ``L_edges.csv`` (``from,to`` on graph node
ids), ``L.json`` (``{node_id: [active feature indices]}`` in a 3,170-wide
space shared by every language) and ``L_target.csv``
(``id,days,mature,views,partner,new_id``; ``new_id`` is the graph node id,
``id`` the original Twitch id, which the crawl keeps).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graviti_dist.crawl.importers._source import read_table, require_columns, require_file, unique_rows
from graviti_dist.crawl.schema import CrawlSchema
from graviti_dist.crawl.write import CrawlWriter
from graviti_dist.errors import GravitiError, examples

FEATURE_WIDTH = 3170
TARGET_COLUMNS = ["id", "days", "mature", "views", "partner", "new_id"]


def twitch_schema(multi_language: bool) -> CrawlSchema:
    tasks = [
        {"name": "mature", "type": "binary", "node_type": "user", "label": "mature"},
        {"name": "partner", "type": "binary", "node_type": "user", "label": "partner"},
        {"name": "days", "type": "regression", "node_type": "user", "label": "days"},
        {"name": "views", "type": "regression", "node_type": "user", "label": "views", "transform": "log1p"},
    ]
    labels = ["mature", "partner", "days", "views"]
    if multi_language:
        tasks.append({"name": "language", "type": "multiclass", "node_type": "user", "label": "language"})
        labels.append("language")
    return CrawlSchema.model_validate({
        "name": "twitch",
        "node_types": {"user": {
            "features": [{"name": "features", "kind": "multihot", "width": FEATURE_WIDTH}],
            "labels": labels,
        }},
        "relations": {"friends": {"src": "user", "dst": "user", "symmetric": True}},
        "tasks": tasks,
    })


def _language_files(folder: Path) -> tuple[str, Path, Path, Path]:
    if not folder.is_dir():
        raise GravitiError(f"{folder}: not a directory; expected a MUSAE Twitch language folder such as twitch/ENGB")
    lang = folder.name
    edges, feats, target = folder / f"{lang}_edges.csv", folder / f"{lang}.json", folder / f"{lang}_target.csv"
    for path in (edges, feats, target):
        require_file(path)
    return lang, edges, feats, target


def _read_language(folder: Path, dedupe: str) -> tuple[pa.Table, pa.Table]:
    lang, edges_path, feats_path, target_path = _language_files(folder)
    target = read_table(target_path)
    require_columns(target, TARGET_COLUMNS, target_path)
    target = unique_rows(target, "new_id", target_path, dedupe)  # MUSAE's FR repeats users
    order = np.argsort(target["new_id"].to_numpy())
    target = target.take(pa.array(order))
    new_ids = target["new_id"].to_numpy()
    if not np.array_equal(new_ids, np.arange(len(new_ids))):
        missing = np.setdiff1d(np.arange(new_ids.max() + 1 if new_ids.size else 0), new_ids)
        raise GravitiError(f"{target_path}: column 'new_id' must number the users 0..N-1 without gaps; "
                           f"missing {examples(missing.tolist())}" + (f", negative {examples(new_ids[new_ids < 0].tolist())}"
                                                                       if (new_ids < 0).any() else ""))
    try:
        sparse = json.loads(feats_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GravitiError(f"{feats_path}: not valid JSON ({exc})") from None
    features = [sparse.get(str(i), []) for i in range(len(new_ids))]
    nodes = pa.table({
        "id": target["id"].cast(pa.int64()),
        "language": pa.array([lang] * len(new_ids)),
        "features": pa.array(features, type=pa.list_(pa.int32())),
        "days": target["days"].cast(pa.int64()),
        "mature": target["mature"].cast(pa.bool_()),
        "views": target["views"].cast(pa.int64()),
        "partner": target["partner"].cast(pa.bool_()),
    })
    edges = read_table(edges_path)
    require_columns(edges, ["from", "to"], edges_path)
    ends = {}
    for column in ("from", "to"):
        local = edges[column].to_numpy()
        bad = local[(local < 0) | (local >= len(new_ids))]
        if bad.size:
            raise GravitiError(f"{edges_path}: column {column!r} has node ids with no row in {target_path.name}: {examples(bad.tolist())}")
        ends[column] = pc.take(nodes["id"], pa.array(local))
    return nodes, pa.table({"src": ends["from"], "dst": ends["to"]})


def import_twitch(folders: list[str | Path], out: str | Path, *, overwrite: bool = False,
                  dedupe: str = "error") -> CrawlSchema:
    """Import one or more MUSAE Twitch language folders into one crawl at ``out`` (``dedupe="first"``
    keeps the first row of a user its target file repeats)."""
    if not folders:
        raise GravitiError("import twitch: name at least one language folder (e.g. ../shared/datasets/twitch/ENGB)")
    multi_language = len(folders) > 1
    schema = twitch_schema(multi_language)
    parts = [_read_language(Path(f), dedupe) for f in folders]
    all_ids = pa.chunked_array([nodes["id"] for nodes, _ in parts])
    counts = pc.value_counts(all_ids)
    clash = counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()
    if clash:
        raise GravitiError(f"Twitch ids appear in more than one language folder: {examples(clash)}")
    with CrawlWriter(out, schema, overwrite=overwrite) as writer:
        for nodes, edges in parts:
            if not multi_language:
                nodes = nodes.drop_columns(["language"])
            writer.write_nodes("user", nodes)
            writer.write_edges("friends", edges)
    return schema
