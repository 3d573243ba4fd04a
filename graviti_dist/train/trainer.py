"""``graviti train``: neighbour-sampled multi-task training on Ray Train workers with DDP.

Worker ``i`` of ``W`` owns partitions i, i+W, ...; every worker runs the same
number of steps per epoch (agreed with an all-reduce, shorter workers cycle
their batches) so uneven partitions cannot hang DDP. Metrics are exact across
workers (predictions gathered). Rank 0 writes the run directory (``run_dir.py``).

Marked Ray touchpoints: [1] prepare the model for DDP, [2] report metrics and
checkpoints, [3] restore from a checkpoint, [4] the trainer.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from tqdm import tqdm

from graviti_dist._dgl import set_threads
from graviti_dist.errors import FieldError, GravitiError
from graviti_dist.model import MultiTaskModel
from graviti_dist.partition import PartitionSet, read_manifest
from graviti_dist.runtime.output import check_output, publish, staging_dir
from graviti_dist.runtime.ray_cluster import ray_session
from graviti_dist.sampling import (MinibatchStream, NodeMinibatches, NodeRanges, RemoteMinibatches, connect_stores,
                                   load_shared, load_worker_partition, start_stores, store_nodes, stores_elsewhere)
from graviti_dist.train.averaging import WeightAverage
from graviti_dist.train.console import EpochPrinter
from graviti_dist.train.config import (TrainConfig, check_against_partitions, encoder_config, resume_conflicts,
                                       sampling_mode)
from graviti_dist.train.loop import EpochTotals, build_model, check_finite_losses, evaluate, make_optimizer, train_epoch
from graviti_dist.train.metrics import SELECTION_METRIC, torch_distributed_gather
from graviti_dist.train.plots import plot_run
from graviti_dist.train.rendezvous import NodeAddressTorchConfig
from graviti_dist.train.tracking import RunTracker, check_tracking
from graviti_dist.train.run_dir import (CHECKPOINT, RAY_RUN_NAME, RunDir, RunLock, Selection, TaskChoice, TrainingState,
                                        driver_holds_lock, lock_path)

log = logging.getLogger(__name__)


def _flat(prefix: str, nested: dict) -> dict:
    return {f"{prefix}{task}/{name}": value for task, values in nested.items() for name, value in values.items()}


@dataclass
class _WorkerData:
    """A worker's partitions as train/val/test minibatches (and, sampling remotely, the store actors
    it serves, which live as long as these handles)."""

    train: list[NodeMinibatches]
    val: list[NodeMinibatches]
    test: list[NodeMinibatches]
    remote: bool = False
    stores: list = field(default_factory=list)
    store_nodes: dict[int, str] = field(default_factory=dict)  # partition -> Ray node of the store this worker serves
    shared: list = field(default_factory=list)  # object refs of the partitions' shared arrays (owned here, kept alive)
    ahead: bool = False  # sample the next minibatches in a thread (remote sampling with stores on other nodes)

    def requests(self) -> tuple[int, float]:
        """Store requests this worker's training batches have sent to other partitions so far, and
        the seconds spent waiting for their answers."""
        return sum(getattr(b, "requests", 0) for b in self.train), sum(getattr(b, "wait_s", 0.0) for b in self.train)


def _worker_data(config: TrainConfig, rank: int, world: int) -> tuple[list, _WorkerData]:
    manifest = read_manifest(config.partitions)
    owned = list(range(rank, manifest.num_parts, world))
    fanouts, tasks = list(config.model.fanouts), config.tasks
    remote = sampling_mode(config, manifest) == "remote"
    parts, shared, edge_inputs = [], [], config.model.edge_inputs
    for p in owned:
        if remote:  # this worker and the store serving the partition read one copy in Ray's object store
            ref, part = load_shared(config.partitions, p, edge_inputs)
            shared.append(ref)
        else:
            part = load_worker_partition(config.partitions, p, edge_inputs=edge_inputs)
        parts.append(part)
    served, nodes, batches, ahead = [], {}, partial(NodeMinibatches), False
    if remote:
        # Every worker serves its own partitions, then finds everyone's by name.
        served = start_stores(config.partitions, owned, config.run_id, shared, edge_inputs)
        nodes = store_nodes(served, owned)
        dist.barrier()
        ranges = NodeRanges.of(PartitionSet(config.partitions))
        stores = connect_stores(manifest.num_parts, config.run_id)
        batches = partial(RemoteMinibatches, stores=stores, ranges=ranges)
        # Sampling ahead in a thread overlaps waiting for stores on other machines; when every store
        # shares this node's cores the thread only competes with the model (2 workers on 2 cores,
        # synthetic-1m 1-hop: 13.3-14.0k seeds/s in line, 12.4-12.8k ahead).
        ahead = stores_elsewhere(stores)

    def split(name: str, negatives: int, seed_of, shuffle: bool) -> list[NodeMinibatches]:
        return [batches(p, fanouts=fanouts, batch_size=config.batch_size, split=name, seed=seed_of(k), shuffle=shuffle,
                        tasks=tasks, link_pairs=config.link_pairs, negatives=negatives) for k, p in zip(owned, parts)]

    # Evaluation negatives are drawn from a fixed seed: every epoch ranks against the same ones.
    return parts, _WorkerData(train=split("train", config.link_negatives, lambda k: config.seed * 1000 + k, True),
                              val=split("val", config.link_eval_negatives, lambda k: k, False),
                              test=split("test", config.link_eval_negatives, lambda k: k, False),
                              remote=remote, stores=served, store_nodes=nodes, shared=shared, ahead=ahead)


def train_loop_per_worker(config_dict: dict) -> None:
    """Runs in each Ray Train worker; ``config_dict`` is a TrainConfig as a plain dict."""
    config = TrainConfig.model_validate(config_dict)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    set_threads(config.threads_per_worker or max(1, (os.cpu_count() or 2) // world))
    torch.manual_seed(config.seed)
    device = ray.train.torch.get_device() if config.device == "cuda" else torch.device("cpu")
    parts, data = _worker_data(config, rank, world)
    # Sampling processes are opt-in: on an H100 4 of them gave 42.8k seeds/s against 57.9k for the
    # in-process sampling thread (benchmarks/README.md): a minibatch's ~30 tensors cost more to ship.
    # With none, sampling runs in this process: ahead in a thread on CUDA, in line on the CPU (to_model).
    stream = MinibatchStream(data.train, workers=config.sampler_workers or 0, pin_memory=device.type == "cuda")
    core = build_model(parts[0], encoder_config(config), config.balancing, config.tasks, config.task_weights,
                       config.model.head_hidden, config.model.task_groups, config.uncertainty_max_weight).to(device)
    # [1] DDP; every parameter joins the loss, so DDP need not search the graph for unused ones.
    core.every_parameter_in_loss = True
    model = ray.train.torch.prepare_model(core, parallel_strategy_kwargs={"find_unused_parameters": False})
    optimizer = make_optimizer(core.parameters(), config.optim.lr, config.optim.weight_decay, device)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs) if config.optim.schedule == "cosine" else None
    state = _restore(config, core, optimizer, schedule)  # [3]
    steps = torch.tensor([sum(len(b) for b in data.train)], dtype=torch.long)
    dist.all_reduce(steps, op=dist.ReduceOp.MAX)  # every worker takes as many steps as the busiest
    average = _weight_average(config, core, state, int(steps))
    # Per-task weight files named by the checkpoints still on disk (Ray Train keeps the newest
    # keep_checkpoints): a resume may start from any of them, so pruning keeps what each names.
    named = deque([{epoch for _, epoch in state.task_best.values()}], maxlen=config.keep_checkpoints)
    run = RunDir(config.build_dir or config.out)
    if rank == 0:
        run.keep_records_before(state.epoch)  # epochs after the checkpoint run again
    for epoch in range(state.epoch, config.epochs):
        bar = tqdm(total=int(steps), desc=f"epoch {epoch}", unit="step", mininterval=2.0, file=sys.stderr,
                   disable=not (config.progress and rank == 0))
        started, requests = time.perf_counter(), data.requests()
        totals = train_epoch(model, stream.epoch(int(steps)), optimizer, device, on_step=_after_step(bar, average),
                             ahead=data.ahead)
        epoch_time = time.perf_counter() - started
        bar.close()
        if schedule is not None:
            schedule.step()
        record = _epoch_record(core, totals, int(steps), epoch, epoch_time, world)
        if data.remote:
            record.update(_remote_record(data, requests, int(steps), world, first=epoch == state.epoch))
        stop = False
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            evaluated = core if average is None else average.model
            val = _evaluate(evaluated, data.val, device)
            stop = _select(config, evaluated, val, state, epoch, record)
            if _select_tasks(core, val, state, epoch, record) and rank == 0:
                run.save_task_best(epoch, evaluated.state_dict())
        state.epoch, state.averaged = epoch, None if average is None else average.state_dict()
        _report(record, core, optimizer, schedule, state, rank, run, config, named)  # [2]
        if stop:
            break
    last = core if average is None else average.model
    summed = state.best_state or {k: v.detach().clone() for k, v in last.state_dict().items()}
    core.load_state_dict(summed)
    final = _evaluate(core, data.test, device)
    per_task = _test_per_task(core, data.test, device, state, run, rank, final)
    if rank == 0:
        _write_run_outputs(config, run, final, per_task, summed, state, {n: spec.type for n, spec in core.specs.items()})


def _weight_average(config: TrainConfig, core: MultiTaskModel, state: TrainingState, steps: int) -> WeightAverage | None:
    """The EMA of the weights that evaluation and selection use (``optim.average_epochs``), continued
    from the checkpoint's when it has one; None when averaging is off."""
    if not config.optim.average_epochs:
        return None
    average = WeightAverage(core, config.optim.average_epochs, steps)
    if state.averaged is not None:
        average.load_state_dict(state.averaged)
    return average


