"""Outputs built beside their destination and published whole.

Every command that writes a directory (a crawl, a partition set, predictions, an overwriting
training run) builds it in a hidden sibling ``.NAME.tmp-HOST-PID-*`` and moves it into place only
when complete: a run that dies leaves at most that sibling, never an output that looks finished,
and the next command writing the same output removes siblings whose process is gone. An existing
output is replaced only with ``overwrite`` and only once the new one is complete: by an atomic
exchange of the two directories where the kernel has one (Linux ``renameat2``), else by two renames
whose gap :func:`recover` closes (the old output is put back if the new one never arrived).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Iterator

from graviti_dist.errors import FieldError

log = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def staging_dir(out: Path) -> Path:
    """A fresh hidden sibling of ``out`` to build into (named after this host and process, so that
    :func:`remove_stale_staging` can tell a live build from a dead one)."""
    return out.parent / f".{out.name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove what killed builds of ``out`` on this host left behind; returns what was removed."""
    removed = []
    for sibling in out.parent.glob(f".{out.name}.tmp-{_host()}-*"):
        pid = sibling.name[len(f".{out.name}.tmp-{_host()}-"):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed


def recover(out: Path) -> bool:
    """Put the previous output back when a replacement died between its two renames (``out``
    missing, ``.NAME.old-*`` beside it); whether anything was restored."""
    if out.exists():
        return False
    olds = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not olds:
        return False
    olds[-1].rename(out)
    log.warning("%s: restored the previous output (a replacement stopped before it was in place)", out)
    return True


def check_output(out: Path, overwrite: bool, field: str = "out") -> None:
    """Refuse to write over an existing path unless ``overwrite``; ``field`` names the argument.
    Creates the output's parent folders, restores an interrupted replacement and removes dead builds."""
    if out.parent.exists() and not out.parent.is_dir():
        raise FieldError(field, f"{out}: {out.parent} is a file, not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out)
    remove_stale_staging(out)
    if out.exists() and not overwrite:
        raise FieldError(field, f"{out}: already exists; choose another or pass overwrite to replace it")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name, use_errno=True) if name else None
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0
    return done  # EINVAL (a filesystem without exchange) or ENOSYS: the caller falls back


def publish(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` into place, replacing ``out`` if it exists."""
    if not out.exists():
        tmp.rename(out)
    elif _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old output
    else:
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
        tmp.rename(out)  # a crash before this line: recover() puts ``old`` back
        shutil.rmtree(old, ignore_errors=True)


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
