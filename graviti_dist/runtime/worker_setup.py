"""What every process we start runs first: thread counts and the DGL import fix-up, both cheap.

Ray runs ``worker_process_setup_hook`` in every worker before its first task. The hook
used to import torch and DGL there: 2.5 s of CPU per worker (5 s before the first task on
2 cores), paid even by workers that only read Parquet. Now it imports nothing heavy:

* thread counts come from ``GRAVITI_NUM_THREADS`` (exported as ``OMP_NUM_THREADS`` /
  ``MKL_NUM_THREADS``, which torch reads when it is first imported; applied directly
  if torch is already loaded);
* an import hook waits for the first ``import dgl`` in the process (our own, or pickle's
  when a task receives a DGL graph) and registers the GraphBolt stand-in just before it
  (see :mod:`graviti_dist._dgl`).

This module must stay importable without torch, DGL or Ray.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
import types

from graviti_dist.runtime.runtime_env import THREADS_ENV

log = logging.getLogger(__name__)

STAND_IN_DOC = "graviti-dist stand-in: GraphBolt's C++ library is not built for this torch."


def graphbolt_library_present() -> bool:
    """Whether the installed DGL has a GraphBolt library built for the installed torch."""
    import torch  # DGL imports it first thing anyway

    spec = importlib.util.find_spec("dgl")
    if spec is None or not spec.submodule_search_locations:
        return False
    version = torch.__version__.split("+", maxsplit=1)[0]
    suffix = "dylib" if sys.platform == "darwin" else "so"
    for root in spec.submodule_search_locations:
        if os.path.exists(os.path.join(root, "graphbolt", f"libgraphbolt_pytorch_{version}.{suffix}")):
            return True
    return False


def prepare_dgl_import() -> None:
    """Make the next ``import dgl`` work: the GraphBolt stand-in when the library is missing,
    and DGL's PyTorch backend (DGL reads ``DGLBACKEND`` at import; we support no other)."""
    os.environ.setdefault("DGLBACKEND", "pytorch")
    if "dgl" in sys.modules or "dgl.graphbolt" in sys.modules or graphbolt_library_present():
        return
    stand_in = types.ModuleType("dgl.graphbolt")
    stand_in.__doc__ = STAND_IN_DOC

    class FusedCSCSamplingGraph:  # dgl.distributed only uses it in isinstance checks
        pass

    stand_in.FusedCSCSamplingGraph = FusedCSCSamplingGraph
    sys.modules["dgl.graphbolt"] = stand_in
    log.debug("GraphBolt library missing for this torch: registered a stand-in dgl.graphbolt")


class _PrepareDGLOnImport(importlib.abc.MetaPathFinder):
    """Runs :func:`prepare_dgl_import` when ``dgl`` is first imported, then lets the normal
    finders import it (returning None): importing DGL from here would load it twice."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "dgl":
            return None
        sys.meta_path.remove(self)  # once only; and find_spec("dgl") below must not recurse
        prepare_dgl_import()
        return None


def install_dgl_import_hook() -> None:
    """Arrange for :func:`prepare_dgl_import` to run just before this process first imports DGL."""
    if "dgl" in sys.modules or any(isinstance(f, _PrepareDGLOnImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PrepareDGLOnImport())


def apply_thread_count(num_threads: int | None = None) -> int | None:
    """Set OpenMP/MKL (and torch's, when it is loaded) thread counts to ``num_threads``, or to
    ``GRAVITI_NUM_THREADS`` when not given; returns the count set, None when there was none."""
    if num_threads is None:
        value = os.environ.get(THREADS_ENV)
        if not value:
            return None
        num_threads = int(value)
    num_threads = max(1, int(num_threads))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(num_threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(num_threads)
    return num_threads


def setup_worker() -> None:
    """Ray ``worker_process_setup_hook``: thread counts now, the DGL fix-up at DGL's first import."""
    apply_thread_count()
    install_dgl_import_hook()