def _after_step(bar: tqdm, average: WeightAverage | None):
    """What runs after each optimiser step: the progress bar, and the weight average when there is one."""
    if average is None:
        return bar.update

    def after() -> None:
        average.update()
        bar.update()
    return after


def _restore(config: TrainConfig, core: MultiTaskModel, optimizer, schedule) -> TrainingState:
    """The state to start from: Ray Train's checkpoint after a failure, the one ``--resume`` names,
    or a fresh one (``epoch`` is the first epoch to run)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and config.resume_from:
        checkpoint = Checkpoint.from_directory(config.resume_from)
    if not checkpoint:
        return TrainingState(model={}, optimizer={}, schedule=None, epoch=0, best=None, best_state=None, stale=0,
                             rng=torch.get_rng_state())
    with checkpoint.as_directory() as directory:
        state = TrainingState.load(directory)
    core.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    if schedule is not None and state.schedule:
        schedule.load_state_dict(state.schedule)
    torch.set_rng_state(state.rng)
    state.epoch += 1
    return state


def _epoch_record(core: MultiTaskModel, totals: EpochTotals, steps: int, epoch: int, epoch_time: float, world: int) -> dict:
    """The epoch's record, summed over workers: seeds/s, mean losses, balancer weights, DDP replica spread."""
    summed = torch.tensor([totals.seeds, totals.steps - totals.empty_steps,
                           *(float(totals.loss_sums.get(n, 0.0)) for n in core.specs)], dtype=torch.float64)
    dist.all_reduce(summed)
    # per step that had seeds: a worker without training seeds takes empty steps of zero loss
    mean_losses = {n: float(summed[i + 2]) / max(float(summed[1]), 1.0) for i, n in enumerate(core.specs)}
    check_finite_losses(mean_losses, epoch)  # every worker sees the same sums: all stop together
    core.balancer.end_epoch(mean_losses)
    return {"epoch": epoch, "train_seeds": int(summed[0]), "epoch_time_s": round(epoch_time, 3),
            "seeds_per_s": round(float(summed[0]) / epoch_time, 1), "steps": steps,
            "ddp_param_spread": _param_spread(core, world),
            **{f"loss/{n}": v for n, v in mean_losses.items()},
            **{f"weight/{n}": w for n, w in core.balancer.effective_weights().items()}}


