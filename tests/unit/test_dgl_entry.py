"""The one DGL entry point works in a fresh process and inside Ray actors."""

import subprocess
import sys

import torch

from graviti_dist import _dgl


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


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
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_stand_in_only_when_graphbolt_library_is_missing():
    result = _run("import dgl")
    if _dgl._graphbolt_library_present():
        assert result.returncode == 0
    else:
        assert result.returncode != 0 and "graphbolt" in result.stderr.lower()
        assert sys.modules["dgl.graphbolt"].__doc__.startswith("graviti-dist stand-in")


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
