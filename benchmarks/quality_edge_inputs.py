"""What edge inputs (each edge's age against the crawl's latest ``ts``, and its weight) buy: the
default multi-task GAT with ``model.edge_inputs`` on and off, several seeds, on the project's own
synthetic crawl, whose retweets and replies carry ``ts`` (rumours are retweeted faster). The real
datasets in ../shared have no edge times, so this is where the setting can be measured.

Every run is ``graviti train``'s ``fit`` as a user runs it (1 Ray Train worker, one local Ray for
all runs), each task at its own best validation epoch.

Usage: python -m benchmarks.quality_edge_inputs [--users 10000] [--seeds 0,1,2] [--epochs 20]
       [--workdir /tmp/graviti-edge-inputs]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from benchmarks._meta import RESULTS, environment, write_result, write_whole
from benchmarks.quality_multitask import train
from graviti_dist.partition import PartitionSet

NAME = "quality-edge-inputs"
# task -> (test metric, larger is better)
TASKS = {"interest": ("accuracy", True), "influence": ("rmse", False), "is_bot": ("roc_auc", True),
         "is_rumor": ("roc_auc", True)}
CONFIGS = {"edge inputs on": ("model.edge_inputs=true",), "edge inputs off": ("model.edge_inputs=false",)}


def prepare(workdir: Path, users: int) -> Path:
    """Generate and partition (2 parts, split by node) the synthetic crawl once under ``workdir``."""
    from graviti_dist.crawl import SyntheticSpec, generate_crawl
    from graviti_dist.partition import PartitionSpec, partition_crawl

    crawl, parts = workdir / f"synthetic-{users}", workdir / f"synthetic-{users}-parts"
    if not (crawl / "graph.yaml").exists():
        generate_crawl(crawl, SyntheticSpec(users=users, seed=1), progress=False, overwrite=True)
    if not PartitionSet(parts).is_finished():
        partition_crawl(crawl, parts, PartitionSpec(num_parts=2, split_by="node", executor="local"), overwrite=True)
    return parts


def run_all(parts: Path, workdir: Path, seeds: list[int], epochs: int) -> list[dict]:
    runs = []
    for seed in seeds:
        for label, settings in CONFIGS.items():
            tag = f"{label.replace(' ', '-')}-{seed}"
            result = train(parts, workdir / "runs" / tag, seed, epochs, settings=settings)
            for task, (metric, _) in TASKS.items():
                runs.append({"config": label, "seed": seed, "task": task, "metric": metric,
                             "value": result["test"][task][metric], "epoch": result["epochs"].get(task),
                             "seconds": result["seconds"]})
            print(json.dumps({"config": label, "seed": seed, "seconds": result["seconds"]}), flush=True)
    return runs


def summarise(runs: list[dict]) -> dict:
    """task -> config -> {mean, sd, n}."""
    values: dict = {}
    for r in runs:
        values.setdefault(r["task"], {}).setdefault(r["config"], []).append(r["value"])
    return {t: {c: {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
                for c, v in by.items()} for t, by in values.items()}


def table(result: dict) -> str:
    env = result["environment"]
    lines = ["| task (test) | " + " | ".join(CONFIGS) + " | on - off |", "|---|" + "---|" * (len(CONFIGS) + 1)]
    for task, by in result["summary"].items():
        metric, larger = TASKS[task]
        on, off = by["edge inputs on"], by["edge inputs off"]
        cells = [f"{by[c]['mean']:.3f} ± {by[c]['sd']:.3f}" for c in CONFIGS]
        lines.append(f"| `{task}` {metric} {'↑' if larger else '↓'} | " + " | ".join(cells) + f" | {on['mean'] - off['mean']:+.3f} |")
    lines.append(f"\nSynthetic crawl, {result['users']} users (`graviti generate --users {result['users']} --seed 1`), 2 parts "
                 f"split by node; mean ± sd over seeds {result['seeds']}, {result['epochs']} epochs, 1 worker, the default "
                 f"model, each task at its own best validation epoch. Measured {env['date'][:10]} at commit "
                 f"`{env['commit'][:12]}` on {env['machine']['cpu']} ({env['machine']['cores']} cores).")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib  # for the plot only: the benchmark runs without it until here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(2.4 * len(TASKS), 2.8))
    for ax, (task, (metric, larger)) in zip(axes, TASKS.items()):
        by = result["summary"][task]
        ax.bar(range(len(CONFIGS)), [by[c]["mean"] for c in CONFIGS], yerr=[by[c]["sd"] for c in CONFIGS], color=["C0", "C7"])
        ax.set_xticks(range(len(CONFIGS)), ["on", "off"], fontsize=8)
        ax.set_title(f"{task}\n{metric} ({'higher' if larger else 'lower'} is better)", fontsize=8)
        lo = min(by[c]["mean"] - by[c]["sd"] for c in CONFIGS)
        hi = max(by[c]["mean"] + by[c]["sd"] for c in CONFIGS)
        ax.set_ylim(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo))
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("edge inputs (age, weight) on and off", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/graviti-edge-inputs"),
                        help="finished runs found here are read back, not trained again")
    args = parser.parse_args()
    parts = prepare(args.workdir, args.users)
    seeds = [int(s) for s in args.seeds.split(",")]
    from graviti_dist.runtime.ray_cluster import ray_session

    with ray_session(num_threads=os.cpu_count()):
        runs = run_all(parts, args.workdir, seeds, args.epochs)
    result = {"benchmark": NAME, "users": args.users, "seeds": seeds, "epochs": args.epochs, "runs": runs,
              "summary": summarise(runs)}
    path = write_result(NAME, result)
    result = json.loads(path.read_text())
    write_whole(RESULTS / f"{NAME}.md", table(result))
    plot(result, path.with_suffix(".png"))
    print(table(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
