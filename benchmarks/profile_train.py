"""Where a training step's time goes, kernel by kernel: torch.profiler over a few steps of ours.

Usage: python -m benchmarks.profile_train PARTITION_DIR [--device cuda] [--steps 8] [--rows 25]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench_train import OursTrainer
from graviti_dist.sampling import load_worker_partition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("partitions", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    device = torch.device(args.device)
    trainer = OursTrainer([load_worker_partition(args.partitions, 0, edge_inputs=False)], device, 1024)
    trainer.run(3)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        trainer.run(args.steps)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows))


if __name__ == "__main__":
    main()