def _remote_record(data: _WorkerData, before: tuple[int, float], steps: int, world: int, first: bool) -> dict:
    """Remote sampling's share of the record: store requests and the wait for their answers per step
    per worker (with stores on other nodes sampling runs ahead in a thread and the wait overlaps the
    step; ``sampling_ahead`` says whether it did), and (first epoch of a run) which Ray node serves
    each partition's store and which node each rank ran on."""
    now = data.requests()
    sent = torch.tensor([now[0] - before[0], now[1] - before[1]], dtype=torch.float64)
    dist.all_reduce(sent)
    per_step = world * max(steps, 1)
    record = {"sampling": "remote", "sampling_ahead": data.ahead, "store_requests_per_step": round(float(sent[0]) / per_step, 2),
              "store_wait_ms_per_step": round(1e3 * float(sent[1]) / per_step, 2)}
    if first:
        gathered = [None] * world
        dist.all_gather_object(gathered, (ray.get_runtime_context().get_node_id(), data.store_nodes))
        record["worker_nodes"] = {str(rank): node for rank, (node, _) in enumerate(gathered)}
        record["store_nodes"] = {str(p): node for _, nodes in gathered for p, node in sorted(nodes.items())}
    return record


def _select(config: TrainConfig, core: MultiTaskModel, metrics: dict, state: TrainingState, epoch: int, record: dict) -> bool:
    """Keep the model if its validation score is the best so far; whether early stopping says stop."""
    record.update(_flat("val/", metrics))
    score = _score(config, metrics)
    record["val_score"] = score  # what graviti tune's scheduler compares trials on
    if state.best is None or score > state.best[0]:
        state.best, state.stale = (score, epoch), 0
        state.best_state = {k: v.detach().clone() for k, v in core.state_dict().items()}
    else:
        state.stale += 1
    record["best_epoch"] = state.best[1]
    return config.early_stopping is not None and state.stale >= config.early_stopping.patience


