import pytest
import torch

from graviti_dist.model.balance import build_balancer


def test_static_weights_and_unknown_task():
    balancer = build_balancer("static", ["a", "b"], {"b": 2.0})
    assert balancer({"a": torch.tensor(1.0), "b": torch.tensor(3.0)}).item() == 7.0
    assert balancer.effective_weights() == {"a": 1.0, "b": 2.0}
    with pytest.raises(ValueError, match="unknown task"):
        build_balancer("static", ["a"], {"c": 1.0})
    with pytest.raises(ValueError, match="must be one of"):
        build_balancer("magic", ["a"])


def test_uncertainty_weights_move_away_from_noisy_task():
    torch.manual_seed(0)
    x = torch.randn(512, 4)
    clean = x @ torch.tensor([1.0, -2.0, 0.5, 0.0])
    noisy = x @ torch.tensor([0.5, 1.0, 0.0, -1.0]) + 3.0 * torch.randn(512)
    model = torch.nn.Linear(4, 2)
    balancer = build_balancer("uncertainty", ["clean", "noisy"])
    assert balancer.effective_weights() == {"clean": 1.0, "noisy": 1.0}
    opt = torch.optim.Adam(list(model.parameters()) + list(balancer.parameters()), lr=0.05)
    for _ in range(300):
        out = model(x)
        losses = {"clean": ((out[:, 0] - clean) ** 2).mean(), "noisy": ((out[:, 1] - noisy) ** 2).mean()}
        opt.zero_grad()
        balancer(losses).backward()
        opt.step()
    weights = balancer.effective_weights()
    assert weights["noisy"] < 0.3  # ~1 / (2 * noise variance of 9)
    assert weights["clean"] > 3 * weights["noisy"]


def test_dwa_favours_the_task_that_learns_slowly():
    balancer = build_balancer("dwa", ["fast", "slow"])
    for epoch_losses in ({"fast": 1.0, "slow": 1.0}, {"fast": 0.5, "slow": 0.95}):
        assert balancer.effective_weights() == {"fast": 1.0, "slow": 1.0}
        balancer.end_epoch(epoch_losses)
    weights = balancer.effective_weights()
    assert weights["slow"] > weights["fast"] and sum(weights.values()) == pytest.approx(2.0)
