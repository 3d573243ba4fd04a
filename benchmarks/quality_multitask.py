"""What multi-task training buys on real data: one multi-task run against one run per task, for the
GAT and the features-only MLP, and each loss balancer on the GAT, several seeds, Twitch and NBA.

Every run is ``graviti train``'s ``fit`` as a user runs it (1 Ray Train worker, the default
model, a fixed number of epochs, no early stopping; one local Ray for all runs) on a set split by node (``--split-by node``: a user's tasks
share its split). A multi-task run reports each task from its own best validation epoch
(per-task selection, what ``graviti infer``/``serve`` answer by default); a single-task run is
that task alone (``tasks=[task]``), selected the same way. Results: mean ± sd over seeds per
task, and whether the multi-task GAT is at least as good as the better single-task model.

Usage: python -m benchmarks.quality_multitask [--datasets DIR] [--seeds 0,1,2] [--epochs 40]
       [--single-tasks "twitch:mature,views,days"] [--balancers static,dwa,gradnorm] [--workdir /tmp/graviti-quality]
       [--configs "GAT multi-task, static;GAT multi-task, dwa"]
Runs of an earlier invocation (the committed JSON) that this one did not make are kept, so one
configuration or dataset can be added without training the others again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import time
from pathlib import Path

from benchmarks._meta import DEFAULT_DATASETS, RESULTS, environment, write_result, write_whole
from graviti_dist.partition import PartitionSet
from graviti_dist.train import RunDir

# dataset -> task -> (test metric, larger is better)
TASKS = {
    "twitch": {"mature": ("roc_auc", True), "views": ("rmse", False), "days": ("rmse", False),
               "language": ("accuracy", True), "partner": ("roc_auc", True)},
    "nba": {"salary": ("roc_auc", True), "age": ("rmse", False), "country": ("roc_auc", True)},
}
BALANCERS = ("static", "dwa", "gradnorm")  # besides the default, uncertainty
# Every run but this one sets model.degree_features=true (measured when it was the default; now off):
NO_DEGREE = "GAT multi-task, no degree inputs"  # what the log degrees add
LONG_EPOCHS = 100  # views was still improving at 100 epochs (issue #21): the GAT runs again that long
LONG = (f"GAT multi-task, {LONG_EPOCHS} epochs", f"GAT single-task, {LONG_EPOCHS} epochs")
# model.task_groups per dataset: on Twitch, days in views' encoder cost views most, and views with mature
# helped both (seed-0 subsets of the tasks, benchmarks/README.md "Task groups")
GROUPED = "GAT multi-task, task groups"
TASK_GROUPS = {"twitch": [["views", "mature"], ["days", "partner", "language"]]}
# The same comparisons with the weights averaged over the last ~2 epochs (optim.average_epochs; 2
# epochs are 32 steps on Twitch, where validation views swings by 0.1 epoch to epoch): every
# multi-task and single-task configuration this suffix is added to, so that the verdict compares alike
AVERAGED, AVERAGE_EPOCHS = ", averaged", 2
FAMILIES = ("", AVERAGED)  # each family's multi-task runs are judged against its own single-task runs
# The task that sharing costs in an encoder of its own, the others sharing one (averaged family only):
# views lost to single-task in every shared configuration above
APART = "GAT multi-task, views apart"
APART_GROUPS = {"twitch": [["views"], ["mature", "days", "partner", "language"]]}
MULTI_TASK_RUNS = ("GAT multi-task", GROUPED, APART)  # judged against the single-task models


def prepare(workdir: Path, datasets: Path) -> dict[str, Path]:
    """Import and partition (2 parts, split by node) each dataset once under ``workdir``."""
    from graviti_dist.crawl.importers import import_nba, import_twitch
    from graviti_dist.partition import PartitionSpec, partition_crawl

    sets = {}
    for name, importer in (("twitch", lambda out: import_twitch([datasets / "twitch" / "ENGB", datasets / "twitch" / "PTBR"], out, overwrite=True)),
                           ("nba", lambda out: import_nba(datasets / "nba", out, overwrite=True))):
        crawl, parts = workdir / f"{name}-crawl", workdir / f"{name}-parts"
        if not (crawl / "graph.yaml").exists():
            importer(crawl)
        if not PartitionSet(parts).is_finished():
            partition_crawl(crawl, parts, PartitionSpec(num_parts=2, split_by="node", executor="local"), overwrite=True)
        sets[name] = parts
    return sets


def train(parts: Path, out: Path, seed: int, epochs: int, kind: str = "gat", tasks: list[str] | None = None,
          balancing: str = "uncertainty", degree: bool = True, settings: tuple[str, ...] = ()) -> dict:
    """One run of ``graviti train``'s ``fit`` (in this process, on the Ray session ``main`` started:
    one Ray start for all runs instead of one per run); each task's test metrics from its own
    selected epoch, and that epoch; ``settings`` are more ``--set`` items."""
    from graviti_dist.train import fit, load_train_config

    settings = [f"partitions={parts}", f"out={out}", f"model.kind={kind}", f"seed={seed}", f"epochs={epochs}",
                f"balancing={balancing}", f"model.degree_features={str(degree).lower()}", "num_workers=1",
                "progress=false", "keep_checkpoints=1", *settings]
    if tasks:
        settings.append(f"tasks=[{','.join(tasks)}]")
    started, run = time.perf_counter(), RunDir(out)
    done = run.test_metrics_path.exists() and (run.path / "bench-seconds").exists()
    if not done:  # a run an interrupted invocation finished is read back, not trained again
        with contextlib.redirect_stdout(io.StringIO()):  # fit's per-epoch console lines
            fit(load_train_config(None, settings), overwrite=True)
        (run.path / "bench-seconds").write_text(str(round(time.perf_counter() - started, 1)))
        here = environment()
        (run.path / "bench-measured-by").write_text(json.dumps({"commit": here["commit"][:12], "machine": here["machine"]["cpu"]}))
    run = RunDir(out)
    selection = run.read_selection()
    by = run.path / "bench-measured-by"  # a read-back run keeps the commit and machine that trained it
    return {"test": run.read_test_metrics(), "epochs": {t: c.epoch for t, c in selection.tasks.items()},
            "seconds": float((run.path / "bench-seconds").read_text()), "divergences": divergences(run.read_records()),
            **(json.loads(by.read_text()) if by.exists() else {})}


def divergences(records: list[dict], rise: float = 3.0, floor: float = 0.05) -> dict[str, list[int]]:
    """Per task, the epochs (0-based) where its training loss rose above ``rise`` x its lowest of the
    three epochs before and above ``floor``: a run knocked off course, not epoch-to-epoch noise (what
    uncapped uncertainty weights did to views and days in every 100-epoch Twitch run)."""
    tasks = [key[len("loss/"):] for key in records[0] if key.startswith("loss/")] if records else []
    return {t: [i for i in range(3, len(records))
                if records[i][f"loss/{t}"] > max(rise * min(r[f"loss/{t}"] for r in records[i - 3:i]), floor)]
            for t in tasks}


def configurations(dataset: str, single: list[str] | None = None, balancers: tuple[str, ...] = BALANCERS) -> list[tuple[str, dict]]:
    """(label, train() keywords): multi-task GAT and MLP, single-task GAT and MLP per task (of
    ``single``, default all), each balancer, and the multi-task GAT without degree inputs."""
    configs = [("GAT multi-task", {}), ("MLP multi-task", {"kind": "mlp"})]
    for task in single or TASKS[dataset]:
        configs += [("GAT single-task", {"tasks": [task]}), ("MLP single-task", {"kind": "mlp", "tasks": [task]})]
    configs += [(f"GAT multi-task, {b}", {"balancing": b}) for b in balancers]
    configs.append((NO_DEGREE, {"degree": False}))
    if dataset in TASK_GROUPS:
        configs.append((GROUPED, {"settings": (_groups_setting(TASK_GROUPS[dataset]),)}))
    configs.append((LONG[0], {"epochs": LONG_EPOCHS}))
    configs += [(LONG[1], {"tasks": [task], "epochs": LONG_EPOCHS}) for task in single or TASKS[dataset]]
    configs += _averaged(configs)
    if dataset in APART_GROUPS:
        configs.append((APART + AVERAGED, {"settings": (_groups_setting(APART_GROUPS[dataset]),
                                                        f"optim.average_epochs={AVERAGE_EPOCHS}")}))
    return configs


def _groups_setting(groups: list[list[str]]) -> str:
    return "model.task_groups=[" + ",".join("[" + ",".join(group) + "]" for group in groups) + "]"


def _averaged(configs: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The multi-task, grouped and single-task configurations again, with averaged weights."""
    family = {"GAT multi-task", "MLP multi-task", "GAT single-task", "MLP single-task", GROUPED}
    setting = f"optim.average_epochs={AVERAGE_EPOCHS}"
    return [(label + AVERAGED, {**options, "settings": (*options.get("settings", ()), setting)})
            for label, options in configs if label in family]


