"""Per-task metrics, and their exactness across real gloo workers (not averages of averages)."""

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import roc_auc_score

from graviti_dist.train.metrics import TaskMetric, torch_distributed_gather


def test_binary_and_regression_and_multiclass():
    m = TaskMetric("binary")
    m.update(torch.tensor([0.9, 0.2, 0.6, 0.4, 0.99]), torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0]),
             torch.tensor([True, True, True, True, False]))
    result = m.compute()
    assert result["count"] == 4 and result["roc_auc"] == pytest.approx(0.75)
    r = TaskMetric("regression")
    r.update(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]), torch.tensor([True, True]))
    assert r.compute()["rmse"] == pytest.approx(math.sqrt(2.5)) and r.compute()["mae"] == pytest.approx(1.5)
    c = TaskMetric("multiclass", num_classes=3)
    c.update(torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]]), torch.tensor([0, 1, 2]), torch.ones(3, dtype=torch.bool))
    assert c.compute()["accuracy"] == pytest.approx(2 / 3)
    assert c.compute()["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_multilabel():
    m = TaskMetric("multilabel")
    m.update(torch.tensor([[0.9, 0.2], [0.3, 0.8], [0.6, 0.1]]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]),
             torch.tensor([True, True, True]))
    result = m.compute()
    assert result["micro_roc_auc"] == pytest.approx(roc_auc_score([1, 0, 0, 1, 0, 0], [0.9, 0.2, 0.3, 0.8, 0.6, 0.1]))
    assert result["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)  # label 0: tp 1, fp 1; label 1: perfect


def test_link_ranks():
    m = TaskMetric("link")
    m.update((torch.tensor([0.9, 0.5]), torch.tensor([[0.1, 0.2], [0.7, 0.1]])))
    result = m.compute()
    assert result["mrr"] == pytest.approx((1 + 0.5) / 2) and result["hits@10"] == 1.0


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
