"""Partitioning benchmark: `graviti partition` against `dgl.distributed.partition_graph`, same graph and METIS settings.

Each run is a fresh subprocess from the crawl on disk to partitions on disk (DGL's run
reads the crawl with our loader first, as a user of DGL would have to). Both use DGL's
METIS and 2-hop halos: DGL's partitioner k-way with node-type x labelled-train classes and
edge balance, ours recursive bisection with node-type, training-work and edge weights (its
default: reproducible and better balanced; see the README). Edge cut and node balance are
reported for both.
Peak memory: DGL's single process; ours, the driver plus the sum of its Ray writer actors.
Ours runs twice: with Ray actors (``--executor ray``, the default) and in one process
(``--executor local``, writer threads).
Usage: python -m benchmarks.bench_partition [--sizes 1e6,1e7] [--parts 2,4] [--workdir DIR]
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

EDGES_PER_USER = 41

OURS = """
import json, resource, time
start = time.perf_counter()
from graviti_dist.partition import PartitionSpec, partition_crawl
r = partition_crawl({crawl!r}, {out!r}, PartitionSpec(num_parts={parts}, executor={executor!r}))
print(json.dumps({{"seconds": time.perf_counter() - start, "stages": r["seconds"], "edge_cut": r["edge_cut_fraction"],
                  "driver_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  # local writers are threads of this process: its peak already counts them
                  "writers_peak_gb": sum(r["peak_rss_gb"]["writers"]) if {executor!r} == "ray" else 0.0,
                  "node_balance": r["nodes"]["max_over_mean"]}}))
"""

DGL = """
import contextlib, io, json, resource, time
start = time.perf_counter()
import numpy as np, torch
from graviti_dist._dgl import dgl
from graviti_dist.crawl.load import load_crawl
from graviti_dist.graph import build_graph
graph = build_graph(load_crawl({crawl!r}))
balance = torch.cat([torch.full((graph.num_nodes(t),), i) * 2 + sum(graph.nodes[t].data[k].long() for k in graph.nodes[t].data
          if k.startswith("mask_")).clamp(max=1) for i, t in enumerate(graph.ntypes)])
with contextlib.redirect_stdout(io.StringIO()):
    orig_nids, _ = dgl.distributed.partition_graph(graph, "graph", {parts}, {out!r}, num_hops=2, part_method="metis",
                                                   balance_ntypes=balance, balance_edges=True, return_mapping=True)
seconds = time.perf_counter() - start
meta = json.load(open({out!r} + "/graph.json"))
# Quality, outside the timing: each original node's part from the shuffled-id ranges.
part_of, sizes = {{}}, np.zeros({parts})
for t in graph.ntypes:
    ranges = np.array(meta["node_map"][t])
    shuffled_part = np.repeat(np.arange({parts}), ranges[:, 1] - ranges[:, 0])
    part_of[t] = np.empty(graph.num_nodes(t), np.int64)
    part_of[t][orig_nids[t].numpy()] = shuffled_part
    sizes += np.bincount(part_of[t], minlength={parts})
cut = total = 0
for src_t, rel, dst_t in graph.canonical_etypes:
    s, d = graph.edges(etype=(src_t, rel, dst_t))
    cut += int((part_of[src_t][s.numpy()] != part_of[dst_t][d.numpy()]).sum()); total += len(s)
print(json.dumps({{"seconds": seconds, "driver_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "writers_peak_gb": 0.0, "edge_cut": cut / total, "node_balance": float(sizes.max() / sizes.mean())}}))
"""


def run(template: str, crawl: Path, out: Path, parts: int, executor: str = "ray") -> dict:
    shutil.rmtree(out, ignore_errors=True)
    code = textwrap.dedent(template.format(crawl=str(crawl), out=str(out), parts=parts, executor=executor))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"benchmark run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = round(result["seconds"], 2)
    result["peak_gb"] = round(result["driver_peak_gb"] + result["writers_peak_gb"], 3)
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7")
    parser.add_argument("--parts", default="2,4")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    from graviti_dist.crawl.synthetic import SyntheticSpec
    from graviti_dist.generate import generate_crawl

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-part-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runs = []
    for target in (int(float(x)) for x in args.sizes.split(",")):
        crawl = workdir / f"crawl-{target}"
        if not crawl.exists():
            generate_crawl(crawl, SyntheticSpec(users=target // EDGES_PER_USER, seed=0), progress=False)
        for parts in (int(p) for p in args.parts.split(",")):
            row = {"target_edges": target, "parts": parts,
                   "ours": run(OURS, crawl, workdir / "ours", parts),
                   "ours_local": run(OURS, crawl, workdir / "ours", parts, executor="local"),
                   "dgl": run(DGL, crawl, workdir / "dgl", parts)}
            row["speedup"] = round(row["dgl"]["seconds"] / row["ours"]["seconds"], 2)
            row["speedup_local"] = round(row["dgl"]["seconds"] / row["ours_local"]["seconds"], 2)
            print(json.dumps(row), flush=True)
            runs.append(row)
    path = write_result("partition", {"benchmark": "partition", "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
