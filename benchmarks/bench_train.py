"""Trainer throughput: graviti's trainer against a plain DGL loop and PyG, same model, same sampled work.

Systems, run in one process with rounds interleaved (drift on a shared machine hits all alike):
  ours      graviti's worker loop: DGL sampling (in line on the CPU, in a background thread on
            CUDA: ``to_model``), the plain-torch multi-task GAT (typed input projection, all node
            tasks' heads), Adam.
  dgl       a plain DGL loop as DGL's examples write it: ``dgl.dataloading.DataLoader`` with a
            ``NeighborSampler`` that prefetches features and labels, ``dgl.nn.GATConv`` x2.
  pyg       the same DGL loader feeding ``torch_geometric.nn.GATConv`` (PyG's NeighborLoader needs
            pyg-lib or torch-sparse, which have no builds for torch 2.13: compared at the model level).
All train a 2-layer GAT (4 heads x 64, fanout 10,10, batch 1024) with the same task heads and
losses from ``graviti_dist.model.heads``. The baselines read a precomputed (N, 64) feature matrix
(our input projection, frozen), so they skip the typed-feature gathering ours does every step.

Time breakdown (``ours`` only): an instrumented serial pass splits a step into sampling, feature
gathering, host-to-device copy, forward, backward, gradient all-reduce and optimizer step. The
all-reduce is timed by a DDP communication hook that waits for each bucket, which removes its
overlap with the backward pass: the breakdown's sum is therefore at least the pipelined step.

Scaling: W workers are W processes joined by gloo on 127.0.0.1 (what Ray Train sets up, without
Ray's start-up), each owning one partition of a W-part set with total threads split evenly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import statistics
import threading
import time
from pathlib import Path

import psutil
import torch
import torch.distributed as dist
from torch import nn

from benchmarks.bench_encoder import BATCH, FANOUTS, HEADS, HIDDEN, IN_DIM, DGLGAT, _pyg_model
from graviti_dist._dgl import dgl, set_threads
from graviti_dist.errors import GravitiError
from graviti_dist.model import EncoderConfig
from graviti_dist.model.heads import build_head
from graviti_dist.model.inputs import InputProjection
from graviti_dist.model.ops import kernels_for
from graviti_dist.sampling import MinibatchStream, NodeMinibatches, WorkerPartition, load_worker_partition, on_device, to_model
from graviti_dist.train.loop import build_model, make_optimizer, task_specs, train_step

assert IN_DIM == HIDDEN  # the baselines' first GATConv reads the (N, HIDDEN) projected features
PHASES = ("sample", "gather", "h2d", "forward", "backward", "allreduce", "optimizer")


@dataclasses.dataclass
class RoundSpec:
    """What one measured round is: ``steps`` optimizer steps of ``batch`` seeds."""

    steps: int
    batch: int = BATCH
    repeat: int = 5


# --- our trainer -------------------------------------------------------------------------------

def _encoder_config() -> EncoderConfig:
    # The comparison's model: no dropout, residual, relation embeddings or edge inputs (the baselines'
    # GATConv has none), so every system does the same arithmetic in the encoder.
    return EncoderConfig(hidden=HIDDEN, heads=HEADS, layers=len(FANOUTS), dropout=0.0, residual=False,
                         typed_relations=False, edge_inputs=False)


class OursTrainer:
    """graviti's per-worker loop over the partitions it owns, with an optional DDP wrapper."""

    def __init__(self, parts: list[WorkerPartition], device: torch.device, batch: int, seed: int = 0, ddp: bool = False,
                 sampler_workers: int = 0):
        torch.manual_seed(seed)
        self.device = device
        node_tasks = [s.name for s in task_specs(parts[0]) if s.type != "link"]  # the baselines' tasks
        self.loaders = [NodeMinibatches(p, list(FANOUTS), batch, "train", seed=seed + i, tasks=node_tasks)
                        for i, p in enumerate(parts)]
        self.stream = MinibatchStream(self.loaders, workers=sampler_workers, pin_memory=device.type == "cuda")
        self.core = build_model(parts[0], _encoder_config(), tasks=node_tasks).to(device)
        self.model = self.core
        if ddp:  # as graviti train does (train/trainer.py): every parameter in the loss, no unused-parameter search
            self.core.every_parameter_in_loss = True
            self.model = nn.parallel.DistributedDataParallel(self.core, find_unused_parameters=False)
        self.optimizer = make_optimizer(self.core.parameters(), 1e-3, device=device)
        self.allreduce_s = 0.0
        self._hooked = False

    def run(self, steps: int) -> tuple[int, int]:
        """The real training loop for ``steps`` steps: (seeds, sampled edges)."""
        self.model.train()
        seeds = edges = 0
        for batch in to_model(self.stream.epoch(steps), self.device):
            train_step(self.model, batch, self.optimizer)
            seeds += batch.num_seeds
            edges += sum(b.num_edges for b in batch.blocks)
        _sync(self.device)
        return seeds, edges

    def run_instrumented(self, steps: int) -> dict[str, float]:
        """``steps`` serial steps with each phase timed (seconds summed over the steps)."""
        self.model.train()
        times = dict.fromkeys(PHASES, 0.0)
        if isinstance(self.model, nn.parallel.DistributedDataParallel) and not self._hooked:
            self.model.register_comm_hook(self, _timed_allreduce)  # DDP takes one hook, for good
            self._hooked = True
        for _ in range(steps):
            seeds, _ = self.stream.next_key(0)
            loader = self.loaders[0]
            with _phase(times, "sample", self.device):
                input_nodes, blocks = loader.sample(seeds)
            with _phase(times, "gather", self.device):
                batch = loader.gather(seeds, input_nodes, blocks)
            with _phase(times, "h2d", self.device):
                batch = next(on_device([batch], self.device))
            with _phase(times, "forward", self.device):
                total, _, _ = self.model(batch, with_loss=True)
            self.optimizer.zero_grad(set_to_none=True)
            self.allreduce_s = 0.0
            with _phase(times, "backward", self.device):
                total.backward()
            times["backward"] -= self.allreduce_s
            times["allreduce"] += self.allreduce_s
            with _phase(times, "optimizer", self.device):
                self.optimizer.step()
        return times


