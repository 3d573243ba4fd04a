"""Model quality on real data: the GAT against the features-only MLP on Twitch, several seeds.

Each run is ``graviti train`` (2 Ray Train workers, the default model) on one partition set,
with the model selected on the validation split of the task being compared
(``early_stopping.metric``), and that model's test-split metric reported. Multi-task training
moves tasks at different speeds (on Twitch `mature` overfits after ~25 epochs while `views`
still improves at 100), so a comparison per task selects per task.

Usage: python -m benchmarks.quality_twitch --partitions partitions/twitch [--seeds 0,1,2] [--epochs 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._meta import RESULTS, environment, write_result, write_whole
from graviti_dist.train import RunDir

# task/metric compared, whether larger is better
SELECTIONS = (("mature", "roc_auc", "max"), ("views", "rmse", "min"))
ENCODERS = ("gat", "mlp")


def train(partitions: Path, out: Path, kind: str, seed: int, epochs: int, task: str, metric: str, mode: str,
          patience: int) -> dict:
    """One ``graviti train`` run; returns its test metrics and the selected epoch."""
    command = [sys.executable, "-m", "graviti_dist.train", "--overwrite",
               *(arg for setting in (f"partitions={partitions}", f"out={out}", f"model.kind={kind}", f"seed={seed}",
                                     f"epochs={epochs}", f"early_stopping={{metric: {task}/{metric}, mode: {mode}, "
                                                         f"patience: {patience}}}", "progress=false")
                 for arg in ("--set", setting))]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"training failed ({kind}, seed {seed}, {task}):\n{proc.stderr[-3000:]}")
    records = RunDir(out).read_records()
    return {"test": RunDir(out).read_test_metrics(), "best_epoch": records[-1]["best_epoch"], "epochs_run": len(records)}


def table(result: dict, env: dict) -> str:
    rows = ["| task (test split) | seed | GAT | MLP | GAT better | selected epoch (GAT, MLP) |", "|---|---|---|---|---|---|"]
    for task, metric, mode in SELECTIONS:
        runs = [r for r in result["runs"] if r["task"] == task]
        for seed in sorted({r["seed"] for r in runs}):
            by = {r["kind"]: r for r in runs if r["seed"] == seed}
            gat, mlp = by["gat"]["value"], by["mlp"]["value"]
            better = gat > mlp if mode == "max" else gat < mlp
            rows.append(f"| {task} {metric} | {seed} | {gat:.3f} | {mlp:.3f} | {'yes' if better else '**no**'} "
                        f"| {by['gat']['best_epoch']}, {by['mlp']['best_epoch']} |")
        for kind in ENCODERS:
            values = [r["value"] for r in runs if r["kind"] == kind]
            result.setdefault("summary", {}).setdefault(task, {})[kind] = {
                "mean": statistics.mean(values), "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}
        s = result["summary"][task]
        rows.append(f"| {task} {metric} | mean ± sd | {s['gat']['mean']:.3f} ± {s['gat']['stdev']:.3f} "
                    f"| {s['mlp']['mean']:.3f} ± {s['mlp']['stdev']:.3f} | | |")
    return ("\n".join(rows) + f"\n\nTwitch ENGB+PTBR, 2 workers, default model, up to {result['epochs']} epochs, model selected on "
            f"the task's validation metric (patience {result['patience']}). Measured {env['date'][:10]} at commit "
            f"`{env['commit'][:12]}` on {env['machine']['cpu']}, {env['machine']['cores']} cores.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=Path, required=True, help="a Twitch partition set (graviti partition)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="quality-twitch-"))
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for task, metric, mode in SELECTIONS:
            for kind in ENCODERS:
                run = train(args.partitions.absolute(), workdir / f"{task}-{kind}-{seed}", kind, seed, args.epochs,
                            task, metric, mode, args.patience)
                runs.append({"task": task, "metric": metric, "kind": kind, "seed": seed,
                             "value": run["test"][task][metric], "best_epoch": run["best_epoch"],
                             "epochs_run": run["epochs_run"], "test": run["test"]})
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "test"}), flush=True)
    result = {"benchmark": "quality-twitch", "epochs": args.epochs, "patience": args.patience, "runs": runs}
    markdown = table(result, environment())
    path = write_result("quality-twitch", result)
    write_whole(RESULTS / "quality-twitch.md", markdown)
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
