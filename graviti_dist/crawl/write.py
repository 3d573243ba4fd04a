"""Write crawls atomically: a temporary sibling directory renamed when complete
(``runtime.output``'s staging, publishing each shard as it goes).

A run that dies leaves at most a hidden ``.NAME.tmp-*`` directory, never a
crawl that looks finished; an existing crawl is replaced only with
``overwrite=True`` and only after the new one is complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from graviti_dist.crawl.schema import SCHEMA_FILE, CrawlSchema
from graviti_dist.runtime.output import check_output, publish, staging_dir


class CrawlWriter:
    """Context manager that writes a crawl shard by shard and publishes it on success.

    >>> with CrawlWriter(out, schema) as w:
    ...     w.write_nodes("user", table)
    ...     w.write_edges("follows", table)
    """

    def __init__(self, out: str | Path, schema: CrawlSchema, *, overwrite: bool = False):
        self.out = Path(out).absolute()
        self.schema = schema
        check_output(self.out, overwrite)
        self.tmp = staging_dir(self.out)
        self._shard_counts: dict[tuple[str, str], int] = {}

    def __enter__(self) -> "CrawlWriter":
        self.tmp.mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            (self.tmp / SCHEMA_FILE).write_text(self.schema.to_yaml())
            for folder in ("nodes", "edges"):
                names = self.schema.node_types if folder == "nodes" else self.schema.relations
                for name in names:
                    (self.tmp / folder / name).mkdir(parents=True, exist_ok=True)
            publish(self.tmp, self.out)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def write_nodes(self, node_type: str, table: pa.Table, shard: int | None = None) -> Path:
        """Write one shard of node rows (needs column ``id``)."""
        return self._write("nodes", node_type, table, shard)

    def write_edges(self, relation: str, table: pa.Table, shard: int | None = None) -> Path:
        """Write one shard of edge rows (needs columns ``src`` and ``dst``)."""
        return self._write("edges", relation, table, shard)

    def write_shard(self, folder: str, name: str, table: pa.Table, label: str) -> Path:
        """Write a shard under an explicit label; shards are read back in label order."""
        return write_shard(self.tmp, folder, name, table, label)

    def _write(self, folder: str, name: str, table: pa.Table, shard: int | None) -> Path:
        key = (folder, name)
        if shard is None:
            shard = self._shard_counts.get(key, 0)
        self._shard_counts[key] = shard + 1
        return write_shard(self.tmp, folder, name, table, f"{shard:05d}")


def write_shard(root: Path, folder: str, name: str, table: pa.Table, label: str) -> Path:
    """Write ``table`` as ``root/folder/name/part-<label>.parquet`` (zstd)."""
    path = Path(root) / folder / name / f"part-{label}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path
