"""The synthetic generator on Ray and in a fresh process: the same rows in parallel, memory bounded by the shard."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from graviti_dist.crawl.generate import generate_crawl
from graviti_dist.crawl.synthetic import BLOCK_USERS, SyntheticSpec
from tests.helpers import crawl_content

USERS = 3 * BLOCK_USERS + 500  # several blocks, the last one partial


def test_ray_parallel_generation_gives_the_same_rows(tmp_path, ray_local):
    one, other = tmp_path / "one", tmp_path / "crawl"
    generate_crawl(one, SyntheticSpec(users=USERS, seed=3), shard_rows=50_000)
    generate_crawl(other, SyntheticSpec(users=USERS, seed=3), shard_rows=50_000, parallel=True)
    a, b = crawl_content(one), crawl_content(other)
    for name in a:
        assert a[name].equals(b[name]), name


def _peak_rss_mb(out: Path, users: int, shard_rows: int) -> float:
    code = textwrap.dedent(f"""
        import resource, json
        from graviti_dist.crawl.generate import generate_crawl
        from graviti_dist.crawl.synthetic import SyntheticSpec
        r = generate_crawl({str(out)!r}, SyntheticSpec(users={users}), shard_rows={shard_rows}, progress=False)
        print(json.dumps({{"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "edges": r["edges"]}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_memory_is_bounded_by_the_shard_not_the_crawl(tmp_path):
    small = _peak_rss_mb(tmp_path / "s", 4 * BLOCK_USERS, 100_000)
    large = _peak_rss_mb(tmp_path / "l", 40 * BLOCK_USERS, 100_000)
    assert large["edges"] > 9 * small["edges"]
    # 10x the edges (~6.7M rows, ~200 MB as int64 pairs alone) must cost far less than 10x the memory.
    assert large["rss_mb"] < small["rss_mb"] + 120, (small, large)
