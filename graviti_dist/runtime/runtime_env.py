"""The Ray ``runtime_env`` every process we start gets (no Ray or DGL import needed to build it)."""

from __future__ import annotations

THREADS_ENV = "GRAVITI_NUM_THREADS"
WORKER_SETUP_HOOK = "graviti_dist.runtime.worker_setup.setup_worker"


def ray_runtime_env(num_threads: int | None = None, extra_env: dict[str, str] | None = None) -> dict:
    """A Ray ``runtime_env`` whose workers import DGL through our entry point.

    ``num_threads`` is exported as ``GRAVITI_NUM_THREADS`` (and OMP/MKL thread
    counts) so every worker gets a deliberate share of the cores instead of
    Ray's default of one thread.
    """
    env_vars = dict(extra_env or {})
    if num_threads is not None:
        for name in (THREADS_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env_vars[name] = str(int(num_threads))
    runtime_env: dict = {"worker_process_setup_hook": WORKER_SETUP_HOOK}
    if env_vars:
        runtime_env["env_vars"] = env_vars
    return runtime_env