def run_all(sets: dict[str, Path], workdir: Path, seeds: list[int], epochs: int, single: dict[str, list[str]],
            balancers: tuple[str, ...] = BALANCERS, only: set[str] | None = None) -> list[dict]:
    runs = []
    for dataset, parts in sets.items():
        for seed in seeds:
            for label, options in configurations(dataset, single.get(dataset), balancers):
                if only and label not in only:
                    continue
                tag = "-".join([dataset, label.replace(" ", "").replace(",", "-"), *options.get("tasks", []), str(seed)])
                options = {"epochs": epochs, **options}
                if options["epochs"] != epochs:
                    tag += f"-{options['epochs']}epochs"
                result = train(parts, workdir / "runs" / tag, seed, **options)
                for task, (metric, _) in TASKS[dataset].items():
                    if options.get("tasks") and task not in options["tasks"]:
                        continue
                    runs.append({"dataset": dataset, "config": label, "seed": seed, "task": task, "metric": metric, "epochs": options["epochs"],
                                 "value": result["test"][task][metric], "epoch": result["epochs"].get(task),
                                 "seconds": result["seconds"], "divergences": len(result["divergences"].get(task, [])),
                                 **{k: result[k] for k in ("commit", "machine") if k in result}})
                print(json.dumps({"dataset": dataset, "config": label, "seed": seed, **options,
                                  "seconds": result["seconds"]}), flush=True)
    return runs