def _timed_allreduce(state: OursTrainer, bucket):
    start = time.perf_counter()
    tensor = bucket.buffer()
    tensor.div_(dist.get_world_size())
    dist.all_reduce(tensor)  # waits: the time is the all-reduce's own, overlap removed
    state.allreduce_s += time.perf_counter() - start
    future = torch.futures.Future()
    future.set_result(tensor)
    return future


def _take(iterator, n: int):
    for _ in range(n):
        yield next(iterator)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def _phase(times: dict, name: str, device: torch.device):
    _sync(device)
    start = time.perf_counter()
    yield
    _sync(device)
    times[name] += time.perf_counter() - start


# --- baselines ------------------------------------------------------------------------------------

class _Heads(nn.Module):
    """Our task heads and masked losses on top of any encoder's (S, 64) output."""

    def __init__(self, part: WorkerPartition):
        super().__init__()
        self.specs = [s for s in task_specs(part) if s.type != "link"]
        self.heads = nn.ModuleDict({s.name: build_head(s, HIDDEN) for s in self.specs})

    def loss(self, emb: torch.Tensor, labels: dict) -> torch.Tensor:
        return sum(self.heads[s.name].loss(self.heads[s.name](emb), *labels[s.name]) for s in self.specs)


class BaselineLoop:
    """DGL's example-style loop; ``kind`` picks DGL's or PyG's GATConv on the same sampled blocks."""

    def __init__(self, part: WorkerPartition, kind: str, device: torch.device, batch: int, seed: int = 0):
        torch.manual_seed(seed)
        self.kind, self.device = kind, device
        node_tasks = [s.name for s in task_specs(part) if s.type != "link"]
        loader_data = NodeMinibatches(part, list(FANOUTS), batch, "train", seed=seed, tasks=node_tasks)
        graph = dgl.graph(part.graph.edges(), num_nodes=part.graph.num_nodes())
        all_nodes = torch.arange(graph.num_nodes())
        with torch.no_grad():  # the frozen input projection: the baselines get dense (N, 64) features
            graph.ndata["feat"] = InputProjection(part.inputs, HIDDEN)(loader_data.features(all_nodes))
        self.heads = _Heads(part)
        for spec in self.heads.specs:
            target, mask = loader_data.gather(all_nodes, all_nodes, []).labels[spec.name]
            graph.ndata[f"y_{spec.name}"], graph.ndata[f"m_{spec.name}"] = target, mask
        label_keys = [f"{p}_{s.name}" for s in self.heads.specs for p in ("y", "m")]
        sampler = dgl.dataloading.NeighborSampler(list(FANOUTS), prefetch_node_feats=["feat"], prefetch_labels=label_keys)
        self.loader = dgl.dataloading.DataLoader(graph, loader_data.seeds, sampler, batch_size=batch, shuffle=True,
                                                 drop_last=False, num_workers=0)
        self.encoder = DGLGAT() if kind == "dgl" else _pyg_model()  # the encoder benchmark's models, in_dim = HIDDEN
        self.model = nn.ModuleDict({"encoder": self.encoder, "heads": self.heads}).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=device.type == "cuda")
        self._batches = self._cycle()

    def _cycle(self):
        while True:
            yield from self.loader

    def run(self, steps: int) -> tuple[int, int]:
        self.model.train()
        seeds = edges = 0
        for input_nodes, output_nodes, blocks in _take(self._batches, steps):
            x = blocks[0].srcdata["feat"].to(self.device)
            labels = {s.name: (blocks[-1].dstdata[f"y_{s.name}"].to(self.device), blocks[-1].dstdata[f"m_{s.name}"].to(self.device))
                      for s in self.heads.specs}
            edges += sum(b.num_edges() for b in blocks)
            if self.kind == "pyg":
                blocks = [(torch.stack(b.edges()).to(self.device), (b.num_src_nodes(), b.num_dst_nodes())) for b in blocks]
            loss = self.heads.loss(self.encoder(blocks, x), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            seeds += len(output_nodes)
        _sync(self.device)
        return seeds, edges


# --- measuring ----------------------------------------------------------------------------------

class PeakRSS:
    """Highest RSS of this process while the context runs (sampled every 10 ms)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        process = psutil.Process()
        self.peak = process.memory_info().rss

        def watch():
            while not self._stop.wait(0.01):
                self.peak = max(self.peak, process.memory_info().rss)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure(systems: dict, rounds: RoundSpec, device: torch.device) -> dict:
    """Seeds/s and edges/s per system over ``rounds.repeat`` interleaved rounds after one warm-up round."""
    samples = {name: [] for name in systems}
    peaks = dict.fromkeys(systems, 0)
    gpu_peaks = dict.fromkeys(systems, 0)
    for r in range(rounds.repeat + 1):
        for name, system in systems.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with PeakRSS() as rss:
                start = time.perf_counter()
                seeds, edges = system.run(rounds.steps)
                elapsed = time.perf_counter() - start
            peaks[name] = max(peaks[name], rss.peak)
            if device.type == "cuda":
                gpu_peaks[name] = max(gpu_peaks[name], torch.cuda.max_memory_allocated())
            if r:
                samples[name].append((seeds / elapsed, edges / elapsed))
    out = {}
    for name, values in samples.items():
        seeds_per_s = [v[0] for v in values]
        out[name] = {"seeds_per_s": round(statistics.median(seeds_per_s), 1),
                     "spread": [round(min(seeds_per_s), 1), round(max(seeds_per_s), 1)],
                     "edges_per_s": round(statistics.median(v[1] for v in values)),
                     "peak_rss_gb": round(peaks[name] / 2**30, 3)}
        if device.type == "cuda":
            out[name]["gpu_peak_gb"] = round(gpu_peaks[name] / 2**30, 3)
    for name in out:
        if "ours" not in out:
            out[name]["ours_speedup"] = None
            continue
        # Per round, ours and the system ran back to back: the ratio within a round cancels the
        # shared machine's drift, which moves whole rounds by 20% here. Median of those ratios.
        paired = [a[0] / b[0] for a, b in zip(samples["ours"], samples[name])]
        out[name]["ours_speedup"] = round(statistics.median(paired), 2)
        out[name]["ours_speedup_spread"] = [round(min(paired), 2), round(max(paired), 2)]
        out[name]["ours_speedup_of_medians"] = round(out["ours"]["seeds_per_s"] / out[name]["seeds_per_s"], 2)
    return out


def breakdown(trainer: OursTrainer, rounds: RoundSpec) -> dict[str, float]:
    """Milliseconds per step in each phase, median over rounds (one warm-up round)."""
    per_round = [trainer.run_instrumented(rounds.steps) for _ in range(rounds.repeat + 1)][1:]
    return {phase: round(statistics.median(t[phase] for t in per_round) * 1e3 / rounds.steps, 2) for phase in PHASES}


def single_worker(part_dir: Path, device: torch.device, rounds: RoundSpec, threads: int, systems: list[str],
                  sampler_workers: int = 0) -> dict:
    """Every system on the whole graph (a 1-part set) in this process, plus ours' breakdown."""
    set_threads(threads)
    part = load_worker_partition(part_dir, 0, edge_inputs=False)  # the comparison model reads none
    runners = {"ours": OursTrainer([part], device, rounds.batch, sampler_workers=sampler_workers)}
    notes = []
    if "dgl" in systems:
        if device.type == "cuda":
            notes.append("dgl: skipped on CUDA (DGL's PyPI build has no CUDA kernels)")
        else:
            runners["dgl"] = BaselineLoop(part, "dgl", device, rounds.batch)
    if "pyg" in systems:
        try:
            runners["pyg"] = BaselineLoop(part, "pyg", device, rounds.batch)
        except ImportError:
            notes.append("pyg: torch_geometric is not installed (pip install -e '.[bench]')")
    results = measure(runners, rounds, device)
    return {"systems": results, "breakdown_ms": breakdown(runners["ours"], rounds), "notes": notes,
            "train_seeds": int(runners["ours"].loaders[0].seeds.numel()), "kernels": kernels_for(device)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, part_dir: str, rounds: RoundSpec, threads: int, out: str) -> None:
    set_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        trainer = OursTrainer([load_worker_partition(part_dir, rank, edge_inputs=False)], torch.device("cpu"), rounds.batch, seed=rank, ddp=True)
        rates = []
        for r in range(rounds.repeat + 1):
            dist.barrier()
            start = time.perf_counter()
            seeds, _ = trainer.run(rounds.steps)
            dist.barrier()
            total = torch.tensor([seeds], dtype=torch.float64)
            dist.all_reduce(total)
            if r:
                rates.append(float(total) / (time.perf_counter() - start))
        phases = breakdown(trainer, rounds)
        if rank == 0:
            Path(out).write_text(json.dumps({"rates": rates, "breakdown_ms": phases}))
    finally:
        dist.destroy_process_group()


def multi_worker(part_dir: Path, world: int, rounds: RoundSpec, total_threads: int) -> dict:
    """Ours with ``world`` gloo workers on this machine (CPU), each owning one partition."""
    import tempfile

    import torch.multiprocessing as mp

    threads = max(1, total_threads // world)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        mp.spawn(_ddp_worker, args=(world, _free_port(), str(part_dir), rounds, threads, str(out)), nprocs=world, join=True)
        result = json.loads(out.read_text())
    rates = result["rates"]
    return {"seeds_per_s": round(statistics.median(rates), 1), "spread": [round(min(rates), 1), round(max(rates), 1)],
            "threads_per_worker": threads, "breakdown_ms": result["breakdown_ms"]}


def check_cuda(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GravitiError("--device cuda: torch sees no CUDA device on this machine "
                           f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); run with --device cpu")


def os_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
