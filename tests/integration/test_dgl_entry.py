"""The one DGL entry point works in a fresh process and inside Ray actors."""

import subprocess
import sys

import torch

from graviti_dist import _dgl
from graviti_dist.runtime import worker_setup


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def _assert_runs_ok(code: str) -> None:
    """``code`` ran to its last line (which prints ok) in a fresh interpreter."""
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_fresh_subprocess_samples_and_partitions():
    code = (
        "from graviti_dist._dgl import dgl\n"
        "import torch\n"
        "g = dgl.rand_graph(200, 2000)\n"
        "s = dgl.dataloading.NeighborSampler([4, 4])\n"
        "_, _, blocks = s.sample_blocks(g, torch.arange(8))\n"
        "assert blocks[-1].num_dst_nodes() == 8\n"
        "parts = dgl.metis_partition_assignment(g, 2)\n"
        "assert set(parts.tolist()) == {0, 1}\n"
        "print('ok')\n"
    )
    _assert_runs_ok(code)


def test_stand_in_only_when_graphbolt_library_is_missing():
    result = _run("import dgl")
    if worker_setup.graphbolt_library_present():
        assert result.returncode == 0
    else:
        assert result.returncode != 0 and "graphbolt" in result.stderr.lower()
        assert sys.modules["dgl.graphbolt"].__doc__ == worker_setup.STAND_IN_DOC


def test_setup_hook_imports_nothing_heavy_and_fixes_the_first_dgl_import():
    # What a Ray worker does: the hook, then (maybe much later) a plain `import dgl`.
    code = (
        "import sys, os\n"
        "os.environ['GRAVITI_NUM_THREADS'] = '1'\n"
        "from graviti_dist.runtime.worker_setup import setup_worker\n"
        "setup_worker()\n"
        "assert 'torch' not in sys.modules and 'dgl' not in sys.modules, 'the hook imported torch or DGL'\n"
        "assert os.environ['OMP_NUM_THREADS'] == '1'\n"
        "import dgl, torch\n"
        "assert dgl.rand_graph(10, 30).num_edges() == 30\n"
        "assert torch.get_num_threads() == 1, torch.get_num_threads()  # torch read the hook's count at import\n"
        "print('ok')\n"
    )
    _assert_runs_ok(code)


def test_set_threads_overrides_rays_default():
    before = torch.get_num_threads()
    try:
        assert _dgl.set_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_ray_actor_receives_a_dgl_graph(ray_local):
    ray = ray_local

    @ray.remote
    class GraphStats:
        def stats(self, graph):
            import os

            import torch as t

            sampler = _dgl.dgl.dataloading.NeighborSampler([3])
            _, _, blocks = sampler.sample_blocks(graph, t.arange(4))
            return graph.num_edges(), blocks[0].num_dst_nodes(), os.environ.get("GRAVITI_NUM_THREADS"), t.get_num_threads()

    graph = _dgl.dgl.rand_graph(50, 400)
    edges, dst, env_threads, threads = ray.get(GraphStats.remote().stats.remote(graph))
    assert (edges, dst) == (400, 4)
    assert env_threads == "1" and threads == 1  # the runtime env's thread count reached the worker


def test_ray_task_unpickles_a_dgl_graph_without_our_dgl_module(ray_local):
    """A task that gets a DGL graph but never names graviti_dist._dgl: pickle's own `import dgl`
    in the worker must find the stand-in registered by the setup hook."""
    ray = ray_local

    def graph_edges(graph):
        return graph.num_edges()

    def modules_loaded():
        return "torch" in sys.modules, "dgl" in sys.modules

    # Fresh Ray workers (not the pooled ones earlier tests may have warmed with DGL): a runtime env
    # of their own.
    env = {"env_vars": {"GRAVITI_TEST_FRESH_WORKER": "1"}}
    pyarrow_only = ray.remote(modules_loaded).options(runtime_env=env)
    assert ray.get(pyarrow_only.remote()) == (False, False)  # the hook imported neither
    edges = ray.get(ray.remote(graph_edges).options(runtime_env=env).remote(_dgl.dgl.rand_graph(20, 60)))
    assert edges == 60
