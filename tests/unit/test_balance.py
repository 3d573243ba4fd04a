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


def _two_task_problem(scale_loud: float):
    torch.manual_seed(0)
    x = torch.randn(512, 4)
    targets = (x @ torch.tensor([1.0, -2.0, 0.5, 0.0]), x @ torch.tensor([0.5, 1.0, 0.0, -1.0]))
    shared, heads = torch.nn.Linear(4, 8), torch.nn.ModuleList(torch.nn.Linear(8, 1) for _ in range(2))

    def losses():
        h = torch.relu(shared(x))
        quiet = ((heads[0](h).squeeze(1) - targets[0]) ** 2).mean()
        loud = scale_loud * ((heads[1](h).squeeze(1) - targets[1]) ** 2).mean()
        return {"quiet": quiet, "loud": loud}

    return shared, heads, losses


def test_gradnorm_evens_out_the_tasks_gradients_at_the_shared_layer():
    shared, heads, losses = _two_task_problem(scale_loud=20.0)
    balancer = build_balancer("gradnorm", ["quiet", "loud"])
    assert balancer.effective_weights() == {"quiet": 1.0, "loud": 1.0}
    opt = torch.optim.Adam([*shared.parameters(), *heads.parameters(), *balancer.parameters()], lr=0.02)
    for _ in range(200):
        opt.zero_grad()
        balancer(losses(), list(shared.parameters())).backward()
        opt.step()
    weights = balancer.effective_weights()
    assert abs(sum(weights.values()) - 2.0) < 1e-5 and min(weights.values()) > 0
    assert weights["loud"] < 0.25 * weights["quiet"]  # its gradients are 20x larger
    assert torch.isfinite(balancer.initial).all()


def test_gradnorm_moves_only_its_weights_and_is_plain_weighting_outside_training():
    shared, heads, losses = _two_task_problem(scale_loud=3.0)
    balancer = build_balancer("gradnorm", ["quiet", "loud"])
    with torch.no_grad():
        balancer.logits.copy_(torch.tensor([0.3, -0.3]))
    params = [*shared.parameters(), *heads.parameters()]
    values = losses()
    balancer(values, list(shared.parameters())).backward()
    with_gradnorm = [p.grad.clone() for p in params]
    assert balancer.logits.grad is not None and balancer.logits.grad.abs().sum() > 0
    for p in params:
        p.grad = None
    w = balancer.weights().detach()
    values = losses()
    (w[0] * values["quiet"] + w[1] * values["loud"]).backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(with_gradnorm, params))  # the model sees sum w_i L_i only
    balancer.eval()
    values = losses()
    assert torch.allclose(balancer(values, list(shared.parameters())), w[0] * values["quiet"] + w[1] * values["loud"])


def test_uncertainty_caps_the_weight_of_a_task_that_is_all_but_solved():
    # The learned factor's optimum is 1 / (2 L): a loss of 1e-4 would want 5,000.
    for max_weight, expected in ((None, 4.0), (10.0, 10.0)):
        balancer = build_balancer("uncertainty", ["solved", "hard"], {"solved": 2.0}, max_weight=max_weight)
        opt = torch.optim.Adam(balancer.parameters(), lr=0.1)
        for _ in range(500):
            opt.zero_grad()
            balancer({"solved": torch.tensor(1e-4), "hard": torch.tensor(0.5)}).backward()
            opt.step()
        weights = balancer.effective_weights()
        assert weights["solved"] == pytest.approx(2.0 * expected)  # the cap times the task's static weight
        assert weights["hard"] == pytest.approx(1.0, rel=0.05)  # 1 / (2 x 0.5): below the cap, unchanged
    uncapped = build_balancer("uncertainty", ["solved"], max_weight=1e9)
    opt = torch.optim.Adam(uncapped.parameters(), lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        uncapped({"solved": torch.tensor(1e-4)}).backward()
        opt.step()
    assert uncapped.effective_weights()["solved"] > 100  # what the cap is for
