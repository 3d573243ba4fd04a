"""Metrics are exact across real gloo workers (two spawned processes), not averages of averages."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import roc_auc_score

from graviti_dist.train.metrics import TaskMetric, torch_distributed_gather


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, preds, targets, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        m, link = TaskMetric("binary"), TaskMetric("link")
        half = slice(0, 30) if rank == 0 else slice(30, None)
        m.update(torch.tensor(preds[half]), torch.tensor(targets[half]), torch.ones(len(preds[half]), dtype=torch.bool))
        link.update((torch.tensor([0.5] if rank == 0 else [0.5, 0.9]), torch.tensor([[0.9]] if rank == 0 else [[0.1], [0.1]])))
        m.add_loss(1.0 if rank == 0 else 2.0, 30 if rank == 0 else 70)  # validation loss: weighted by items
        link.add_loss(0.5 if rank == 0 else 1.0, 1 if rank == 0 else 2)
        node, edges = m.compute(torch_distributed_gather), link.compute(torch_distributed_gather)
        out[rank] = (node["roc_auc"], edges["mrr"], node["loss"], edges["loss"])
    finally:
        dist.destroy_process_group()


def test_metrics_are_exact_across_two_gloo_workers():
    rng = np.random.default_rng(0)
    targets = (rng.random(100) < 0.4).astype(np.float32)
    # Worker 0's half is easy, worker 1's is hard: the mean of per-worker AUCs differs from the true AUC.
    preds = np.where(np.arange(100) < 30, targets * 0.8 + 0.1, rng.random(100)).astype(np.float32)
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), preds, targets, out), nprocs=2, join=True)
    full = roc_auc_score(targets, preds)
    averaged = (roc_auc_score(targets[:30], preds[:30]) + roc_auc_score(targets[30:], preds[30:])) / 2
    assert abs(full - averaged) > 0.05
    for rank in (0, 1):
        auc, mrr, node_loss, link_loss = out[rank]
        assert auc == pytest.approx(full)
        assert node_loss == pytest.approx((30 * 1.0 + 70 * 2.0) / 100) and link_loss == pytest.approx((0.5 + 2 * 1.0) / 3)
        assert mrr == pytest.approx((0.5 + 1 + 1) / 3)  # ranks 2, 1, 1 over three positives
