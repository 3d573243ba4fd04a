"""Outputs built beside their destination and published whole.

Every command that writes a directory (a crawl, a partition set, predictions) builds it in a
hidden sibling ``.NAME.tmp-*`` and renames it into place only when complete: a run that dies
leaves at most that sibling, never an output that looks finished. An existing output is
replaced only with ``overwrite`` and only once the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from graviti_dist.errors import FieldError


def staging_dir(out: Path) -> Path:
    """A fresh hidden sibling of ``out`` to build into."""
    return out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def check_output(out: Path, overwrite: bool, field: str = "out") -> None:
    """Refuse to write over an existing path unless ``overwrite``; ``field`` names the argument."""
    if out.exists() and not overwrite:
        raise FieldError(field, f"{out}: already exists; choose another or pass overwrite to replace it")
    if not out.parent.exists():
        raise FieldError(field, f"{out}: its parent directory {out.parent} does not exist")


def publish(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` into place, replacing ``out`` if it exists."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


@contextlib.contextmanager
def staged_output(out: Path, overwrite: bool = False, field: str = "out") -> Iterator[Path]:
    """Yield an empty staging directory for ``out``; publish it when the block ends normally,
    remove it when the block raises (or is interrupted)."""
    check_output(out, overwrite, field)
    tmp = staging_dir(out)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
