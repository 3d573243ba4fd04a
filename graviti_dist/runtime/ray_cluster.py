"""Starting or joining Ray the same way everywhere.

Every Ray process we start gets the DGL entry point's worker setup hook and a
deliberate thread count (Ray's default ``OMP_NUM_THREADS=1`` starves DGL's
sampler and torch's CPU kernels).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Iterator

from graviti_dist.runtime.runtime_env import ray_runtime_env
from graviti_dist.errors import GravitiError

log = logging.getLogger(__name__)
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an unreachable ``host:port``: ray.init would retry for minutes."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise GravitiError(f"Ray address {address!r} is not of the form HOST:PORT, ray://HOST:PORT, 'auto' or 'local'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise GravitiError(f"could not reach Ray at {address!r}: {exc}; is the head node running (ray start --head)?") from None


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, num_threads: int | None = None,
                dashboard: bool = False) -> Iterator[None]:
    """Join the cluster at ``address`` or start a local Ray on loopback; shut down only what we started.

    If Ray is already initialised in this process (a test session, a Ray job
    driver), it is reused as is. ``dashboard`` starts a local Ray with its dashboard (on
    127.0.0.1), which serves Ray's State API: what Ray Train needs to free a stopped run's workers.
    """
    import ray  # here, not at module level: callers that run without Ray never pay for or need it

    if ray.is_initialized():
        yield
        return
    # Workers' output (Ray Train's per-epoch report dumps from every rank, actors' logs) reaches the
    # console only with --verbose (our logger at DEBUG): a demo printed ~24 KB of it. It stays in
    # Ray's log folder either way.
    verbose = logging.getLogger("graviti_dist").isEnabledFor(logging.DEBUG)
    kwargs: dict = {"runtime_env": ray_runtime_env(num_threads=num_threads), "log_to_driver": verbose,
                    "logging_level": logging.INFO if verbose else logging.ERROR}
    if address is None and os.environ.get("RAY_ADDRESS"):
        # Inside `ray job submit`: the job's runtime_env (launch/runtime_env.yaml) already names our
        # setup hook and thread counts, and Ray refuses a driver env that redefines them.
        address = os.environ["RAY_ADDRESS"]
        kwargs.pop("runtime_env")
    local = address in (None, "local")
    if local:
        kwargs.update(num_cpus=num_cpus or os.cpu_count(), include_dashboard=dashboard)
        if dashboard:
            kwargs["dashboard_host"] = "127.0.0.1"
    else:
        _check_reachable(address)
        _warn_if_open(address)
    try:
        with _loopback_only() if local else contextlib.nullcontext():
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise GravitiError(f"could not connect to Ray at {address!r}: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """A local Ray listening on 127.0.0.1 only. Ray maps a loopback ``node_ip_address`` to the
    machine's LAN address unless it believes clusters are off (its switch for macOS and Windows,
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``); with the switch off, GCS, raylet, workers and agents
    all bind 127.0.0.1 (tests/integration/test_ray_loopback.py lists their sockets). The switch is
    read at import and by the processes Ray spawns, so it is set for the start and then restored:
    a later session may join a real cluster."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_CLUSTER_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_SWITCH], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
        else:
            os.environ[_CLUSTER_SWITCH] = saved_env


def _warn_if_open(address: str) -> None:
    """Joining a cluster beyond this machine with token auth off: anyone who reaches it runs code."""
    host = address.split("://", 1)[-1].rpartition(":")[0]
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("RAY_AUTH_MODE=disabled on a Ray cluster at %s, beyond loopback: anyone who can reach its ports "
                    "can run code on it; start it with token auth (Ray's default) instead", address)


def run_tasks(function, calls: list[tuple]) -> list:
    """``function(*args)`` for each ``args`` in ``calls`` as Ray tasks on the current session, results in order."""
    import ray

    remote = ray.remote(function)
    return ray_get([remote.remote(*args) for args in calls])


def cluster_cpus() -> int:
    """CPUs of the Ray cluster this process is connected to (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def ray_get(refs):
    """ray.get that re-raises a task's GravitiError as itself (a clear message, not a remote traceback)."""
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, GravitiError):
            raise GravitiError(str(exc.cause)) from None
        raise
