"""``graviti train``: neighbour-sampled multi-task training on Ray Train workers with DDP.

Worker ``i`` of ``W`` owns partitions i, i+W, ...; every worker runs the same
number of steps per epoch (agreed with an all-reduce, shorter workers cycle
their batches) so uneven partitions cannot hang DDP. Metrics are exact across
workers (predictions gathered). Rank 0 writes the run directory.

Marked Ray touchpoints: [1] prepare the model for DDP, [2] report metrics and
checkpoints, [3] restore from a checkpoint, [4] the trainer.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
import ray.train
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from graviti_dist._dgl import set_threads
from graviti_dist.config import TrainConfig, check_against_partitions, encoder_config
from graviti_dist.errors import GravitiError
from graviti_dist.metrics import torch_distributed_gather
from graviti_dist.plots import plot_run
from graviti_dist.ray_cluster import ray_session
from graviti_dist.sampling import MinibatchStream, NodeMinibatches, load_worker_partition, to_model
from graviti_dist.worker_loop import build_model, evaluate, make_optimizer, train_step

CHECKPOINT_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"


def _flat(prefix: str, nested: dict) -> dict:
    return {f"{prefix}{task}/{name}": value for task, values in nested.items() for name, value in values.items()}


def train_loop_per_worker(config_dict: dict) -> None:
    """Runs in each Ray Train worker; ``config_dict`` is a TrainConfig as a plain dict."""
    config = TrainConfig.model_validate(config_dict)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    set_threads(config.threads_per_worker or max(1, (os.cpu_count() or 2) // world))
    torch.manual_seed(config.seed)
    device = ray.train.torch.get_device() if config.device == "cuda" else torch.device("cpu")
    manifest = json.loads((Path(config.partitions) / "manifest.json").read_text())
    owned = list(range(rank, manifest["spec"]["num_parts"], world))
    parts = [load_worker_partition(config.partitions, p) for p in owned]
    fanouts = list(config.model.fanouts)
    tasks = config.tasks
    links = {"link_pairs": config.link_pairs, "negatives": config.link_negatives}
    train = [NodeMinibatches(p, fanouts, config.batch_size, "train", seed=config.seed * 1000 + k, tasks=tasks, **links)
             for k, p in zip(owned, parts)]
    # Evaluation negatives are drawn from a fixed seed: every epoch ranks against the same ones.
    links["negatives"] = config.link_eval_negatives
    val = [NodeMinibatches(p, fanouts, config.batch_size, "val", seed=k, shuffle=False, tasks=tasks, **links)
           for k, p in zip(owned, parts)]
    test = [NodeMinibatches(p, fanouts, config.batch_size, "test", seed=k, shuffle=False, tasks=tasks, **links)
            for k, p in zip(owned, parts)]
    # Sampling processes are opt-in: on an H100 4 of them gave 42.8k seeds/s against 57.9k for the
    # in-process sampling thread (benchmarks/README.md): a minibatch's ~30 tensors cost more to ship.
    # With none, sampling runs in this process: ahead in a thread on CUDA, in line on the CPU (to_model).
    stream = MinibatchStream(train, workers=config.sampler_workers or 0, pin_memory=device.type == "cuda")
    model = build_model(parts[0], encoder_config(config), config.balancing, tasks, config.task_weights).to(device)
    core = model
    # [1] DDP; a batch may lack a node type, so some input projections go unused in a step.
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    optimizer = make_optimizer(core.parameters(), config.optim.lr, config.optim.weight_decay, device)
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs) if config.optim.schedule == "cosine" else None)
    start_epoch, best, best_state, stale = 0, None, None, 0
    checkpoint = ray.train.get_checkpoint()  # [3] resume after a failure, or with --resume
    if checkpoint is None and config.resume_from:
        checkpoint = Checkpoint.from_directory(config.resume_from)
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=False)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if schedule is not None and state.get("schedule"):
            schedule.load_state_dict(state["schedule"])
        start_epoch, best, best_state, stale = state["epoch"] + 1, state["best"], state["best_state"], state["stale"]
        torch.set_rng_state(state["rng"])
    if rank == 0:
        _truncate_history(Path(config.out) / METRICS_FILE, start_epoch)  # epochs after the checkpoint run again
    for epoch in range(start_epoch, config.epochs):
        steps = torch.tensor([sum(len(b) for b in train)], dtype=torch.long)
        dist.all_reduce(steps, op=dist.ReduceOp.MAX)
        model.train()
        started, seeds, sums = time.perf_counter(), 0, {}
        bar = tqdm(total=int(steps), desc=f"epoch {epoch}", unit="step", mininterval=2.0, file=sys.stderr,
                   disable=not (config.progress and rank == 0))
        for batch in to_model(stream.epoch(int(steps)), device):
            bar.update()
            losses = train_step(model, batch, optimizer)
            seeds += batch.num_seeds
            for name, loss in losses.items():  # summed on the device: no per-step wait for the GPU
                sums[name] = sums.get(name, 0.0) + loss.detach()
        bar.close()
        if schedule is not None:
            schedule.step()
        totals = torch.tensor([seeds, *(float(sums.get(n, 0.0)) for n in core.specs)], dtype=torch.float64)
        dist.all_reduce(totals)
        epoch_time = time.perf_counter() - started
        mean_losses = {n: float(totals[i + 1]) / (world * max(int(steps), 1)) for i, n in enumerate(core.specs)}
        core.balancer.end_epoch(mean_losses)
        record = {"epoch": epoch, "train_seeds": int(totals[0]), "epoch_time_s": round(epoch_time, 3),
                  "seeds_per_s": round(float(totals[0]) / epoch_time, 1), "steps": int(steps),
                  "ddp_param_spread": _param_spread(core, world),
                  **{f"loss/{n}": v for n, v in mean_losses.items()},
                  **{f"weight/{n}": w for n, w in core.balancer.effective_weights().items()}}
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            metrics = _evaluate(core, val, device)
            record.update(_flat("val/", metrics))
            score = _score(config, metrics)
            if best is None or score > best[0]:  # best = (score, epoch)
                best, best_state, stale = (score, epoch), {k: v.detach().clone() for k, v in core.state_dict().items()}, 0
            else:
                stale += 1
            record["best_epoch"] = best[1]
        stop = config.early_stopping is not None and stale >= config.early_stopping.patience
        _report(record, core, optimizer, schedule, epoch, best, best_state, stale, rank, Path(config.out))  # [2]
        if stop:
            break
    if best_state is not None:
        core.load_state_dict(best_state)
    final = _evaluate(core, test, device)
    if rank == 0:
        _write_run_outputs(config, final, core, best[1] if best else None)


def _param_spread(core, world: int) -> float:
    """Largest difference between workers' parameter checksums: 0 while DDP keeps replicas identical."""
    checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in core.parameters())], dtype=torch.float64)
    gathered = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(gathered, checksum)
    values = torch.cat(gathered)
    return float(values.max() - values.min())


