"""Shallow halos and the graph store: what each partition holds, and what remote sampling costs.

Footprint: the 10M-edge crawl (``graviti generate --users 250000 --seed 5``) in 8 parts with a
1-hop halo (and, with ``--two-hops``, the 2-hop halo local sampling needs, for the side-by-side).
Each part is loaded as a training worker loads it (``load_worker_partition``) in a fresh
process; its resident graph + features (every tensor it holds) is divided by the whole crawl's
in the same representation (the same crawl as one partition), and the process's peak RSS is
reported. The set's size on disk is summed over its files.

Throughput: synthetic-1m in 2 parts, 2-hop halo (local sampling) against 1-hop halo (remote
sampling through the store actors), each trained by ``graviti train`` itself with 2 workers on
this machine, rounds interleaved; seeds/s is the median over epochs after the first. Beside it,
a harness figure: one worker's remote minibatches in this process, counting store requests and
the bytes of their answers per step.
Inference: ``graviti infer`` itself (Ray actors; over the 1-hop sets the partitions exchange halo
rows per layer) and ``graviti serve``'s start-up on synthetic-1m's two sets, and ``graviti infer``
on the 10M-edge crawl's 1-hop set, with the run trained on synthetic-1m's full-halo set.
Usage: python -m benchmarks.bench_remote [--users 250000] [--parts 8] [--two-hops] [--rounds 2] [--workdir DIR]
       [--only footprint|throughput|sharing|inference]
Sharing: a training worker and the store serving its partition (part 0 of the 1-hop set), each with a
private copy against one copy in Ray's object store that both read; unique memory of each process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from benchmarks._meta import RESULTS, environment, write_result, write_whole

LOAD = """
import json
import torch
from graviti_dist.sampling import load_worker_partition
part = load_worker_partition({parts!r}, {part_id})
g = part.graph
tensors = [*g.ndata.values(), *g.edata.values(), *(t for fmt in g.formats()["created"] for t in g.adj_tensors(fmt)),
           part.node_type, part.row, part.inner, *(t for table in part.tables for t in table.values()),
           *(d for d in part.dense if d is not None)]
print(json.dumps({{"bytes": sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)),
                  "nodes": g.num_nodes(), "inner_nodes": int(part.inner.sum()), "edges": g.num_edges(),
                  "peak_rss_gb": peak_rss_gb()}}))
