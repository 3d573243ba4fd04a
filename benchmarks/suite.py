"""``graviti bench``: prepare a graph, measure trainer throughput, write JSON + table + plots.

Usage: graviti bench [--device cpu|cuda] [--graph synthetic-1m|synthetic-10m|twitch|PATH] [--workers 1,2]
                     [--repeat N] [--steps N] [--product-epochs N] [--quick] [--suite] [--out DIR]
On the CPU it also runs ``graviti train`` itself with each worker count (``product_path.py``):
what users get, next to the harness and the baselines of the same run.
``--quick`` runs a tiny graph in well under a minute (the test suite uses it); ``--suite`` also
runs the generation, partition and encoder benchmarks with their defaults (the whole CPU suite).
Graphs and partitions are cached under ``--workdir`` (default /tmp/graviti-bench).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import bench_train as bt
from benchmarks._meta import DEFAULT_DATASETS, RESULTS, environment, write_whole
from benchmarks.product_path import product_path
from graviti_dist.errors import GravitiError
from graviti_dist.partition import PartitionSet, read_manifest

SYNTHETIC_USERS = {"synthetic-1m": 24_000, "synthetic-10m": 244_000, "quick": 1_500}  # ~41 crawl edges per user
QUICK = {"graph": "quick", "steps": 2, "repeat": 1, "batch": 256}
PRODUCT_EPOCHS = {"quick": 2, "default": 4}  # graviti train's epochs per worker count; the first is warm-up


def prepare(graph: str, workdir: Path, datasets: Path, part_counts: set[int]) -> tuple[Path, dict[int, Path]]:
    """The crawl for ``graph`` and a METIS partition set per count in ``part_counts`` (cached)."""
    from graviti_dist.partition import PartitionSet, PartitionSpec, partition_crawl

    workdir.mkdir(parents=True, exist_ok=True)
    if graph in SYNTHETIC_USERS:
        from graviti_dist.crawl.synthetic import SyntheticSpec
        from graviti_dist.crawl.generate import generate_crawl

        crawl = workdir / f"{graph}-crawl"
        if not (crawl / "graph.yaml").exists():
            generate_crawl(crawl, SyntheticSpec(users=SYNTHETIC_USERS[graph], seed=0), overwrite=True)
    elif graph == "twitch":
        from graviti_dist.crawl.importers.twitch import import_twitch

        crawl = workdir / "twitch-crawl"
        sources = [datasets / "twitch" / lang for lang in ("ENGB", "PTBR")]
        if not all(s.exists() for s in sources):
            raise GravitiError(f"--graph twitch: {sources[0].parent} not found; set GRAVITI_DATASETS to the datasets folder")
        if not (crawl / "graph.yaml").exists():
            import_twitch(sources, crawl, overwrite=True)
    else:
        crawl = Path(graph)
        if not (crawl / "graph.yaml").exists():
            raise GravitiError(f"--graph {graph}: not a preset (synthetic-1m, synthetic-10m, twitch) "
                               "and not a crawl folder with graph.yaml")
    parts = {}
    for k in sorted(part_counts):
        out = workdir / f"{crawl.name}-{k}parts"
        if not PartitionSet(out).is_finished():
            partition_crawl(crawl, out, PartitionSpec(num_parts=k, executor="local"), overwrite=True)
        parts[k] = out
    return crawl, parts


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    bt.check_cuda(device)
    workers = sorted({int(w) for w in str(args.workers).split(",")})
    if workers[0] < 1:
        raise GravitiError("--workers: worker counts must be at least 1")
    if args.product_epochs is None:
        args.product_epochs = PRODUCT_EPOCHS["quick" if args.quick else "default"]
    if args.product_epochs < 0:
        raise GravitiError(f"--product-epochs: must be 0 (skip) or more, got {args.product_epochs}")
    rounds = bt.RoundSpec(steps=args.steps, batch=args.batch, repeat=args.repeat)
    threads = args.threads or bt.os_threads()
    started = time.perf_counter()
    _, parts = prepare(args.graph, args.workdir, args.datasets, {1, *workers})
    manifest = read_manifest(parts[1])
    report = json.loads(PartitionSet(parts[1]).report_path.read_text())
    sampler_workers = args.sampler_workers or 0
    single = bt.single_worker(parts[1], device, rounds, threads, ["dgl", "pyg"], sampler_workers)
    scaling = {"1": {"seeds_per_s": single["systems"]["ours"]["seeds_per_s"], "spread": single["systems"]["ours"]["spread"],
                     "threads_per_worker": threads, "breakdown_ms": single["breakdown_ms"]}}
    notes = list(single["notes"])
    for w in workers:
        if w == 1:
            continue
        if device.type == "cuda":
            notes.append(f"{w} workers: multi-GPU scaling needs {w} GPUs; run it with `graviti train` on a cluster")
            continue
        scaling[str(w)] = bt.multi_worker(parts[w], w, rounds, threads)
    for w, entry in scaling.items():
        entry["efficiency"] = round(entry["seeds_per_s"] / scaling["1"]["seeds_per_s"], 3)
    product = {}
    if device.type == "cpu" and args.product_epochs and importlib.util.find_spec("ray") is None:
        notes.append("graviti train itself (the product path) was not run: Ray is not installed here")
    elif device.type == "cpu" and args.product_epochs:
        node_tasks = [t.name for t in manifest.node_tasks]
        product = product_path(parts, node_tasks, workers, threads, rounds.batch, args.product_epochs)
        _compare_product(product, single["systems"])
    elif device.type == "cuda":
        notes.append("graviti train itself on CUDA (the product path) needs Ray on the GPU machine; the harness figures "
                     "above are the worker loop without Ray Train")
    return {
        "benchmark": "train", "device": str(device), "kernels": single["kernels"], "threads": threads,
        "sampler_workers": sampler_workers,
        "graph": {"name": Path(args.graph).name, "nodes": report["num_nodes"], "edges": report["num_edges"],
                  "train_seeds": single["train_seeds"], "tasks": [t.name for t in manifest.node_tasks]},
        "model": {"layers": len(bt.FANOUTS), "heads": bt.HEADS, "hidden": bt.HIDDEN, "fanouts": list(bt.FANOUTS),
                  "batch": rounds.batch},
        "rounds": {"steps": rounds.steps, "repeat": rounds.repeat, "warmup_rounds": 1},
        "systems": single["systems"], "breakdown_ms": single["breakdown_ms"], "scaling": scaling, "product": product,
        "notes": notes,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _compare_product(product: dict[str, dict], systems: dict) -> None:
    """Each ``graviti train`` run against the harness and the baselines measured in the same benchmark
    run; the 1-worker run is the like-for-like one (the harness's 'ours' is one process, all threads)."""
    for entry in product.values():
        rate = entry["seeds_per_s"]
        entry["vs_harness"] = round(rate / systems["ours"]["seeds_per_s"], 3)
        entry["vs"] = {name: round(rate / e["seeds_per_s"], 3) for name, e in systems.items() if name != "ours"}
        entry["vs_1_worker"] = round(rate / product[min(product, key=int)]["seeds_per_s"], 3)


# --- output ----------------------------------------------------------------------------------------

SYSTEM_KEYS = {"seeds_per_s", "spread", "edges_per_s", "peak_rss_gb", "ours_speedup"}


def check_result(payload: dict) -> None:
    """Raise ValueError unless ``payload`` has the train benchmark's schema (the quick test uses this)."""
    for key in ("environment", "benchmark", "device", "graph", "model", "rounds", "systems", "breakdown_ms", "scaling", "notes"):
        if key not in payload:
            raise ValueError(f"result lacks {key!r}")
    if "ours" not in payload["systems"]:
        raise ValueError("result lacks the 'ours' system")
    for name, entry in payload["systems"].items():
        missing = SYSTEM_KEYS - entry.keys()
        if missing:
            raise ValueError(f"systems.{name} lacks {sorted(missing)}")
        if not entry["seeds_per_s"] > 0 or not entry["spread"][0] <= entry["seeds_per_s"] <= entry["spread"][1]:
            raise ValueError(f"systems.{name}: seeds_per_s {entry['seeds_per_s']} outside its spread {entry['spread']}")
    if set(payload["breakdown_ms"]) != set(bt.PHASES):
        raise ValueError(f"breakdown_ms has {sorted(payload['breakdown_ms'])}, expected {sorted(bt.PHASES)}")
    for w, entry in payload["scaling"].items():
        if set(entry["breakdown_ms"]) != set(bt.PHASES) or not entry["seeds_per_s"] > 0:
            raise ValueError(f"scaling.{w} is incomplete")
    for w, entry in payload.get("product", {}).items():
        if not entry["seeds_per_s"] > 0 or entry["workers"] != int(w) or "vs_harness" not in entry:
            raise ValueError(f"product.{w} is incomplete")
    for key in ("commit", "machine", "versions"):
        if key not in payload["environment"]:
            raise ValueError(f"environment lacks {key!r}")


def markdown(payload: dict) -> str:
    """The summary table: one row per system, then the breakdown and scaling."""
    env = payload["environment"]
    rows = [f"Trainer throughput on `{payload['graph']['name']}` ({payload['graph']['nodes']:,} nodes, "
            f"{payload['graph']['edges']:,} edges), {payload['device']}, {payload['threads']} threads; 2-layer GAT 4x64, "
            f"fanout 10,10, batch {payload['model']['batch']}; {payload.get('sampler_workers', 0)} sampling processes for ours; median of {payload['rounds']['repeat']} rounds of "
            f"{payload['rounds']['steps']} steps.", "",
            "| system | seeds/s | spread | sampled edges/s | peak RSS | ours is |", "|---|---|---|---|---|---|"]
    paired = any("ours_speedup_spread" in e for e in payload["systems"].values())
    for name, e in payload["systems"].items():
        gpu = f" (GPU {e['gpu_peak_gb']:.2f} GB)" if "gpu_peak_gb" in e else ""
        ratio_range = e.get("ours_speedup_spread")
        ratio = f"{e['ours_speedup']:.2f}x" + (f" ({ratio_range[0]:.2f}-{ratio_range[1]:.2f})" if ratio_range and name != "ours" else "")
        rows.append(f"| {name} | {e['seeds_per_s']:,.0f} | {e['spread'][0]:,.0f}-{e['spread'][1]:,.0f} | "
                    f"{e['edges_per_s'] / 1e6:.2f} M | {e['peak_rss_gb']:.2f} GB{gpu} | {ratio} |")
    if paired:
        rows += ["", "ours is: the median, over rounds, of ours' seeds/s over the system's in the same round (range "
                     "in brackets); the two ran back to back, so the ratio cancels the machine's drift between rounds."]
    rows += ["", "| workers | phase ms/step: " + " | ".join(bt.PHASES) + " | seeds/s | vs 1 worker |",
             "|---|" + "---|" * (len(bt.PHASES) + 2)]
    for w, e in payload["scaling"].items():
        rows.append(f"| {w} x {e['threads_per_worker']} threads | " + " | ".join(f"{e['breakdown_ms'][p]:.1f}" for p in bt.PHASES)
                    + f" | {e['seeds_per_s']:,.0f} | {e['efficiency']:.0%} |")
    rows += _product_rows(payload.get("product", {}))
    rows += ["", *(f"- {n}" for n in payload["notes"])] if payload["notes"] else []
    m, v = env["machine"], env["versions"]
    rows += ["", f"Measured {env['date'][:10]} at commit `{env['commit'][:12]}` on {m['cpu']}, {m['cores']} cores"
                 f"{', GPU ' + m['gpu'] if m.get('gpu') else ''}; torch {v['torch']}, DGL {v['dgl']}, "
                 f"PyG {v.get('torch_geometric')}; kernels: {payload['kernels']}."]
    return "\n".join(rows) + "\n"


def _product_rows(product: dict) -> list[str]:
    if not product:
        return []
    others = sorted({name for e in product.values() for name in e["vs"]})
    rows = ["", "What users run: `graviti train` itself (Ray Train, DDP, run directory; same model, batch and partitions), "
                "seeds/s from its own `metrics.jsonl`, median of the epochs after the first:", "",
            "| `graviti train` | seeds/s | spread | first epoch | steps/epoch | whole command | vs harness | "
            + " | ".join(f"vs {n}" for n in others) + " | vs 1 worker |",
            "|---|" + "---|" * (6 + len(others) + 1)]
    for w, e in product.items():
        rows.append(f"| {w} x {e['threads_per_worker']} threads | {e['seeds_per_s']:,.0f} | {e['spread'][0]:,.0f}-"
                    f"{e['spread'][1]:,.0f} | {e['first_epoch_seeds_per_s']:,.0f} | {e['steps_per_epoch']} | "
                    f"{e['wall_s']:.0f} s ({e['epochs']} epochs) | {e['vs_harness']:.2f}x | "
                    + " | ".join(f"{e['vs'][n]:.2f}x" for n in others) + f" | {e['vs_1_worker']:.0%} |")
    return rows


def plot(payload: dict, stem: Path) -> list[Path]:
    """Throughput per system, time breakdown per worker count, scaling: three PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    bars = {f"{n} (harness)" if n == "ours" else n: e for n, e in payload["systems"].items()}
    bars |= {f"graviti train\n{w} worker{'s' if w != '1' else ''}": e for w, e in payload.get("product", {}).items()}
    names = list(bars)
    values = [bars[n]["seeds_per_s"] for n in names]
    errors = [[max(0.0, v - bars[n]["spread"][0]) for n, v in zip(names, values)],
              [max(0.0, bars[n]["spread"][1] - v) for n, v in zip(names, values)]]
    colours = {"dgl": "tab:blue", "pyg": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    ax.bar(names, values, yerr=errors, capsize=4, color=[colours.get(n, "tab:green") for n in names])
    ax.tick_params(axis="x", labelsize=7)
    ax.set(ylabel="training seeds / s", title=f"trainer throughput, {payload['graph']['name']}, {payload['device']}")
    fig.tight_layout()
    paths.append(stem.with_name(stem.name + "-throughput.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [f"{w} worker{'s' if w != '1' else ''}" for w in payload["scaling"]]
    left = [0.0] * len(labels)
    for phase in bt.PHASES:
        widths = [payload["scaling"][w]["breakdown_ms"][phase] for w in payload["scaling"]]
        ax.barh(labels, widths, left=left, label=phase)
        left = [a + b for a, b in zip(left, widths)]
    ax.set(xlabel="ms per step (serial, instrumented)", title=f"where a step's time goes ({payload['device']})")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    paths.append(stem.with_name(stem.name + "-breakdown.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    workers = [int(w) for w in payload["scaling"]]
    rates = [payload["scaling"][str(w)]["seeds_per_s"] for w in workers]
    ax.plot(workers, rates, "o-", label="measured")
    ax.plot(workers, [rates[0]] * len(workers), "--", color="grey", label="1-worker throughput (same total threads)")
    ax.set(xlabel="workers", ylabel="seeds / s", xticks=workers, title="scaling on this machine")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(stem.with_name(stem.name + "-scaling.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write(payload: dict, out_dir: Path) -> Path:
    """JSON, Markdown and plots under ``out_dir``, each written whole (temporary sibling, rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"train-{payload['device'].split(':')[0]}-{payload['graph']['name']}"
    path = stem.with_suffix(".json")
    write_whole(path, json.dumps(payload, indent=2))
    write_whole(stem.with_suffix(".md"), markdown(payload))
    plot(payload, stem)
    return path


def run_suite(args: argparse.Namespace) -> None:
    """The whole CPU suite: generation, partitioning, encoder, then the trainer benchmark."""
    for module in ("benchmarks.bench_generate", "benchmarks.bench_partition", "benchmarks.bench_encoder"):
        print(f"== {module}", flush=True)
        subprocess.run([sys.executable, "-m", module], check=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graviti bench", description="trainer throughput side by side with DGL and PyG")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    import os

    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--graph", default="synthetic-1m", help="synthetic-1m, synthetic-10m, twitch, or a crawl folder")
    p.add_argument("--workers", default="1,2", help="worker counts to compare (CPU), e.g. 1,2")
    p.add_argument("--repeat", type=int, default=9, help="measured rounds per system (after one warm-up round)")
    p.add_argument("--steps", type=int, default=10, help="training steps per round")
    p.add_argument("--batch", type=int, default=bt.BATCH)
    p.add_argument("--threads", type=int, help="total threads (default: the CPUs this process may use)")
    p.add_argument("--sampler-workers", type=int, help="sampling processes for ours (default 0: in the training process)")
    p.add_argument("--product-epochs", type=int,
                   help="epochs of `graviti train` itself per worker count (CPU; the first is warm-up; 0 skips it; "
                        "default 4, --quick 2)")
    p.add_argument("--quick", action="store_true", help="tiny graph, 1 round of 2 steps: checks the pipeline in under a minute")
    p.add_argument("--suite", action="store_true", help="also run the generation, partition and encoder benchmarks")
    p.add_argument("--out", type=Path, default=RESULTS, help="where JSON, table and plots go (default benchmarks/results)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/graviti-bench"), help="cache of generated graphs and partitions")
    p.add_argument("--datasets", type=Path, default=Path(os.environ.get("GRAVITI_DATASETS", DEFAULT_DATASETS)))


def main(args: argparse.Namespace) -> Path:
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.suite:
        if args.device != "cpu":
            raise GravitiError("--suite is the CPU suite; run --device cuda on its own")
        run_suite(args)
    payload = {"environment": environment(), **run(args)}
    check_result(payload)
    path = write(payload, args.out)
    print(markdown(payload))
    print(f"wrote {path} (+ .md and three PNGs)")
    return path


if __name__ == "__main__":
    main(parser().parse_args())