def _evaluate(core, batches: list[NodeMinibatches], device) -> dict:
    """Exact metrics over every worker's partitions: predictions of all of them gathered per task."""
    return evaluate(core, itertools.chain.from_iterable(batches), device, gather=torch_distributed_gather)


def _score(config: TrainConfig, metrics: dict) -> float:
    """Higher is better. Without an early-stopping metric: minus the summed validation loss of every
    task (regression on standardised targets, so tasks weigh alike whatever their units)."""
    if config.early_stopping is None:
        losses = [m["loss"] for m in metrics.values() if not math.isnan(m.get("loss", math.nan))]
        return -sum(losses) if losses else -math.inf
    task, _, name = config.early_stopping.metric.partition("/")
    value = metrics.get(task, {}).get(name, math.nan)
    if math.isnan(value):
        return -math.inf
    return value if config.early_stopping.mode == "max" else -value


def _truncate_history(path: Path, start_epoch: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] < start_epoch]
    path.write_text("".join(line + "\n" for line in kept))


def _report(record, core, optimizer, schedule, epoch, best, best_state, stale, rank, out: Path) -> None:
    if rank != 0:
        ray.train.report(record)
        return
    with (out / METRICS_FILE).open("a") as f:
        f.write(json.dumps(record) + "\n")
    with tempfile.TemporaryDirectory() as directory:
        torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict() if schedule is not None else None, "epoch": epoch, "best": best,
                    "best_state": best_state, "stale": stale, "rng": torch.get_rng_state()}, Path(directory) / CHECKPOINT_FILE)
        ray.train.report(record, checkpoint=Checkpoint.from_directory(directory))


