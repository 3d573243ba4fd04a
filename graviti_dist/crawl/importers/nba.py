"""FairGNN NBA importer: players' Twitter follow graph with season statistics.

``nba.csv`` has one row per player (``user_id`` is the Twitter id, ``SALARY``
is binary with -1 for unknown, ``AGE``, ``country`` and many statistics);
``nba_relationship.txt`` has tab-separated ``follower followee`` Twitter ids.
A few follow lines name ids with no row: the source is known to have them, so
they are dropped and counted rather than failing the import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graviti_dist.crawl.importers._source import read_table, require_columns, unique_rows
from graviti_dist.crawl.schema import CrawlSchema
from graviti_dist.crawl.write import CrawlWriter
from graviti_dist.errors import GravitiError

LABEL_COLUMNS = {"SALARY": "salary", "AGE": "age", "country": "country"}


def nba_schema(stats_width: int) -> CrawlSchema:
    return CrawlSchema.model_validate({
        "name": "nba",
        "node_types": {"player": {
            "features": [{"name": "stats", "kind": "vector", "width": stats_width}],
            "labels": list(LABEL_COLUMNS.values()),
        }},
        "relations": {"follows": {"src": "player", "dst": "player", "duplicates": "drop"}},
        "tasks": [
            {"name": "salary", "type": "binary", "node_type": "player", "label": "salary"},
            {"name": "age", "type": "regression", "node_type": "player", "label": "age"},
            {"name": "country", "type": "binary", "node_type": "player", "label": "country"},
        ],
    })


def import_nba(folder: str | Path, out: str | Path, *, overwrite: bool = False, dedupe: str = "error") -> dict:
    """Import ``folder`` (nba.csv + nba_relationship.txt) into a crawl at ``out``.

    Returns counts of what was dropped from the source, for the caller to report.
    """
    folder = Path(folder)
    players_path, follows_path = folder / "nba.csv", folder / "nba_relationship.txt"
    players = read_table(players_path, column_types={"user_id": pa.int64()})
    require_columns(players, ["user_id", *LABEL_COLUMNS], players_path)
    players = unique_rows(players, "user_id", players_path, dedupe)
    stat_columns = [c for c in players.column_names if c not in ("user_id", *LABEL_COLUMNS)]
    non_numeric = [c for c in stat_columns if not (pa.types.is_integer(players[c].type) or pa.types.is_floating(players[c].type))]
    if non_numeric:
        raise GravitiError(f"{players_path}: statistic columns must be numeric, found {non_numeric}")
    stats = np.stack([players[c].to_numpy(zero_copy_only=False).astype(np.float32) for c in stat_columns], axis=1)
    salary = players["SALARY"]
    nodes = pa.table({
        "id": players["user_id"],
        "stats": pa.FixedSizeListArray.from_arrays(pa.array(stats.ravel()), len(stat_columns)),
        "salary": pc.if_else(pc.equal(salary, -1), pa.scalar(None, salary.type), salary),
        "age": players["AGE"].cast(pa.float64()),
        "country": players["country"],
    })
    follows = read_table(follows_path, delimiter="\t", header=False, column_names=["src", "dst"],
                         column_types={"src": pa.int64(), "dst": pa.int64()})
    known = pc.and_(pc.is_in(follows["src"], value_set=nodes["id"]), pc.is_in(follows["dst"], value_set=nodes["id"]))
    dropped = len(follows) - pc.sum(known).as_py()
    with CrawlWriter(out, nba_schema(len(stat_columns)), overwrite=overwrite) as writer:
        writer.write_nodes("player", nodes)
        writer.write_edges("follows", follows.filter(known))
    return {"players": len(nodes), "follows": len(follows) - dropped, "dropped_unknown_follows": dropped}