def _select_tasks(core: MultiTaskModel, metrics: dict, state: TrainingState, epoch: int, record: dict) -> list[str]:
    """Per-task selection: the node tasks whose headline validation metric (``SELECTION_METRIC``) is
    their best so far this epoch (ties keep the earlier epoch); records each task's best epoch."""
    improved = []
    for name, spec in core.specs.items():
        if spec.is_link:
            continue
        metric, mode = SELECTION_METRIC[spec.type]
        value = metrics.get(name, {}).get(metric, math.nan)
        if math.isnan(value):
            continue
        score = value if mode == "max" else -value
        if name not in state.task_best or score > state.task_best[name][0]:
            state.task_best[name] = (score, epoch)
            improved.append(name)
    record.update({f"best_epoch/{name}": best_epoch for name, (_, best_epoch) in state.task_best.items()})
    return improved


def _test_per_task(core: MultiTaskModel, batches, device, state: TrainingState, run: RunDir, rank: int,
                   summed_test: dict) -> dict:
    """Each node task's test metrics with the weights of its own best validation epoch. Rank 0 kept
    those weights on disk (one file per epoch, not a model per task in memory) and sends them to the
    other ranks, which may run on other machines; the evaluation is collective, as in training.
    A task that chose the summed model's epoch takes its metrics as they are: evaluation samples
    neighbourhoods, so a second pass over the same weights would differ by sampling noise."""
    tasks_of = defaultdict(list)
    for name, (_, epoch) in state.task_best.items():
        tasks_of[epoch].append(name)
    summed_epoch = state.best[1] if state.best else None
    metrics = {name: summed_test[name] for name in tasks_of.pop(summed_epoch, [])}
    for epoch, names in sorted(tasks_of.items()):
        box = [torch.load(run.task_best_path(epoch), map_location="cpu", weights_only=False) if rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        core.load_state_dict(box[0])
        result = _evaluate(core, batches, device)
        metrics.update({name: result[name] for name in names})
    return metrics


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


def _report(record: dict, core, optimizer, schedule, state: TrainingState, rank: int, run: RunDir,
            config: TrainConfig, named: deque) -> None:
    if rank != 0:
        ray.train.report(record)
        return
    if not driver_holds_lock(config.out, config.run_id):
        # A killed driver can leave its workers running (ray job stop, SIGKILL); they must not keep
        # writing into a run that a --resume may already be continuing.
        raise GravitiError(f"the graviti train driver of run {config.run_id} is gone (it no longer holds "
                           f"{lock_path(config.out)}); stopping")
    run.append_record(record)
    with tempfile.TemporaryDirectory() as directory:
        TrainingState(model=core.state_dict(), optimizer=optimizer.state_dict(),
                      schedule=schedule.state_dict() if schedule is not None else None, epoch=state.epoch,
                      best=state.best, best_state=state.best_state, stale=state.stale, rng=torch.get_rng_state(),
                      task_best=state.task_best, averaged=state.averaged).save(directory)
        ray.train.report(record, checkpoint=Checkpoint.from_directory(directory))
    # After the checkpoint that names them, and never a file an older kept checkpoint names: a resume
    # after a killed driver once started from the checkpoint before the newest and found its
    # per-task file pruned.
    named.append({epoch for _, epoch in state.task_best.values()})
    run.prune_task_bests(set().union(*named))


def _write_run_outputs(config: TrainConfig, run: RunDir, summed_test: dict, per_task_test: dict, summed_state: dict,
                       state: TrainingState, task_types: dict[str, str]) -> None:
    """best_model.pt (the summed selection), selection.json, then test_metrics.json (each task from
    its own selected epoch: what infer and serve answer by default) and the table of both. The
    selection comes after the model it sits beside: a resumed run that dies between the two
    leaves the old selection with its files, never a new one without its model."""
    choices = {}
    for name, (score, epoch) in state.task_best.items():
        metric, mode = SELECTION_METRIC[task_types[name]]
        choices[name] = TaskChoice(epoch=epoch, metric=metric, mode=mode, value=score if mode == "max" else -score)
    selected = {**summed_test, **per_task_test}
    summed_epoch = state.best[1] if state.best else None
    run.save_best_model(summed_state)
    run.write_selection(Selection(tasks=choices, summed_epoch=summed_epoch, summed_test=summed_test))
    run.write_test_metrics(selected, _test_table(config, run, selected, summed_test, choices, summed_epoch))
    run.prune_task_bests({c.epoch for c in choices.values()})


def _test_table(config: TrainConfig, run: RunDir, selected: dict, summed: dict, choices: dict, summed_epoch: int | None) -> str:
    summed_how = config.early_stopping.metric if config.early_stopping else "lowest summed validation loss"
    rows = ["| task | metric | per-task selection | summed selection |", "|---|---|---|---|"]
    for task, values in selected.items():
        rows += [f"| {task} | {name} | {value:.4f} | {summed.get(task, {}).get(name, float('nan')):.4f} |"
                 for name, value in values.items() if name != "count"]
    rows += ["", "Test split, epochs counted from 1. Per-task selection (what `graviti infer` and `graviti serve` answer "
             "by default): " + (", ".join(f"{t} epoch {c.epoch + 1} (best val {c.metric})" for t, c in choices.items())
                                or "none") + "; link tasks use the summed model."]
    if summed_epoch is not None:
        rows += [f"Summed selection (`--select summed`, {run.best_model_path.name}): epoch {summed_epoch + 1} ({summed_how})."]
    return "\n".join(rows) + "\n"


def fit(config: TrainConfig, *, address: str | None = None, overwrite: bool = False, resume: bool = False) -> dict:
    """Validate against the partitions, run Ray Train, collect metrics.jsonl; returns the final test metrics.

    ``resume`` continues the run at ``config.out`` from its newest checkpoint (model, optimiser,
    schedule, balancer, epoch, best model so far, RNG) up to ``config.epochs``. ``overwrite``
    builds the new run beside the old one, which it replaces only once it has finished. The run
    is locked for the driver's lifetime (a second training into it is refused).
    """
    manifest = check_against_partitions(config)
    check_tracking(config.tracking)
    run = RunDir(Path(config.out).absolute())
    mode = sampling_mode(config, manifest)
    if mode == "remote":
        log.info("sampling: remote, through the graph store (the model's %d layers reach past the set's %d-hop halo)",
                 len(config.model.fanouts), manifest.num_hops)
    config = config.model_copy(update={"sampling": mode, "run_id": config.run_id or uuid.uuid4().hex[:12]})
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 2) // config.num_workers)
    with RunLock(run.path, config.run_id):
        config = _prepare_run_dir(config, run, overwrite, resume)  # checks only: nothing written yet
        with ray_session(address, num_threads=threads):
            check_resources(config, ray.cluster_resources())
            _train_into(config, run)
    return run.read_test_metrics()


