"""From a worker's minibatches to the model: round-robin over its partitions, optional
sampling processes, and the move to the device (ahead in a thread on CUDA)."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator, TypeVar

import torch

from graviti_dist._dgl import dgl
from graviti_dist.model import MiniBatch
from graviti_dist.sampling.minibatches import NodeMinibatches

T = TypeVar("T")
_DONE = object()


class MinibatchStream:
    """``steps`` minibatches per epoch, round-robin over a worker's partitions (cycling the shorter
    ones), sampled in ``workers`` background processes, or in this process when ``workers`` is 0.

    Sampling processes take DGL sampling and feature gathering off the training process, whose
    Python thread is then free to launch GPU kernels. Measured on an H100 machine they cost more
    than they save at fanout 10,10 (each minibatch's ~30 tensors cross shared memory), so the
    default samples in the training process (:func:`to_model`).
    """

    def __init__(self, batches: list[NodeMinibatches], workers: int = 0, pin_memory: bool = False):
        self.batches, self.workers = batches, workers
        self._plans = [iter(()) for _ in batches]
        self._loader = None
        if workers > 0:
            self._keys = _EpochKeys()
            self._loader = torch.utils.data.DataLoader(
                _PlannedBatches(batches), sampler=self._keys, batch_size=None, num_workers=workers,
                pin_memory=pin_memory, persistent_workers=True, prefetch_factor=4,
                multiprocessing_context="spawn", worker_init_fn=_sampler_worker_init)

    def next_key(self, k: int) -> tuple[torch.Tensor, dict]:
        """The next (node seeds, link triples) of partition ``k``'s plan, starting a new pass when one ends."""
        try:
            return next(self._plans[k])
        except StopIteration:
            self._plans[k] = self.batches[k].plan()
            return next(self._plans[k])

    def epoch(self, steps: int) -> Iterator[MiniBatch]:
        """``steps`` minibatches over the partitions that hold training seeds. A worker whose
        partitions hold none still takes ``steps`` steps, each an empty minibatch (zero seeds, zero
        loss): every worker must join each step's gradient all-reduce, or DDP waits forever."""
        live = [k for k, batches in enumerate(self.batches) if len(batches)]
        if live:
            keys = [(k, *self.next_key(k)) for k in (live[i % len(live)] for i in range(steps))]
        else:
            keys = [(0, torch.empty(0, dtype=torch.long), {}) for _ in range(steps)]
        if self._loader is None:
            return (self.batches[k].batch(seeds, links) for k, seeds, links in keys)
        self._keys.keys = keys
        return iter(self._loader)


class _EpochKeys:
    """The DataLoader's sampler: this epoch's keys, set before each pass."""

    keys: list = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self):
        return len(self.keys)


class _PlannedBatches(torch.utils.data.Dataset):
    def __init__(self, batches: list[NodeMinibatches]):
        self.batches = batches

    def __getitem__(self, key) -> MiniBatch:
        k, seeds, links = key
        return self.batches[k].batch(seeds, links)


def _sampler_worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # one core per sampling process
    dgl.seed(torch.initial_seed() % 2**31 + worker_id)


def on_device(batches: Iterable[MiniBatch], device: torch.device | str) -> Iterator[MiniBatch]:
    """``batches`` moved to ``device``; for CUDA through pinned memory with an asynchronous copy.

    On CUDA :func:`to_model` runs it inside :func:`prefetch`'s thread, so the host-to-device
    copy leaves the training step's critical path; on the CPU the move is a no-op.
    """
    device = torch.device(device)
    for batch in batches:
        if device.type == "cuda":
            pinned = batch if batch.seed_type.is_pinned() else batch.pin_memory()  # DataLoader workers pin already
            yield pinned.to(device, non_blocking=True)
        else:
            yield batch.to(device)


def to_model(batches: Iterable[MiniBatch], device: torch.device | str, ahead: bool = False) -> Iterator[MiniBatch]:
    """``batches`` on ``device``, sampled ahead in a background thread only where that overlaps
    with the model: on CUDA, whose kernels leave the host's cores idle, or when ``ahead`` (remote
    sampling whose stores run on other machines: it mostly waits for them). On the CPU the model's OpenMP
    threads already hold every core the worker has; local sampling in a thread beside them only
    preempts them (measured on 2 cores: 12.0k seeds/s with the thread, 14.8k in line)."""
    moved = on_device(batches, device)
    return prefetch(moved) if ahead or torch.device(device).type == "cuda" else moved


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` while a background thread prepares up to ``depth`` of the next ones.

    DGL's sampler and torch's indexing release the GIL, so sampling the next
    batch overlaps with the model's step. An exception in the producer is
    raised here; leaving the loop early stops the producer.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            buffer.put(_Failure(exc))
            return
        buffer.put(_DONE)

    thread = threading.Thread(target=produce, name="graviti-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


@dataclass
class _Failure:
    exc: BaseException
