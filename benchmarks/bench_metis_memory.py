"""Where METIS stops fitting: peak memory of DGL's METIS assignment against graph size.

Each size runs in a fresh process: load a synthetic crawl, build the homogeneous graph as
`graviti partition` does (baseline RSS), then `dgl.metis_partition_assignment` with the same
balance constraints (peak RSS). The extra memory per edge, fitted over the sizes, says how
large a graph METIS can take on a machine of a given memory; above that, use
`graviti partition --method random`.
Usage: python -m benchmarks.bench_metis_memory [--sizes 1e6,1e7,3e7] [--parts 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from benchmarks._meta import write_result

EDGES_PER_USER = 41

MEASURE = """
import contextlib, io, json, resource, time
import psutil, torch
from graviti_dist._dgl import dgl
from graviti_dist.crawl.load import load_crawl
from graviti_dist.partition.graph import build_graph
graph = dgl.to_homogeneous(build_graph(load_crawl({crawl!r})))
constraint = graph.ndata[dgl.NTYPE].long() * 2
base = psutil.Process().memory_info().rss
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    dgl.metis_partition_assignment(graph, {parts}, balance_ntypes=constraint, balance_edges=True)
print(json.dumps({{"nodes": graph.num_nodes(), "edges": graph.num_edges(), "graph_rss_gb": base / 2**30,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "metis_seconds": time.perf_counter() - start}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7,3e7", help="target crawl edge counts")
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/graviti-bench"))
    args = parser.parse_args()
    from graviti_dist.crawl.synthetic import SyntheticSpec
    from graviti_dist.crawl.generate import generate_crawl

    args.workdir.mkdir(parents=True, exist_ok=True)
    runs = []
    for target in (int(float(x)) for x in args.sizes.split(",")):
        crawl = args.workdir / f"metis-crawl-{target}"
        if not (crawl / "graph.yaml").exists():
            generate_crawl(crawl, SyntheticSpec(users=target // EDGES_PER_USER, seed=0), overwrite=True, progress=False)
        code = textwrap.dedent(MEASURE.format(crawl=str(crawl), parts=args.parts))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"METIS run at {target:,} edges failed:\n{proc.stderr[-2000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["target_edges"] = target
        row["metis_extra_gb"] = round(row["peak_rss_gb"] - row["graph_rss_gb"], 3)
        print(json.dumps(row), flush=True)
        runs.append(row)
    # Peak memory of the whole step grows linearly in edges: fit bytes per (homogeneous) edge.
    slope = (runs[-1]["peak_rss_gb"] - runs[0]["peak_rss_gb"]) / (runs[-1]["edges"] - runs[0]["edges"])
    intercept = runs[0]["peak_rss_gb"] - slope * runs[0]["edges"]
    fits = {f"{gb} GB": int((0.8 * gb - intercept) / slope) for gb in (24, 128, 512)}
    payload = {"benchmark": "metis_memory", "parts": args.parts, "runs": runs,
               "peak_gb_per_million_edges": round(slope * 1e6, 4),
               "max_homogeneous_edges_at_80pct_memory": fits}
    print(json.dumps(payload["max_homogeneous_edges_at_80pct_memory"]))
    print(f"wrote {write_result('metis-memory', payload)}")


if __name__ == "__main__":
    main()