def _train_into(config: TrainConfig, run: RunDir) -> None:
    """Write the run's config where it is built, train, plot; publish an overwriting run when it
    has finished, or remove it (the run it would replace stays as it was)."""
    build = RunDir(config.build_dir or run.path)
    try:
        build.write_config(config)
        if not config.resume_from:
            build.clear_records()
            build.remove_checkpoints()  # an unfinished run's checkpoints must not be restored into this one
            build.remove_selection()  # nor its per-task weights offered with this run's best_model.pt
        metric = config.early_stopping.metric if config.early_stopping else None
        tracker = RunTracker(config)
        try:
            with EpochPrinter(build, config.epochs, metric, first_epoch=len(build.read_records()),
                              on_record=tracker.epoch):
                _run_trainer(config, build)
        except BaseException:
            tracker.finish(None, ok=False)
            raise
        tracker.finish(build.read_test_metrics(), ok=True)
        plot_run(build)
    except BaseException:
        if config.build_dir:
            shutil.rmtree(build.path, ignore_errors=True)
        raise
    if config.build_dir:
        publish(build.path, run.path)


def _run_trainer(config: TrainConfig, build: RunDir) -> None:
    trainer = TorchTrainer(  # [4]
        train_loop_per_worker, train_loop_config=config.model_dump(mode="json"),
        torch_config=NodeAddressTorchConfig(),  # DDP's store on the node address, not on every interface
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.device == "cuda",
                                     resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(build.ray_storage), name=RAY_RUN_NAME,
                             # every epoch checkpoints; without a limit a long run fills the disk
                             checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
                             failure_config=FailureConfig(max_failures=config.max_failures),
                             callbacks=_tune_callbacks()),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker failures; show the cause, not Ray's internals
        raise _training_failure(exc) from None
    if getattr(result, "error", None) is not None:
        raise _training_failure(result.error)