"""

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so a child of this process
# (which has just partitioned the crawl) would report this process's peak.
PEAK = """
def peak_rss_gb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
"""


def _run_json(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(PEAK) + textwrap.dedent(code)], capture_output=True,
                            text=True)
    if result.returncode:
        raise SystemExit(f"benchmark step failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _crawl(workdir: Path, users: int, seed: int) -> Path:
    from graviti_dist.crawl import SyntheticSpec, generate_crawl

    crawl = workdir / f"crawl-{users}-{seed}"
    if not (crawl / "graph.yaml").exists():
        generate_crawl(crawl, SyntheticSpec(users=users, seed=seed), overwrite=True, progress=False)
    return crawl


def _partitioned(crawl: Path, out: Path, parts: int, hops: int) -> dict:
    from graviti_dist.partition import PartitionSet, PartitionSpec, partition_crawl

    if not PartitionSet(out).is_finished():
        partition_crawl(crawl, out, PartitionSpec(num_parts=parts, num_hops=hops, executor="local"), overwrite=True)
    return json.loads(PartitionSet(out).report_path.read_text())


def footprint(workdir: Path, users: int, seed: int, parts: int, hops_list: list[int]) -> dict:
    crawl = _crawl(workdir, users, seed)
    _partitioned(crawl, workdir / "whole", 1, 1)
    whole = _run_json(LOAD.format(parts=str(workdir / "whole"), part_id=0))
    out = {"crawl": {"users": users, "seed": seed, "message_passing_edges": whole["edges"]}, "whole": whole, "sets": {}}
    for hops in hops_list:
        set_dir = workdir / f"{parts}parts-{hops}hop"
        report = _partitioned(crawl, set_dir, parts, hops)
        loaded = [_run_json(LOAD.format(parts=str(set_dir), part_id=p)) for p in range(parts)]
        disk = sum(f.stat().st_size for f in set_dir.rglob("*") if f.is_file())
        out["sets"][f"{hops}-hop"] = {
            "num_hops": hops, "halo_replication": report["halo_replication"], "disk_gb": round(disk / 2**30, 3),
            "partition_seconds": report["seconds"],
            "resident_fraction": [round(p["bytes"] / whole["bytes"], 3) for p in loaded],
            "node_fraction": [round(p["nodes"] / whole["nodes"], 3) for p in loaded],
            "worker_peak_rss_gb": [round(p["peak_rss_gb"], 3) for p in loaded], "parts": loaded}
        print(json.dumps({k: v for k, v in out["sets"][f"{hops}-hop"].items() if k != "parts"}), flush=True)
    return out


def _train(parts: Path, out: Path, epochs: int) -> list[dict]:
    from graviti_dist.train import RunDir

    settings = [f"partitions={parts}", f"out={out}", "num_workers=2", f"epochs={epochs}", "batch_size=1024",
                "model.hidden=64", "model.heads=4", "model.fanouts=[10,10]", "model.relations=false",
                "model.edge_inputs=false",
                "balancing=static", "eval_every=1000", "progress=false"]
    command = [sys.executable, "-m", "graviti_dist.train", "--overwrite", *(a for s in settings for a in ("--set", s))]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"graviti train failed on {parts}:\n{result.stderr[-3000:]}")
    return RunDir(out).read_records()


def _harness(set_dir: Path, steps: int = 20) -> dict:
    """One worker's remote minibatches in this process: requests and answer bytes per step."""
    import numpy as np

    from graviti_dist.partition import PartitionSet
    from graviti_dist.sampling import GraphStore, LocalStore, NodeRanges, RemoteMinibatches, load_worker_partition

    class Counting(LocalStore):
        sent = 0

        def sample(self, nodes, fanout, with_rows=False):
            future = super().sample(nodes, fanout, with_rows)
            edges = future.result()
            Counting.sent += nodes.nbytes + sum(a.nbytes for a in (edges.src, edges.dst, edges.etype))
            if with_rows:
                Counting.sent += edges.row_nodes.nbytes + _rows_bytes(edges.rows)
            return future

        def gather(self, nodes):
            future = super().gather(nodes)
            Counting.sent += nodes.nbytes + _rows_bytes(future.result())
            return future

    stores = {p: Counting(GraphStore(str(set_dir), p)) for p in range(2)}
    batches = RemoteMinibatches(load_worker_partition(set_dir, 0), stores, NodeRanges.of(PartitionSet(set_dir)),
                                [10, 10], 1024, "train", seed=0)
    remote_inputs = []
    for _, (seeds, _links) in zip(range(steps), batches.plan()):
        inputs, _ = batches.sample(seeds)
        remote_inputs.append(float((batches.local.local_ids(inputs.numpy()) < 0).mean()))
        batches.features(inputs)
    steps = len(remote_inputs)
    return {"steps": steps, "requests_per_step": round(batches.requests / steps, 2),
            "answer_mb_per_step": round(Counting.sent / steps / 2**20, 3),
            "input_rows_remote_fraction": round(float(np.mean(remote_inputs)), 3),
            "store_wait_ms_per_step": round(1e3 * batches.wait_s / steps, 2)}


def _rows_bytes(rows: dict) -> int:
    return sum(a.nbytes for r in rows.values() for a in [r.dense, *r.categorical, *r.multihot] if a is not None)


def throughput(workdir: Path, rounds: int, epochs: int, users: int) -> dict:
    crawl = _crawl(workdir, users, 0)
    sets = {"full_halo": (workdir / "1m-2parts-2hop", 2), "remote": (workdir / "1m-2parts-1hop", 1)}
    for set_dir, hops in sets.values():
        _partitioned(crawl, set_dir, 2, hops)
    harness = _harness(sets["remote"][0])  # first: seconds, where the trainings take minutes
    runs: dict[str, list[list[dict]]] = {name: [] for name in sets}
    for i in range(rounds):
        for name in (list(sets) if i % 2 == 0 else list(sets)[::-1]):  # alternate who goes first
            runs[name].append(_train(sets[name][0], workdir / f"run-{name}", epochs))
    out = {}
    for name, records in runs.items():
        per_round = [statistics.median(r["seeds_per_s"] for r in rec[1:]) for rec in records]
        out[name] = {"seeds_per_s": round(statistics.median(per_round)), "per_round": [round(x) for x in per_round],
                     "epoch_time_s": statistics.median(r["epoch_time_s"] for rec in records for r in rec[1:])}
        if name == "remote":
            later = [r for rec in records for r in rec[1:]]
            out[name]["store_requests_per_step"] = statistics.median(r["store_requests_per_step"] for r in later)
            out[name]["store_wait_ms_per_step"] = round(statistics.median(r["store_wait_ms_per_step"] for r in later), 2)
    ratios = [r / f for r, f in zip(out["remote"]["per_round"], out["full_halo"]["per_round"])]
    out["remote_over_full_halo"] = {"median": round(statistics.median(ratios), 3), "per_round": [round(x, 3) for x in ratios]}
    out["harness"] = harness
    return out


