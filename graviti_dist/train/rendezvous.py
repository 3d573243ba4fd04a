"""DDP's rendezvous on the one address Ray knows rank 0's node by, not on every interface.

Ray Train's torch backend hands rank 0's node address and a free port to ``init_process_group``,
whose TCPStore then listens on ``::`` (all interfaces; torch has no bind-address setting). On a
machine where Ray itself listens only on 127.0.0.1 that store was the one socket of a training
run open to the network (tests/integration/test_demo.py watches every listener). Here rank 0
binds the socket itself, on the node address, and gives it to the store (``master_listen_fd``);
the other ranks connect to that address as before. Everything else is Ray's backend.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import ray
import torch.distributed as dist
from ray.train._internal.worker_group import WorkerGroup as V1WorkerGroup
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

_listener: socket.socket | None = None  # rank 0's bound socket: alive as long as the store that serves on it


def _bind_on_node_address() -> tuple[str, int]:
    global _listener
    address = ray.util.get_node_ip_address()
    listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((address, 0))
    listener.listen(1024)
    _listener = listener
    return address, listener.getsockname()[1]


def _join(backend: str, world_rank: int, world_size: int, address: str, port: int, timeout_s: int) -> None:
    timeout = timedelta(seconds=timeout_s)
    if backend == "nccl":  # as Ray's backend does: a timed-out NCCL collective fails instead of hanging
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    if world_rank == 0:
        store = dist.TCPStore(address, port, world_size, is_master=True, master_listen_fd=_listener.fileno(),
                              timeout=timeout, wait_for_workers=False)
    else:
        store = dist.TCPStore(address, port, world_size, is_master=False, timeout=timeout)
    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port))  # for libraries that read them
    dist.init_process_group(backend, store=store, rank=world_rank, world_size=world_size, timeout=timeout)


class _NodeAddressBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig) -> None:
        backend = backend_config.backend
        if backend is None:
            backend = "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"
        address, port = worker_group.execute_single(0, _bind_on_node_address)
        if not isinstance(worker_group, V1WorkerGroup):  # as Ray's backend: V1 sets them at training start
            worker_group.execute(_set_torch_distributed_env_vars)  # LOCAL_RANK, RANK, WORLD_SIZE, ...
        ray.get([worker_group.execute_single_async(rank, _join, backend=backend, world_rank=rank,
                                                   world_size=len(worker_group), address=address, port=port,
                                                   timeout_s=backend_config.timeout_s)
                 for rank in range(len(worker_group))])


@dataclass
class NodeAddressTorchConfig(TorchConfig):
    """Ray Train's ``TorchConfig`` whose rendezvous store listens only on rank 0's node address."""

    @property
    def backend_cls(self):
        return _NodeAddressBackend
