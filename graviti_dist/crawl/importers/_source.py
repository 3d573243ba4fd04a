"""Reading importer source files with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from graviti_dist.errors import GravitiError


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
        return pacsv.read_csv(
            path,
            read_options=read_options,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(column_types=column_types or {}),
        )
    except (pa.ArrowException, OSError) as exc:
        raise GravitiError(f"{path}: could not read ({exc})") from None


def require_columns(table: pa.Table, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise GravitiError(f"{path}: missing column(s) {missing} (columns present: {table.column_names})")
