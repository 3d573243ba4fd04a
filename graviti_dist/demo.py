"""``graviti demo``: the main job on an embedded default, end to end on local Ray.

Today it runs what has landed: generate a small synthetic crawl, validate and
summarise it, partition it in two with Ray actors and METIS (and verify the
partitions), draw one neighbour-sampled minibatch from a partition inside
a Ray actor, then train the multi-task GAT on 2 Ray Train workers with DDP for
a few epochs and print the per-task test metrics.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import ray
import torch

from graviti_dist._dgl import dgl
from graviti_dist.crawl import SyntheticSpec, format_summary, generate_crawl, load_crawl, summarize
from graviti_dist.errors import FieldError
from graviti_dist.partition import PartitionSet, PartitionSpec, check_partitions, partition_crawl
from graviti_dist.runtime.ray_cluster import ray_session
from graviti_dist.train import ModelConfig, RunDir, TrainConfig, fit

FANOUTS = (10, 10)


@ray.remote
class _SamplerProbe:
    """Stands where a training worker will: receives the graph, samples a minibatch."""

    def sample(self, part_config: str, part_id: int, batch: int) -> list[dict]:
        graph, *_ = dgl.distributed.load_partition(part_config, part_id, load_feats=False)
        seeds = torch.nonzero(graph.ndata["inner_node"].bool()).squeeze(1)[:batch]
        sampler = dgl.dataloading.NeighborSampler(list(FANOUTS))
        _, _, blocks = sampler.sample_blocks(graph, seeds)
        return [{"src_nodes": b.num_src_nodes(), "dst_nodes": b.num_dst_nodes(), "edges": b.num_edges()} for b in blocks]


@contextlib.contextmanager
def _quiet(logger: str):
    """Raise ``logger`` to WARNING for the block, unless the user asked for debug output (-v)."""
    log = logging.getLogger(logger)
    level = log.level
    if not logging.getLogger("graviti_dist").isEnabledFor(logging.DEBUG):
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def run_demo(out: str | Path, *, users: int = 2000, epochs: int = 4, overwrite: bool = False) -> dict:
    """Generate, validate, summarise and sample; prints each step and returns the summary."""
    out = Path(out)
    crawl_dir = out / "crawl"
    if (crawl_dir.exists() or (out / "partitions").exists() or (out / "run").exists()) and not overwrite:
        raise FieldError("out", f"{out}: holds an earlier demo; choose another or pass overwrite to replace it")
    if users < 16:
        raise FieldError("users", f"must be at least 16, got {users}")
    out.mkdir(parents=True, exist_ok=True)
    result = generate_crawl(crawl_dir, SyntheticSpec(users=users), overwrite=overwrite)
    print(f"[1/5] generated {crawl_dir}: {result['edges']:,} edges in {result['seconds']:.1f}s\n")
    crawl = load_crawl(crawl_dir)
    summary = summarize(crawl)
    print("[2/5] validated:\n" + format_summary(summary) + "\n")
    parts_dir = out / "partitions"
    with ray_session(num_cpus=2, num_threads=1):
        with _quiet("graviti_dist.partition"):  # step [3/5] below summarises the stages' progress lines
            report = partition_crawl(crawl_dir, parts_dir, PartitionSpec(num_parts=2), overwrite=overwrite)
        check_partitions(parts_dir)
        print(f"[3/5] partitioned into {parts_dir}: 2 parts, edge cut {report['edge_cut_fraction']:.1%}, node balance "
              f"{report['nodes']['max_over_mean']}, halo replication {report['halo_replication']}x; --check passed\n")
        blocks = ray.get(_SamplerProbe.remote().sample.remote(str(PartitionSet(parts_dir).part_config), 0, 1024))
        print(f"[4/5] a Ray actor loaded partition 0 and sampled a {len(FANOUTS)}-layer minibatch of 1024 nodes "
              f"with fanouts {FANOUTS}:")
        for i, block in enumerate(blocks):
            print(f"      layer {i}: {block['src_nodes']:,} -> {block['dst_nodes']:,} nodes over {block['edges']:,} edges")
        config = TrainConfig(partitions=str(parts_dir), out=str(out / "run"), epochs=epochs, num_workers=2,
                             model=ModelConfig(hidden=32, heads=4, fanouts=list(FANOUTS)))
        test_metrics = fit(config, overwrite=overwrite)
    print(f"\n[5/5] trained on 2 Ray Train workers (DDP, gloo) for {epochs} epochs; test metrics "
          f"(run directory {out / 'run'}):")
    print(RunDir(out / "run").test_table())
    summary["sampled_blocks"] = blocks
    summary["test_metrics"] = test_metrics
    return summary