SHARING = """
import json
import psutil
import ray
from graviti_dist.runtime.ray_cluster import ray_session
from graviti_dist.sampling import load_worker_partition, load_shared, start_stores
from graviti_dist.sampling.worker_partition import partition_arrays


@ray.remote(num_cpus=1)
class Worker:
    \"\"\"What a training worker does before its first step: load its partition, start the store serving it.\"\"\"

    def setup(self, parts, part_id, shared):
        self.refs = []
        if shared:
            ref, part = load_shared(parts, part_id)
            self.refs.append(ref)
        else:
            part = load_worker_partition(parts, part_id)
        self.bytes = sum(a.nbytes for a in _arrays(partition_arrays(part)))
        self.part = part
        self.stores = start_stores(parts, [part_id], f"memory-{{shared}}", self.refs if shared else None)
        return True

    def memory(self):
        out = {{"partition_gb": self.bytes / 2**30}}
        for name, pid in (("worker", None), ("store", ray.get(self.stores[0].pid.remote()))):
            process = psutil.Process(pid)
            info = process.memory_full_info()
            # Private pages outside Ray's object store (its /dev/shm/plasma* mapping): a shared page that
            # one process alone touched counts as private to it in USS, so USS would count the copy again.
            own = sum(m.private_clean + m.private_dirty for m in process.memory_maps() if "plasma" not in m.path)
            out[name] = {{"uss_gb": info.uss / 2**30, "rss_gb": info.rss / 2**30, "own_gb": own / 2**30}}
        return out


def _arrays(value):
    import dataclasses
    import numpy as np
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _arrays(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _arrays(v)
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _arrays(getattr(value, f.name))


with ray_session(num_cpus=2):
    results = {{}}
    for shared in (False, True):
        worker = Worker.remote()
        ray.get(worker.setup.remote({parts!r}, {part_id}, shared))
        results["shared" if shared else "private"] = ray.get(worker.memory.remote())
        ray.kill(worker)
print(json.dumps(results))
"""


def sharing(set_dir: Path, part_id: int = 0) -> dict:
    """A training worker and the store serving its partition, on one node: memory with a private copy
    each (how stores started) against one copy in Ray's object store that both read."""
    # node_gb: both processes' own memory plus, shared, the object store's copy once.
    measured = _run_json(SHARING.format(parts=str(set_dir), part_id=part_id))
    for mode, m in measured.items():
        m["node_gb"] = round(m["worker"]["own_gb"] + m["store"]["own_gb"] + (m["partition_gb"] if mode == "shared" else 0), 3)
    measured["set"], measured["part"] = set_dir.name, part_id
    print(json.dumps({"sharing": measured}), flush=True)
    return measured


SERVE_START = """
import json, time
from graviti_dist.infer import Predictor
started = time.perf_counter()
predictor = Predictor({run!r}, {parts!r})
print(json.dumps({{"seconds": round(time.perf_counter() - started, 2), "nodes": predictor.num_nodes,
                  "peak_rss_gb": peak_rss_gb()}}))
"""


def inference(workdir: Path, sets: dict[str, Path], run: Path) -> dict:
    """``graviti infer`` itself (Ray actors) and ``graviti serve``'s start-up (a Predictor in a fresh
    process) on each set, with the same run: seconds and peak RSS per actor / of the service."""
    graviti = Path(sys.executable).with_name("graviti")
    out = {}
    for name, set_dir in sets.items():
        # --top-k 0: predictions only; exact recommendations at 250k users x 1.26M posts ran for over
        # 30 minutes of CPU in the driver and would measure that instead of the layer-wise passes.
        command = [str(graviti), "infer", str(run), "--partitions", str(set_dir), "--out", str(workdir / f"pred-{name}"),
                   "--overwrite", "--top-k", "0"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"graviti infer failed on {set_dir}:\n{result.stderr[-3000:]}")
        summary = json.loads((workdir / f"pred-{name}" / "inference.json").read_text())
        out[name] = {"set": set_dir.name, "halo_exchange": summary["halo_exchange"], "infer_seconds": summary["seconds"],
                     "actor_seconds": [p["seconds"] for p in summary["parts"]],
                     "actor_peak_rss_gb": [p["peak_rss_gb"] for p in summary["parts"]],
                     "rows": summary["rows"]}
        if len(summary["parts"]) <= 2:  # the service holds every partition: only the small sets
            out[name]["serve_start"] = _run_json(SERVE_START.format(run=str(run), parts=str(set_dir)))
        print(json.dumps({"inference": name, **out[name]}), flush=True)
    return out


def _measured(section: dict) -> str:
    m = section.get("measured")
    return f" Measured {m['date'][:10]} at commit `{m['commit']}` on {m['machine']}." if m else ""


