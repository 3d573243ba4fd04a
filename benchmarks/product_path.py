"""What users run: ``graviti train`` itself (Ray Train, DDP, the run directory), timed by its own records.

The harness in ``bench_train.py`` times our worker loop in this process. This module runs the
``graviti train`` command on the same partitions with the same model and batch (the harness's
comparison model: no dropout, residual or relation embeddings, static balancing over the node
tasks) and reads each epoch's ``seeds_per_s`` from the run's ``metrics.jsonl``: the training
pass only, summed over workers, as the console prints it. The first epoch is reported apart
(warm-up: allocator growth, first-touch of the partitions); the figure is the median of the rest.
Evaluation runs once, after the last epoch, so it is outside every timed epoch either way.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from benchmarks.bench_encoder import FANOUTS, HEADS, HIDDEN
from graviti_dist.errors import GravitiError
from graviti_dist.train import RunDir


@dataclass
class ProductRun:
    """One ``graviti train`` run's throughput, from its own epoch records."""

    workers: int
    threads_per_worker: int
    epochs: int
    seeds_per_s: float  # median over epochs after the first
    spread: tuple[float, float]
    first_epoch_seeds_per_s: float
    steps_per_epoch: int
    wall_s: float  # the whole command: Ray start, loading, epochs, evaluation, outputs


def train_config(partitions: Path, out: Path, node_tasks: list[str], workers: int, threads: int, batch: int,
                 epochs: int) -> dict:
    """The harness's model and batch as a ``graviti train`` config."""
    return {
        "partitions": str(partitions), "out": str(out), "tasks": node_tasks, "balancing": "static",
        "model": {"kind": "gat", "hidden": HIDDEN, "heads": HEADS, "dropout": 0.0, "layer_norm": False,
                  "residual": False, "relations": False, "edge_inputs": False,
                  "fanouts": list(FANOUTS)},
        "optim": {"lr": 1e-3}, "batch_size": batch, "epochs": epochs, "num_workers": workers,
        "threads_per_worker": threads, "device": "cpu", "eval_every": epochs, "seed": 0,
    }


def run_train(partitions: Path, node_tasks: list[str], workers: int, total_threads: int, batch: int, epochs: int,
              timeout_s: float = 3600) -> ProductRun:
    """``graviti train`` in a fresh process, as a user starts it; its records give the throughput."""
    threads = max(1, total_threads // workers)
    with tempfile.TemporaryDirectory(prefix="graviti-product-") as tmp:
        config_path, out = Path(tmp) / "config.yaml", Path(tmp) / "run"
        config_path.write_text(yaml.safe_dump(train_config(partitions, out, node_tasks, workers, threads, batch, epochs)))
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "graviti_dist.cli", "train", str(config_path)], capture_output=True,
                              text=True, timeout=timeout_s)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise GravitiError(f"graviti train ({workers} workers) failed:\n{(done.stdout + done.stderr)[-3000:]}")
        records = [json.loads(line) for line in RunDir(out).metrics_path.read_text().splitlines()]
    rates = [r["seeds_per_s"] for r in records]
    steady = rates[1:] or rates
    return ProductRun(workers=workers, threads_per_worker=threads, epochs=len(records),
                      seeds_per_s=round(statistics.median(steady), 1), spread=(min(steady), max(steady)),
                      first_epoch_seeds_per_s=rates[0], steps_per_epoch=records[0]["steps"], wall_s=round(wall, 1))


def product_path(parts: dict[int, Path], node_tasks: list[str], workers: list[int], total_threads: int, batch: int,
                 epochs: int) -> dict[str, dict]:
    """``graviti train`` with each worker count, on the set with as many parts: {workers: ProductRun as a dict}."""
    return {str(w): asdict(run_train(parts[w], node_tasks, w, total_threads, batch, epochs)) for w in workers}
