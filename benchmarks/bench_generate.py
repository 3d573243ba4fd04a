"""Generator benchmark: wall time and peak RSS for ~1M, ~10M and ~100M edges.

Each size runs in a fresh subprocess so peak RSS is that run's alone.
Usage: python -m benchmarks.bench_generate [--sizes 1e6,1e7,1e8] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from benchmarks._meta import write_result

EDGES_PER_USER = 41  # measured with the default SyntheticSpec


def run_one(out: Path, users: int, shard_rows: int) -> dict:
    code = textwrap.dedent(f"""
        import json, resource
        from graviti_dist.crawl.generate import generate_crawl
        from graviti_dist.crawl.synthetic import SyntheticSpec
        r = generate_crawl({str(out)!r}, SyntheticSpec(users={users}), shard_rows={shard_rows}, progress=False)
        r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(r))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    disk = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    return {"users": users, "edges": result["edges"], "rows": result["rows"], "seconds": result["seconds"],
            "edges_per_s": round(result["edges"] / result["seconds"]), "peak_rss_mb": round(result["peak_rss_mb"], 1),
            "disk_mb": round(disk / 2**20, 1), "shard_rows": shard_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7,1e8", help="target edge counts")
    parser.add_argument("--shard-rows", type=int, default=1_000_000)
    parser.add_argument("--shard-sweep", default="250000,4000000",
                        help="extra shard sizes tried at the middle size, to show memory follows the shard size")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch space (default: a temp dir)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-gen-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    plan = [(t, args.shard_rows) for t in sizes]
    if args.shard_sweep:
        middle = sizes[len(sizes) // 2]
        plan += [(middle, int(r)) for r in args.shard_sweep.split(",")]
    runs = []
    for target, shard_rows in plan:
        out = workdir / f"crawl-{target}-{shard_rows}"
        shutil.rmtree(out, ignore_errors=True)
        run = run_one(out, max(16, target // EDGES_PER_USER), shard_rows)
        run["target_edges"] = target
        print(json.dumps(run), flush=True)
        runs.append(run)
        shutil.rmtree(out, ignore_errors=True)
    path = write_result("generate", {"benchmark": "generate", "runs": runs})
    plot(runs, path.with_suffix(".png"))
    print(f"wrote {path}")


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main_runs = [r for r in runs if r["shard_rows"] == runs[0]["shard_rows"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    edges = [r["edges"] for r in main_runs]
    left.loglog(edges, [r["seconds"] for r in main_runs], "o-")
    left.set(xlabel="edges", ylabel="seconds", title="generation time (1 process)")
    right.semilogx(edges, [r["peak_rss_mb"] / 1024 for r in main_runs], "o-", label=f"{runs[0]['shard_rows']:,}-row shards")
    for r in runs:
        if r["shard_rows"] != runs[0]["shard_rows"]:
            right.plot([r["edges"]], [r["peak_rss_mb"] / 1024], "s", label=f"{r['shard_rows']:,}-row shards")
    right.set(xlabel="edges", ylabel="peak RSS (GB)", title="peak memory", ylim=(0, None))
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