def table(result: dict) -> str:
    rows = ["| halo | replication | resident graph + features per part (of the whole crawl) | on disk | worker peak RSS |",
            "|---|---|---|---|---|"]
    for name, s in result["footprint"]["sets"].items():
        rows.append(f"| {name} | {s['halo_replication']}x | {min(s['resident_fraction'])}-{max(s['resident_fraction'])} "
                    f"| {s['disk_gb']} GB | {min(s['worker_peak_rss_gb'])}-{max(s['worker_peak_rss_gb'])} GB |")
    t = result["throughput"]
    rows += ["", "| synthetic-1m, 2 workers, `graviti train` | seeds/s (median) | per round |", "|---|---|---|",
             f"| 2-hop halo, local sampling | {t['full_halo']['seeds_per_s']:,} | {t['full_halo']['per_round']} |",
             f"| 1-hop halo, remote sampling | {t['remote']['seeds_per_s']:,} | {t['remote']['per_round']} |",
             "", f"Remote over full halo: {t['remote_over_full_halo']['median']}x (per round {t['remote_over_full_halo']['per_round']}); "
             f"{t['remote']['store_requests_per_step']} store requests and {t['remote']['store_wait_ms_per_step']:.1f} ms waiting "
             f"for them per step per worker (in line: every store shares this machine's cores). Harness, one worker in process: "
             f"{t['harness']['answer_mb_per_step']} MB of answers and {t['harness']['requests_per_step']} requests per step; "
             f"{t['harness']['input_rows_remote_fraction']:.0%} of input rows come from other partitions." + _measured(t)]
    if "sharing" in result:
        sh = result["sharing"]
        rows += ["", f"| one training worker + its store, {sh['set']} part {sh['part']} ({sh['shared']['partition_gb']:.2f} GB "
                     "of arrays) | worker's own | store's own | object store | node total |", "|---|---|---|---|---|"]
        for mode in ("private", "shared"):
            m = sh[mode]
            rows.append(f"| {'a copy each (before)' if mode == 'private' else 'one copy in the object store'} | "
                        f"{m['worker']['own_gb']:.2f} GB | {m['store']['own_gb']:.2f} GB | "
                        f"{m['partition_gb'] if mode == 'shared' else 0:.2f} GB | {m['node_gb']:.2f} GB |")
    if "inference" in result:
        rows += ["", "| `graviti infer` (Ray actors) | halo exchange | seconds | per-actor peak RSS | `graviti serve` start-up, peak RSS |",
                 "|---|---|---|---|---|"]
        for name, i in result["inference"].items():
            serve = i.get("serve_start")
            serve_text = f"{serve['seconds']} s, {serve['peak_rss_gb']:.2f} GB" if serve else "not measured (holds every part)"
            rows.append(f"| {name} ({i['set']}) | {'yes' if i['halo_exchange'] else 'no'} | {i['infer_seconds']} | "
                        f"{min(i['actor_peak_rss_gb']):.2f}-{max(i['actor_peak_rss_gb']):.2f} GB | {serve_text} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=250_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--two-hops", action="store_true", help="also the 2-hop set (several minutes, ~5 GB on disk)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--throughput-users", type=int, default=24_000, help="24,000: synthetic-1m (~1M edges)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--only", choices=["footprint", "throughput", "sharing", "inference"],
                        help="measure one section again, keeping the committed others (inference needs the workdir "
                             "of an earlier full run: its sets and trained run)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-remote-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "remote"}
    if args.only in (None, "footprint"):
        result["footprint"] = footprint(workdir, args.users, args.seed, args.parts, [1, 2] if args.two_hops else [1])
    if args.only in (None, "throughput"):
        result["throughput"] = throughput(workdir, args.rounds, args.epochs, args.throughput_users)
    if args.only in (None, "sharing"):
        result["sharing"] = sharing(workdir / f"{args.parts}parts-1hop")
    if args.only in (None, "inference"):
        sets = {"1m, 2-hop": workdir / "1m-2parts-2hop", "1m, 1-hop": workdir / "1m-2parts-1hop",
                f"10m, 1-hop, {args.parts} parts": workdir / f"{args.parts}parts-1hop"}
        result["inference"] = inference(workdir, {k: v for k, v in sets.items() if v.exists()}, workdir / "run-full_halo")
    here = environment()
    for section in ("footprint", "throughput", "sharing", "inference"):
        if section in result:  # sections are measured again one at a time: each keeps its own environment
            result[section] = {**result[section], "measured": {"date": here["date"], "commit": here["commit"][:12],
                                                                "machine": here["machine"]["cpu"]}}
    if args.only is not None and (RESULTS / "remote.json").exists():  # one section again: keep the others
        earlier = json.loads((RESULTS / "remote.json").read_text())
        result = {**{k: v for k, v in earlier.items() if k != "environment"}, **result}
    path = write_result("remote", result)
    write_whole(RESULTS / "remote.md", table(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
