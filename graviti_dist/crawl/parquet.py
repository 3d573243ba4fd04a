"""Parquet access for crawl tables, through ``pyarrow.dataset``.

Each folder (``nodes/<type>/`` or ``edges/<relation>/``) may hold many shards.
We check every shard's footer first so that a truncated or foreign file is
named in the error, then stream only the needed columns batch by batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from graviti_dist.errors import GravitiError, examples

log = logging.getLogger(__name__)

BATCH_ROWS = 1 << 20


@dataclass(frozen=True)
class Shards:
    """The Parquet shards of one table folder, in a fixed (sorted) order."""

    folder: Path
    files: tuple[Path, ...]
    schemas: tuple[pa.Schema, ...]

    def num_rows(self) -> int:
        return sum(pq.read_metadata(f).num_rows for f in self.files)


def open_shards(folder: Path, what: str) -> Shards:
    """List and footer-check the shards of ``folder``; ``what`` names the table in errors."""
    if not folder.is_dir():
        raise GravitiError(f"{folder}: missing folder for {what}; the schema declares it")
    # Only regular files directly in the folder: a stale ``old/part-0.parquet`` below it was read
    # too once, doubling the edges. Hidden and ``_`` names (Spark's ``_SUCCESS``, ``.crc``) are skipped.
    entries = [p for p in folder.iterdir() if not p.name.startswith((".", "_"))]
    files = tuple(sorted(p for p in entries if p.suffix == ".parquet" and p.is_file()))
    ignored = sorted(p.name + ("/" if p.is_dir() else "") for p in entries if p not in files)
    if ignored:
        log.warning("%s: ignored %d entr%s that %s not a .parquet file directly in the folder: %s", folder,
                    len(ignored), "y" if len(ignored) == 1 else "ies", "is" if len(ignored) == 1 else "are",
                    examples(ignored))
    if not files:
        raise GravitiError(f"{folder}: no .parquet files for {what}; the schema declares it")
    schemas = []
    for path in files:
        try:
            schemas.append(pq.read_schema(path))
        except (pa.ArrowException, OSError) as exc:
            raise GravitiError(f"{path}: unreadable Parquet file ({exc}); is it truncated or not Parquet?") from None
    return Shards(folder, files, tuple(schemas))


def check_columns(shards: Shards, required: dict[str, Callable[[pa.DataType], bool]], expected: dict[str, str]) -> None:
    """Every shard must have each ``required`` column with an accepted type.

    ``required`` maps a column to a predicate on its Arrow type; ``expected``
    describes the accepted types for the message.
    """
    for path, schema in zip(shards.files, shards.schemas):
        for column, accepts in required.items():
            index = schema.get_field_index(column)
            if index < 0:
                present = ", ".join(schema.names)
                raise GravitiError(f"{path}: missing column {column!r} (columns present: {present})")
            dtype = schema.field(index).type
            if pa.types.is_dictionary(dtype):
                dtype = dtype.value_type
            if not accepts(dtype):
                raise GravitiError(f"{path}: column {column!r} has type {dtype}, expected {expected[column]}")


def iter_batches(shards: Shards, columns: list[str]) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Stream ``columns`` from every shard in order, as (file, record batch)."""
    dataset = ds.dataset([str(f) for f in shards.files], format="parquet")
    for fragment in dataset.get_fragments():
        path = Path(fragment.path)
        try:
            for batch in fragment.to_batches(columns=columns, batch_size=BATCH_ROWS):
                yield path, batch
        except pa.ArrowException as exc:
            raise GravitiError(f"{path}: could not read columns {columns}: {exc}") from None


def read_columns(shards: Shards, columns: list[str]) -> dict[str, pa.ChunkedArray]:
    """Read ``columns`` of every shard into chunked arrays (one chunk per batch)."""
    chunks: dict[str, list[pa.Array]] = {c: [] for c in columns}
    for _, batch in iter_batches(shards, columns):
        for column in columns:
            array = batch.column(column)
            if pa.types.is_dictionary(array.type):
                array = array.dictionary_decode()
            chunks[column].append(array)
    return {c: _concat_same_kind(chunks[c], c, shards) for c in columns}


def _concat_same_kind(arrays: list[pa.Array], column: str, shards: Shards) -> pa.ChunkedArray:
    """Shards may store a column as int32 in one file and int64 in another: unify."""
    if not arrays:
        return pa.chunked_array([], pa.null())
    types = {a.type for a in arrays}
    if len(types) == 1:
        return pa.chunked_array(arrays)
    try:
        target = pa.unify_schemas([pa.schema([(column, t)]) for t in types], promote_options="permissive").field(0).type
        return pa.chunked_array([a.cast(target) for a in arrays])
    except pa.ArrowException:
        raise GravitiError(
            f"{shards.folder}: column {column!r} has incompatible types across shards: {sorted(map(str, types))}"
        ) from None


def write_table_atomic(table: pa.Table, path: Path, row_group_rows: int = BATCH_ROWS) -> None:
    """Write ``table`` to ``path`` through a temporary sibling renamed when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, row_group_size=row_group_rows, compression="zstd")
    tmp.replace(path)
