"""Handing freed memory back to the operating system between the stages of a big job.

Peak RSS is what decides whether a job fits on a machine. Two allocators keep freed
pages that the next stage cannot use: pyarrow's pool (mimalloc), which torch and DGL
never allocate from, and glibc's heap, whose freed chunks a new thread's arena does not
reuse. Releasing both between stages lets the next stage start from what is really live.
"""

from __future__ import annotations

import ctypes
import functools

import pyarrow as pa


@functools.cache
def _malloc_trim():
    try:
        # The symbols already loaded into this process: no library search (find_library runs ldconfig).
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def release_free_memory() -> None:
    """Return memory that pyarrow's pool and the C heap hold freed to the OS; live data is untouched."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def peak_rss_gb() -> float | None:
    """This process's peak resident memory (Linux's VmHWM; None elsewhere). Not ``ru_maxrss``: Linux
    carries that across fork and exec, so a Ray worker would report its parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 2**20, 3)
    except OSError:
        pass
    return None
