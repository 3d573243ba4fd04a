"""Per-task metrics (their exactness across real gloo workers: tests/integration/test_metrics_gloo.py)."""

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from graviti_dist.train.metrics import TaskMetric


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


def test_nan_link_scores_rank_worst():
    m = TaskMetric("link")
    nan = float("nan")
    m.update((torch.tensor([nan, 0.9, 0.9]), torch.tensor([[0.1, 0.2], [nan, 0.1], [0.1, 0.2]])))
    result = m.compute()
    # ranks: 3 (NaN positive below both negatives), 2 (NaN negative above), 1
    assert result["mrr"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3) and result["count"] == 3
