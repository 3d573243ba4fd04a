"""The exponential moving average of the weights (optim.average_epochs, train/averaging.py)."""

import pytest
import torch

from graviti_dist.train.averaging import WeightAverage


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.register_buffer("history", torch.full((2,), float("nan")))  # like the DWA balancer's


def test_the_average_follows_the_weights_with_the_decay_of_its_window():
    torch.manual_seed(0)
    live = _Tiny()
    average = WeightAverage(live, epochs=2, steps_per_epoch=5)
    assert average.decay == pytest.approx(0.9)  # 1 - 1/(2 epochs x 5 steps)
    optimizer = torch.optim.SGD(live.parameters(), lr=0.5)
    expected = None
    for step in range(6):
        optimizer.zero_grad()
        live.linear(torch.randn(4, 3)).pow(2).sum().backward()
        optimizer.step()
        average.update()
        weight = live.linear.weight.detach().clone()
        expected = weight if expected is None else 0.9 * expected + 0.1 * weight  # the first update copies
    averaged = average.model
    torch.testing.assert_close(averaged.linear.weight, expected)
    assert not torch.allclose(averaged.linear.weight, live.linear.weight)
    live.history.copy_(torch.tensor([1.0, 2.0]))  # buffers are the live model's, never averaged
    assert average.model.history.tolist() == [1.0, 2.0]
    assert set(average.model.state_dict()) == set(live.state_dict())  # loads into the live model as it is


def test_a_restored_average_continues_where_it_stopped():
    live = _Tiny()
    average = WeightAverage(live, epochs=1, steps_per_epoch=4)
    average.update()
    with torch.no_grad():
        live.linear.weight.add_(1.0)
    average.update()
    restored = WeightAverage(live, epochs=1, steps_per_epoch=4)
    restored.load_state_dict(average.state_dict())
    torch.testing.assert_close(restored.model.linear.weight, average.model.linear.weight)
    with torch.no_grad():
        live.linear.weight.add_(1.0)
    average.update()
    restored.update()
    torch.testing.assert_close(restored.model.linear.weight, average.model.linear.weight)
