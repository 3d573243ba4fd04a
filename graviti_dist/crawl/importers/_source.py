"""Reading importer source files with errors that name the file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from graviti_dist.errors import GravitiError, examples

log = logging.getLogger(__name__)


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise GravitiError(f"{path}: file not found")
    return path


def read_table(path: Path, delimiter: str = ",", column_types: dict | None = None, header: bool = True,
               column_names: list[str] | None = None) -> pa.Table:
    """Read a CSV/TSV or Parquet file into an Arrow table."""
    require_file(path)
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        read_options = pacsv.ReadOptions(column_names=column_names, autogenerate_column_names=False) if not header \
            else pacsv.ReadOptions()
        table = pacsv.read_csv(
            path,
            read_options=read_options,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(column_types=column_types or {}),
        )
    except (pa.ArrowException, OSError) as exc:
        raise GravitiError(f"{path}: could not read ({exc})") from None
    _refuse_binary_text(table, path, 2 if header else 1)
    return table


def _refuse_binary_text(table: pa.Table, path: Path, first_line: int) -> None:
    """pyarrow reads a CSV column that is not valid UTF-8 as bytes, silently: name it and its line."""
    for name in table.column_names:
        if pa.types.is_binary(table[name].type) or pa.types.is_large_binary(table[name].type):
            for row, value in enumerate(table[name].to_pylist()):
                try:
                    value is None or value.decode("utf-8")
                except UnicodeDecodeError:
                    raise GravitiError(f"{path}: could not read column {name!r}: line {row + first_line} is not "
                                       "UTF8 text; save the file as UTF-8") from None


def require_columns(table: pa.Table, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise GravitiError(f"{path}: missing column(s) {missing} (columns present: {table.column_names})")


def unique_rows(table: pa.Table, column: str, path: Path, dedupe: str, line_offset: int = 2) -> pa.Table:
    """``table`` with one row per value of ``column``: a repeated value is an error naming the
    values and their lines in ``path`` (a header is line 1: ``line_offset`` 2), unless ``dedupe``
    is ``first``, which keeps each value's first row and logs how many rows it dropped."""
    values = table[column].to_numpy(zero_copy_only=False)
    _, first, counts = np.unique(values, return_index=True, return_counts=True)
    if counts.size == 0 or counts.max() == 1:
        return table
    repeated = values[first[counts > 1]]
    if dedupe != "first":
        lines = (np.flatnonzero(np.isin(values, repeated[:5])) + line_offset).tolist()
        raise GravitiError(f"{path}: column {column!r} repeats {repeated.size} value(s) {examples(repeated.tolist())} "
                           f"(lines {examples(lines, limit=10)}); one row each is expected: fix the file, or pass "
                           "--dedupe first to keep each value's first row")
    log.warning("%s: kept the first row of %d repeated %r value(s), dropped %d row(s)", path, repeated.size, column,
                len(values) - len(first))
    return table.take(pa.array(np.sort(first)))
