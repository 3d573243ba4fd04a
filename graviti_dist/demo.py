"""``graviti demo``: the main job on an embedded default, end to end on local Ray.

Today it runs what has landed: generate a small synthetic crawl, validate and
summarise it, build the typed DGL graph, and draw one neighbour-sampled
minibatch inside a Ray actor (the path every training worker will take).
Partitioning and training join this command as they land.
"""

from __future__ import annotations

from pathlib import Path

import ray
import torch

from graviti_dist._dgl import dgl
from graviti_dist.crawl.load import load_crawl
from graviti_dist.crawl.summary import format_summary, summarize
from graviti_dist.crawl.synthetic import SyntheticSpec
from graviti_dist.errors import GravitiError
from graviti_dist.generate import generate_crawl
from graviti_dist.graph import build_graph
from graviti_dist.ray_cluster import ray_session

FANOUTS = (10, 10)


@ray.remote
class _SamplerProbe:
    """Stands where a training worker will: receives the graph, samples a minibatch."""

    def sample(self, graph, node_type: str, seeds: torch.Tensor) -> list[dict]:
        sampler = dgl.dataloading.NeighborSampler(list(FANOUTS))
        _, _, blocks = sampler.sample_blocks(graph, {node_type: seeds})
        return [{"src_nodes": b.num_src_nodes(), "dst_nodes": b.num_dst_nodes(), "edges": b.num_edges()} for b in blocks]


def run_demo(out: str | Path, *, users: int = 2000, overwrite: bool = False) -> dict:
    """Generate, validate, summarise and sample; prints each step and returns the summary."""
    out = Path(out)
    crawl_dir = out / "crawl"
    if crawl_dir.exists() and not overwrite:
        raise GravitiError(f"{crawl_dir}: already exists from an earlier demo; pass --overwrite or choose --out")
    out.mkdir(parents=True, exist_ok=True)
    if users < 16:
        raise GravitiError(f"--users must be at least 16, got {users}")
    result = generate_crawl(crawl_dir, SyntheticSpec(users=users), overwrite=overwrite)
    print(f"[1/3] generated {crawl_dir}: {result['edges']:,} edges in {result['seconds']:.1f}s\n")
    crawl = load_crawl(crawl_dir)
    summary = summarize(crawl)
    print("[2/3] validated:\n" + format_summary(summary) + "\n")
    graph = build_graph(crawl)
    with ray_session(num_cpus=2, num_threads=1):
        seeds = torch.arange(min(1024, crawl.num_nodes("user")))
        blocks = ray.get(_SamplerProbe.remote().sample.remote(graph, "user", seeds))
    print(f"[3/3] a Ray actor sampled a {len(FANOUTS)}-layer minibatch of {len(seeds)} users with fanouts {FANOUTS}:")
    for i, block in enumerate(blocks):
        print(f"      layer {i}: {block['src_nodes']:,} -> {block['dst_nodes']:,} nodes over {block['edges']:,} edges")
    summary["sampled_blocks"] = blocks
    return summary
