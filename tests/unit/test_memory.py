"""release_free_memory hands freed heap pages back to the OS (and leaves live data alone)."""

import numpy as np
import psutil
import pytest

from graviti_dist.runtime.memory import _malloc_trim, release_free_memory


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.skipif(_malloc_trim() is None, reason="malloc_trim is glibc's")
def test_freed_heap_pages_go_back_and_live_data_stays():
    # 64 KiB chunks stay under glibc's mmap threshold, so they live on the heap; keeping the
    # last one alive pins the heap's top, so freeing the rest does not shrink it by itself.
    chunks = [np.ones(8192) for _ in range(3000)]  # ~190 MB
    keep = chunks[-1]
    del chunks
    before = _rss_mb()
    release_free_memory()
    after = _rss_mb()
    assert before - after > 100, f"RSS {before:.0f} -> {after:.0f} MB: freed heap pages were not returned"
    assert keep.sum() == 8192