def summarise(runs: list[dict]) -> dict:
    """dataset -> task -> config -> {mean, sd, n}."""
    summary: dict = {}
    for r in runs:
        summary.setdefault(r["dataset"], {}).setdefault(r["task"], {}).setdefault(r["config"], []).append(r["value"])
    return {d: {t: {c: {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
                    for c, v in by_config.items()} for t, by_config in tasks.items()} for d, tasks in summary.items()}


def verdicts(summary: dict) -> dict:
    """dataset -> task -> multi-task run (the GAT, grouped, each with averaged weights where measured)
    -> is it at least as good as the better single-task model, better than the multi-task MLP, and
    within one sd of the single-task GAT, all of its own family?"""
    out = {}
    for dataset, tasks in summary.items():
        for task, by in tasks.items():
            for family in FAMILIES:
                needed = [f"{c}{family}" for c in ("GAT single-task", "MLP single-task", "MLP multi-task")]
                if not all(c in by for c in needed):  # multi-task runs only (--single-tasks left them out)
                    continue
                for run in (f"{label}{family}" for label in MULTI_TASK_RUNS):
                    if run in by:
                        out.setdefault(dataset, {}).setdefault(task, {})[run] = _verdict(by, run, family, TASKS[dataset][task][1])
    return out


def _verdict(by: dict, run: str, family: str, larger: bool) -> dict:
    """``run`` against the single-task GAT and MLP and the multi-task MLP of its own family."""
    better = (lambda a, b: a >= b) if larger else (lambda a, b: a <= b)
    mt, st_gat, st_mlp = by[run], by[f"GAT single-task{family}"], by[f"MLP single-task{family}"]
    best_single = max(st_gat["mean"], st_mlp["mean"]) if larger else min(st_gat["mean"], st_mlp["mean"])
    worse_by = (st_gat["mean"] - mt["mean"]) if larger else (mt["mean"] - st_gat["mean"])
    return {"beats_best_single": better(mt["mean"], best_single),
            "beats_mlp_multi": better(mt["mean"], by[f"MLP multi-task{family}"]["mean"]),
            "within_one_sd_of_single_gat": worse_by <= st_gat["sd"]}


def table(result: dict) -> str:
    """Per dataset: one row per configuration, one column per task (mean ± sd); then each multi-task
    run's verdicts against the single-task models of its family."""
    env, lines = result["environment"], []
    order = ["GAT multi-task", "GAT single-task", "MLP multi-task", "MLP single-task", GROUPED, *LONG,
             *(f"GAT multi-task, {b}" for b in BALANCERS), NO_DEGREE]
    order += [label + AVERAGED for label in order[:5]] + [APART + AVERAGED]
    for dataset, tasks in result["summary"].items():
        configs = [c for c in order if any(c in by for by in tasks.values())]
        lines += [f"**{dataset}**", "", "| configuration | " + " | ".join(
            f"`{t}` {TASKS[dataset][t][0]} {'↑' if TASKS[dataset][t][1] else '↓'}" for t in tasks) + " |",
            "|---|" + "---|" * len(tasks)]
        for c in configs:
            cells = [f"{tasks[t][c]['mean']:.3f} ± {tasks[t][c]['sd']:.3f}" if c in tasks[t] else "—" for t in tasks]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines += ["", _verdict_table(result["verdicts"].get(dataset, {})), ""]
    epochs = ", ".join(f"{d} {sorted({r['epochs'] for r in result['runs'] if r['dataset'] == d})[0]}" for d in result["summary"])
    lines.append(f"Mean ± sd over seeds {result['seeds']}; epochs: {epochs}; 1 worker, default model "
                 f"(uncertainty balancing and model.degree_features=true unless named; `averaged`: "
                 f"optim.average_epochs={AVERAGE_EPOCHS}), each task at its own best validation epoch. "
                 f"Last measured {env['date'][:10]}, {env['machine']['cores']} cores; " + _provenance(result["runs"]) + ".")
    return "\n".join(lines) + "\n"


def _verdict_table(verdicts: dict) -> str:
    """One row per multi-task run and task: ≥ the better single-task model, > the multi-task MLP,
    within one sd of the single-task GAT (each against its own family: averaged with averaged)."""
    rows = ["| multi-task run | task | ≥ best single-task | > multi-task MLP | within 1 sd of single-task GAT |",
            "|---|---|---|---|---|"]
    runs = sorted({run for by in verdicts.values() for run in by}, key=lambda r: (AVERAGED in r, GROUPED in r, APART in r))
    for run in runs:
        for task, by in verdicts.items():
            if run in by:
                v = by[run]
                rows.append(f"| {run} | `{task}` | " + " | ".join("yes" if v[k] else "**no**" for k in (
                    "beats_best_single", "beats_mlp_multi", "within_one_sd_of_single_gat")) + " |")
    return "\n".join(rows)


def _provenance(runs: list[dict]) -> str:
    """Which commit and machine measured which configurations (invocations add to earlier ones)."""
    by: dict[tuple[str, str], set[str]] = {}
    for r in runs:
        by.setdefault((r.get("commit", "?"), r.get("machine", "?")), set()).add(r["config"])
    return "; ".join(f"commit `{c}` on {m}: " + ", ".join(sorted(configs)) for (c, m), configs in by.items())


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, t) for d, tasks in result["summary"].items() for t in tasks if "GAT single-task" in tasks[t]]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.2))
    bars = [("GAT multi-task", "GAT MT", "C0", 0.9), ("GAT single-task", "GAT ST", "C0", 0.45),
            ("MLP multi-task", "MLP MT", "C1", 0.9), ("MLP single-task", "MLP ST", "C1", 0.45), (GROUPED, "GAT MT, groups", "C2", 0.9)]
    bars += [(c + AVERAGED, label + ", avg", color, alpha) for c, label, color, alpha in bars]  # hatched below
    bars.append((APART + AVERAGED, "GAT MT, views apart, avg", "C3", 0.9))
    for ax, (dataset, task) in zip(axes, panels):
        by = result["summary"][dataset][task]
        shown = [bar for bar in bars if bar[0] in by]
        configs = [c for c, *_ in shown]
        means = [by[c]["mean"] for c in configs]
        for x, (c, _, color, alpha) in enumerate(shown):
            ax.bar(x, by[c]["mean"], yerr=by[c]["sd"], color=color, alpha=alpha, hatch="//" if AVERAGED in c else None)
        metric, larger = TASKS[dataset][task]
        ax.set_title(f"{dataset} {task}\n{metric} ({'higher' if larger else 'lower'} is better)", fontsize=8)
        ax.set_xticks(range(len(shown)), [label for _, label, *_ in shown], fontsize=7, rotation=45, ha="right")
        lo = min(m - by[c]["sd"] for m, c in zip(means, configs))
        hi = max(m + by[c]["sd"] for m, c in zip(means, configs))
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("GRAVITI_DATASETS", DEFAULT_DATASETS)))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--only", help="comma-separated datasets (default: twitch,nba)")
    parser.add_argument("--single-tasks", default="", help="DATASET:TASK,TASK;... single-task runs only for these tasks "
                                                           "(default: every task of every dataset)")
    parser.add_argument("--balancers", default=",".join(BALANCERS), help="besides uncertainty, comma-separated; '' for none")
    parser.add_argument("--configs", help="semicolon-separated labels (e.g. 'GAT multi-task, dwa'): run only these")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/graviti-quality"),
                        help="finished runs found here are read back, not trained again")
    args = parser.parse_args()
    sets = prepare(args.workdir, args.datasets)
    if args.only:
        sets = {k: v for k, v in sets.items() if k in args.only.split(",")}
    seeds = [int(s) for s in args.seeds.split(",")]
    from graviti_dist.runtime.ray_cluster import ray_session

    with ray_session(num_threads=os.cpu_count()):
        single = {d: t.split(",") for d, t in (item.split(":") for item in args.single_tasks.split(";") if item)}
        only = {c.strip() for c in args.configs.split(";")} if args.configs else None
        runs = run_all(sets, args.workdir, seeds, args.epochs, single, tuple(b for b in args.balancers.split(",") if b), only)
    here = environment()
    for r in runs:  # runs read back from --workdir without a record of who trained them: this checkout
        r.setdefault("commit", here["commit"][:12])
        r.setdefault("machine", here["machine"]["cpu"])
    earlier = RESULTS / "quality-multitask.json"
    if earlier.exists():  # keep the runs of an earlier invocation that this one did not make again
        made = {(r["dataset"], r["config"], r["seed"], r["task"]) for r in runs}
        before = json.loads(earlier.read_text())
        for r in before["runs"]:
            if (r["dataset"], r["config"], r["seed"], r["task"]) not in made:
                runs.append({"commit": before["environment"]["commit"][:12],
                             "machine": before["environment"]["machine"]["cpu"], **r})
    result = {"benchmark": "quality-multitask", "seeds": sorted({r["seed"] for r in runs}), "epochs": sorted({r.get("epochs", args.epochs) for r in runs}),
              "runs": runs}
    result["summary"] = summarise(runs)
    result["verdicts"] = verdicts(result["summary"])
    path = write_result("quality-multitask", result)
    result = json.loads(path.read_text())
    write_whole(RESULTS / "quality-multitask.md", table(result))
    plot(result, path.with_suffix(".png"))
    print(table(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
