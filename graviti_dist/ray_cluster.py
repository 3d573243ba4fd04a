"""Starting or joining Ray the same way everywhere.

Every Ray process we start gets the DGL entry point's worker setup hook and a
deliberate thread count (Ray's default ``OMP_NUM_THREADS=1`` starves DGL's
sampler and torch's CPU kernels).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import ray

from graviti_dist.runtime_env import ray_runtime_env
from graviti_dist.errors import GravitiError


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, num_threads: int | None = None) -> Iterator[None]:
    """Join the cluster at ``address`` or start a local Ray; shut down only what we started.

    If Ray is already initialised in this process (a test session, a Ray job
    driver), it is reused as is.
    """
    if ray.is_initialized():
        yield
        return
    runtime_env = ray_runtime_env(num_threads=num_threads)
    kwargs: dict = {"runtime_env": runtime_env, "log_to_driver": True}
    if address is None:
        address = os.environ.get("RAY_ADDRESS")
    if address is None:
        kwargs.update(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise GravitiError(f"could not connect to Ray at {address!r}: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()