def _write_run_outputs(config: TrainConfig, test_metrics: dict, core, best_epoch: int | None) -> None:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2))
    rows = ["| task | metric | value |", "|---|---|---|"]
    for task, values in test_metrics.items():
        rows += [f"| {task} | {name} | {value:.4f} |" for name, value in values.items() if name != "count"]
    if best_epoch is not None:
        rows += ["", f"Test split, with the model of epoch {best_epoch} "
                     f"({config.early_stopping.metric if config.early_stopping else 'lowest summed validation loss'})."]
    (out / "test_metrics.md").write_text("\n".join(rows) + "\n")
    torch.save(core.state_dict(), out / "best_model.pt")


def latest_checkpoint(out: Path) -> Path | None:
    """The newest Ray Train checkpoint folder of the run at ``out`` (holding ``state.pt``), if any."""
    found = [(torch.load(p, map_location="cpu", weights_only=False)["epoch"], p.parent)
             for p in (out / "ray").glob(f"**/checkpoint_*/{CHECKPOINT_FILE}")]
    return max(found, key=lambda item: item[0])[1] if found else None


def fit(config: TrainConfig, *, address: str | None = None, overwrite: bool = False, resume: bool = False) -> dict:
    """Validate against the partitions, run Ray Train, collect metrics.jsonl; returns the final test metrics.

    ``resume`` continues the run at ``config.out`` from its newest checkpoint (model, optimiser,
    schedule, balancer, epoch, best model so far, RNG) up to ``config.epochs``.
    """
    check_against_partitions(config)
    out = Path(config.out).absolute()
    if resume and overwrite:
        raise GravitiError("--resume continues a run and --overwrite replaces it: pass one of them")
    if resume:
        checkpoint = latest_checkpoint(out)
        if checkpoint is None:
            raise GravitiError(f"--resume: {out} has no checkpoint to continue from (no {CHECKPOINT_FILE} under {out / 'ray'})")
        config = config.model_copy(update={"resume_from": str(checkpoint)})
    elif (out / METRICS_FILE).exists() and not overwrite:
        raise GravitiError(f"out: {out} already holds a run (metrics.jsonl); choose another out, pass --overwrite "
                           "to replace it or --resume to continue it")
    elif overwrite:
        import shutil

        shutil.rmtree(out / "ray", ignore_errors=True)  # an old run's checkpoints must not be restored into a new one
    out.mkdir(parents=True, exist_ok=True)
    config = config.model_copy(update={"out": str(out), "partitions": str(Path(config.partitions).absolute()),
                                       "progress": config.progress or sys.stderr.isatty()})
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 2) // config.num_workers)
    with ray_session(address, num_threads=threads):
        trainer = TorchTrainer(  # [4]
            train_loop_per_worker, train_loop_config=config.model_dump(mode="json"),
            scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.device == "cuda",
                                         resources_per_worker={"CPU": 1}),
            run_config=RunConfig(storage_path=str(out / "ray"), name="train",
                                 # every epoch checkpoints; without a limit a long run fills the disk
                                 checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
                                 failure_config=FailureConfig(max_failures=config.max_failures)),
        )
        if not resume:
            (out / METRICS_FILE).unlink(missing_ok=True)
        try:
            result = trainer.fit()
        except Exception as exc:  # Ray wraps worker failures; show the cause, not Ray's internals
            raise GravitiError(f"training failed: {exc}") from None
        if getattr(result, "error", None) is not None:
            raise GravitiError(f"training failed: {result.error}")
    plot_run(out)
    return json.loads((out / "test_metrics.json").read_text())


def main(argv: list[str] | None = None) -> int:
    """``python -m graviti_dist.train CONFIG [--set k=v ...]`` (what a Ray job runs)."""
    from graviti_dist.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