def _tune_callbacks() -> list:
    """Inside a ``graviti tune`` trial, Ray's callback that forwards each epoch's report to Tune."""
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    if not _in_tune_session():
        return []
    from ray.tune.integration.ray_train import TuneReportCallback

    return [TuneReportCallback()]


def check_resources(config: TrainConfig, cluster: dict[str, float]) -> None:
    """Refuse what the cluster cannot place: Ray Train would wait for it forever (device: cuda
    on a machine without a GPU, more workers than CPUs). Each worker takes 1 CPU (and 1 GPU on
    cuda); ``cluster`` is ``ray.cluster_resources()``. An autoscaling cluster that has not grown
    yet is refused too: start its nodes first."""
    wanted = {"CPU": config.num_workers, **({"GPU": config.num_workers} if config.device == "cuda" else {})}
    short = {name: (need, cluster.get(name, 0.0)) for name, need in wanted.items() if cluster.get(name, 0.0) < need}
    if not short:
        return
    have = "; ".join(f"{need} {name}s wanted (one per worker), the Ray cluster has {got:g}" for name, (need, got) in short.items())
    field = "device" if "GPU" in short else "num_workers"
    raise FieldError(field, f"cannot be placed: {have}. " + (
        "Use device: cpu, or a cluster with GPUs (--address)" if field == "device"
        else f"Use num_workers <= {int(cluster.get('CPU', 0))}, or a larger cluster (--address)"))


def _training_failure(exc: BaseException) -> GravitiError:
    """One line per distinct worker error (a GravitiError's own message, else the exception's
    type and text), not Ray's tracebacks: those stay in the workers' logs."""
    failures = getattr(exc, "worker_failures", None) or {-1: getattr(exc, "controller_failure", exc)}
    seen: dict[str, list[int]] = {}
    for rank, error in sorted(failures.items()):
        cause = getattr(error, "cause", None) or error
        text = str(cause) if isinstance(cause, GravitiError) else f"{type(cause).__name__}: {cause}"
        text = text.strip().splitlines()[-1] if "Traceback (most recent call last)" in text else text.strip()
        seen.setdefault(text, []).append(rank)
    lines = [text if ranks == [-1] else f"worker {', '.join(map(str, ranks))}: {text}" for text, ranks in seen.items()]
    return GravitiError("training failed: " + "; ".join(lines) + " (full tracebacks: --verbose, or the workers' Ray logs)")


def _prepare_run_dir(config: TrainConfig, run: RunDir, overwrite: bool, resume: bool) -> TrainConfig:
    """Check ``overwrite``/``resume`` against what ``run`` holds, without writing into it; returns
    the resolved config (``resume_from`` set when resuming, ``build_dir`` when overwriting)."""
    if resume and overwrite:
        raise FieldError("resume", "continues a run and overwrite replaces it: pass one of them")
    check_output(run.path, overwrite=True)  # parents, an interrupted replacement, dead builds
    config = config.model_copy(update={"out": str(run.path), "partitions": str(Path(config.partitions).absolute()),
                                       "progress": config.progress or sys.stderr.isatty(), "resume_from": None})
    if resume:
        checkpoint = run.latest_checkpoint()
        if checkpoint is None:
            raise GravitiError(f"resume: {run.path} has no checkpoint to continue from (no {CHECKPOINT} under {run.ray_storage})")
        conflicts = resume_conflicts(run.read_config(), config)
        if conflicts:
            raise GravitiError(f"resume: the checkpoint in {run.path} cannot continue with these settings: "
                               + "; ".join(conflicts) + " (keep them, or train into another out)")
        return config.model_copy(update={"resume_from": str(checkpoint)})
    if run.holds_run() and not overwrite:
        raise GravitiError(f"out: {run.path} already holds a run ({run.metrics_path.name}); choose another out, pass "
                           "overwrite to replace it or resume to continue it")
    if overwrite and run.path.exists() and any(run.path.iterdir()):
        return config.model_copy(update={"build_dir": str(staging_dir(run.path))})  # built beside, published when finished
    return config
