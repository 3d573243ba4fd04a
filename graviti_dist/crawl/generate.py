"""``graviti generate``: write a synthetic crawl, in one process or as Ray tasks.

The model lives in :mod:`graviti_dist.crawl.synthetic`; this module only
schedules blocks and publishes the crawl atomically.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from graviti_dist.crawl.schema import schema_from_dict
from graviti_dist.crawl.synthetic import SyntheticSpec, generate_blocks, schema_dict
from graviti_dist.crawl.write import CrawlWriter, write_shard
from graviti_dist.runtime.ray_cluster import cluster_cpus, ray_session, run_tasks

DEFAULT_SHARD_ROWS = 1_000_000


def _generate_chunk(spec: SyntheticSpec, first: int, last: int, root: str, shard_rows: int, label: str) -> dict:
    def write(folder, name, table, shard_label):
        write_shard(Path(root), folder, name, table, shard_label)

    return generate_blocks(spec, range(first, last), write, shard_rows, label)


def generate_crawl(
    out: str | Path,
    spec: SyntheticSpec,
    *,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    overwrite: bool = False,
    parallel: bool = False,
    address: str | None = None,
    progress: bool | None = None,
) -> dict:
    """Generate the crawl of ``spec`` at ``out``; returns row counts per table and the time taken.

    ``parallel`` (or an ``address``) spreads fixed blocks of users over Ray
    tasks; the rows are the same either way. With a remote cluster, ``out``
    must be on a filesystem every node sees.
    """
    if shard_rows < 1:
        raise ValueError("shard_rows must be at least 1")
    schema = schema_from_dict(schema_dict(spec), source="synthetic schema")
    show = sys.stderr.isatty() if progress is None else progress
    start = time.perf_counter()
    with CrawlWriter(out, schema, overwrite=overwrite) as writer:
        if parallel or address:
            totals = _generate_with_ray(spec, writer.tmp, shard_rows, address)
        else:
            with tqdm(total=spec.num_blocks, desc="generate", unit="block", disable=not show) as bar:
                totals = generate_blocks(spec, range(spec.num_blocks), writer.write_shard, shard_rows, progress=bar.update)
        (writer.tmp / "generator.json").write_text(_provenance(spec, shard_rows))
    rows = {f"{folder}/{name}": n for (folder, name), n in sorted(totals.items())}
    return {"rows": rows, "edges": sum(n for k, n in rows.items() if k.startswith("edges/")),
            "seconds": round(time.perf_counter() - start, 3)}


def _generate_with_ray(spec: SyntheticSpec, root: Path, shard_rows: int, address: str | None) -> dict:
    # Ray is imported inside ray_cluster's functions only: the in-process path runs where Ray is absent (GPU images).
    with ray_session(address):
        per_chunk = max(1, -(-spec.num_blocks // (4 * cluster_cpus())))  # ~4 chunks per CPU evens out stragglers
        chunks = [(b, min(b + per_chunk, spec.num_blocks)) for b in range(0, spec.num_blocks, per_chunk)]
        results = run_tasks(_generate_chunk, [(spec, a, b, str(root), shard_rows, f"{i:05d}") for i, (a, b) in enumerate(chunks)])
    totals: dict = {}
    for part in results:
        for key, n in part.items():
            totals[key] = totals.get(key, 0) + n
    return totals


def _provenance(spec: SyntheticSpec, shard_rows: int) -> str:
    return json.dumps({"generator": "graviti_dist.crawl.synthetic", "spec": asdict(spec), "shard_rows": shard_rows}, indent=2)
