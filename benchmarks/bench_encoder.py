"""Encoder benchmark: forward + backward of a 2-layer GAT on the same DGL-sampled blocks.

Systems, all fed the same blocks in the same process with the same threads:
  ours  - graviti_dist.model.GATLayer (CSR spmm aggregation, folded attention)
  dgl   - dgl.nn.GATConv, as in DGL's examples
  pyg   - torch_geometric.nn.GATConv on the blocks' edge_index (when installed). PyG's
          NeighborLoader needs pyg-lib or torch-sparse, which have no builds for torch 2.13,
          so PyG is compared at the model level only.
Model: GATConv(in, 64, 4 heads) -> ELU(flatten 256) -> GATConv(256, 64, 4) -> mean of heads.
Usage: python -m benchmarks.bench_encoder [--users 60000] [--batches 12] [--repeat 5] [--threads 2] [--device cpu]
       [--allocator system|tcmalloc]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks._meta import write_result
from graviti_dist._dgl import dgl
from graviti_dist.crawl.load import load_crawl
from graviti_dist.crawl.synthetic import SyntheticSpec
from graviti_dist.crawl.generate import generate_crawl
from graviti_dist.partition.graph import build_graph, to_homogeneous
from graviti_dist.model import Block, GATLayer
from graviti_dist.model.ops import KERNELS, KERNELS_ENV, elu, kernels_for

HEADS, HIDDEN, FANOUTS, BATCH, IN_DIM = 4, 64, (10, 10), 1024, 64


class OursGAT(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = GATLayer(IN_DIM, HIDDEN, HEADS, residual=False)
        self.l2 = GATLayer(HEADS * HIDDEN, HIDDEN, HEADS, residual=False)

    def forward(self, blocks, x):
        h = elu(self.l1(blocks[0], x).flatten(1))
        return self.l2(blocks[1], h).mean(1)


class WithKernels(nn.Module):
    """Runs a model with one kernel family forced (the choice is read at forward time)."""

    def __init__(self, model: nn.Module, kernels: str):
        super().__init__()
        self.model, self.kernels = model, kernels

    def forward(self, blocks, x):
        previous = os.environ.get(KERNELS_ENV)
        os.environ[KERNELS_ENV] = self.kernels
        try:
            return self.model(blocks, x)
        finally:
            os.environ.pop(KERNELS_ENV) if previous is None else os.environ.__setitem__(KERNELS_ENV, previous)


class DGLGAT(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = dgl.nn.GATConv(IN_DIM, HIDDEN, HEADS, allow_zero_in_degree=True)
        self.l2 = dgl.nn.GATConv(HEADS * HIDDEN, HIDDEN, HEADS, allow_zero_in_degree=True)

    def forward(self, blocks, x):
        h = F.elu(self.l1(blocks[0], x).flatten(1))
        return self.l2(blocks[1], h).mean(1)


def _pyg_model():
    from torch_geometric.nn import GATConv

    class PyGGAT(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = GATConv(IN_DIM, HIDDEN, heads=HEADS, add_self_loops=False)
            self.l2 = GATConv(HEADS * HIDDEN, HIDDEN, heads=HEADS, add_self_loops=False)

        def forward(self, blocks, x):
            (e1, n1), (e2, n2) = blocks
            h = F.elu(self.l1((x, x[: n1[1]]), e1, size=n1))
            return self.l2((h, h[: n2[1]]), e2, size=n2).view(-1, HEADS, HIDDEN).mean(1)

    return PyGGAT()


def sample_batches(users: int, batches: int, workdir: Path) -> list:
    crawl_dir = workdir / f"encoder-bench-{users}"
    if not crawl_dir.exists():
        generate_crawl(crawl_dir, SyntheticSpec(users=users, seed=0), progress=False)
    graph = to_homogeneous(build_graph(load_crawl(crawl_dir)))
    sampler = dgl.dataloading.NeighborSampler(list(FANOUTS))
    generator = torch.Generator().manual_seed(0)
    seeds = torch.randperm(graph.num_nodes(), generator=generator)[: batches * BATCH]
    out = []
    for i in range(batches):
        _, _, blocks = sampler.sample_blocks(graph, seeds[i * BATCH:(i + 1) * BATCH])
        out.append(blocks)
    return graph, out


def convert(blocks, system: str, device):
    if system == "dgl":
        return [b.to(device) for b in blocks]
    if system.startswith("ours"):
        return [Block.from_edges(*b.edges(), b.num_src_nodes(), b.num_dst_nodes()).to(device) for b in blocks]
    return [(torch.stack(b.edges()).to(device), (b.num_src_nodes(), b.num_dst_nodes())) for b in blocks]


def time_systems(systems: dict, batches: dict, features, device, repeat: int) -> dict[str, list[float]]:
    """Seconds per batch for each system and round; systems interleave within every round so
    that drift in a shared machine's speed hits all of them alike. Round 0 is warm-up."""
    rounds: dict[str, list[float]] = {name: [] for name in systems}
    for model in systems.values():
        model.to(device)
    for r in range(repeat + 1):
        for name, model in systems.items():
            start = time.perf_counter()
            for blocks, x in zip(batches[name], features):
                out = model(blocks, x)
                out.pow(2).mean().backward()
                model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                rounds[name].append((time.perf_counter() - start) / len(features))
    return rounds


TCMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
                  "/usr/lib64/libtcmalloc_minimal.so.4")


def use_allocator(allocator: str) -> None:
    """Re-exec under tcmalloc when asked: glibc returns large freed blocks to the OS, so every
    step page-faults its big tensors in again; tcmalloc keeps them (PyTorch's CPU tuning advice)."""
    if allocator == "system" or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    library = next((p for p in TCMALLOC_PATHS if os.path.exists(p)), None)
    if library is None:
        raise SystemExit("--allocator tcmalloc: libtcmalloc_minimal.so.4 not found (apt-get install libtcmalloc-minimal4)")
    os.environ["LD_PRELOAD"] = library
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.bench_encoder", *sys.argv[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=60000, help="synthetic crawl size (~41 edges per user)")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--allocator", choices=["system", "tcmalloc"], default="system",
                        help="tcmalloc re-runs this script with it preloaded (apt-get install libtcmalloc-minimal4)")
    args = parser.parse_args()
    use_allocator(args.allocator)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch on this machine")
    torch.set_num_threads(args.threads)
    graph, sampled = sample_batches(args.users, args.batches, args.workdir)
    torch.manual_seed(0)
    features = [torch.randn(blocks[0].num_src_nodes(), IN_DIM, device=device) for blocks in sampled]
    systems = {"ours": OursGAT(), "dgl": DGLGAT()}
    try:
        systems["pyg"] = _pyg_model()
    except ImportError:
        print("torch_geometric not installed: skipping PyG")
    if device.type == "cuda":
        systems.pop("dgl")  # DGL's PyPI build has no CUDA
        # Both kernel families side by side: which is CUDA's default is decided from this result.
        default = kernels_for(device)
        for other in KERNELS:
            if other != default:
                systems[f"ours-{other}"] = WithKernels(OursGAT(), other)
    results = {}
    timings = time_systems(systems, {name: [convert(b, name, device) for b in sampled] for name in systems},
                           features, device, args.repeat)
    for name, rounds in timings.items():
        median = statistics.median(rounds)
        results[name] = {"ms_per_batch": round(median * 1e3, 2), "seeds_per_s": round(BATCH / median),
                         "spread_ms": [round(min(rounds) * 1e3, 2), round(max(rounds) * 1e3, 2)]}
        print(name, results[name], flush=True)
    for name in results:
        results[name]["speedup_of_ours"] = round(results[name]["ms_per_batch"] / results["ours"]["ms_per_batch"], 2)
    edges = [sum(b.num_edges() for b in blocks) for blocks in sampled]
    payload = {"benchmark": "encoder", "device": str(device), "kernels": kernels_for(device), "threads": args.threads, "allocator": args.allocator,
               "graph": {"users": args.users, "nodes": graph.num_nodes(), "edges": graph.num_edges()},
               "model": {"layers": 2, "heads": HEADS, "hidden": HIDDEN, "in_dim": IN_DIM, "fanouts": FANOUTS, "batch": BATCH},
               "sampled_edges_per_batch": round(statistics.mean(edges)), "results": results}
    suffix = "" if args.allocator == "system" else f"-{args.allocator}"
    path = write_result(f"encoder-{device.type}{suffix}", payload)
    plot(payload, path.with_suffix(".png"))
    print(f"wrote {path}")


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(payload["results"])
    values = [payload["results"][n]["seeds_per_s"] for n in names]
    low_high = [[BATCH / (payload["results"][n]["spread_ms"][1] / 1e3), BATCH / (payload["results"][n]["spread_ms"][0] / 1e3)]
                for n in names]
    errors = [[max(0.0, v - lo) for v, (lo, _) in zip(values, low_high)], [max(0.0, hi - v) for v, (_, hi) in zip(values, low_high)]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(names, values, yerr=errors, capsize=4, color=["tab:green", "tab:blue", "tab:orange", "tab:olive"][: len(names)])
    ax.set(ylabel="seeds / s (forward + backward)",
           title=f"2-layer GAT, 4x64, fanout 10,10, batch 1024 - {payload['device']}, {payload['threads']} threads, "
                 f"{payload['allocator']} malloc")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
