"""Weight averaging: an exponential moving average (EMA) of the model's weights, which evaluation,
model selection and the saved models use instead of the last step's weights (``optim.average_epochs``).

Why: on Twitch the validation RMSE of ``views`` swings by about 0.1 from one epoch to the next, in
single-task runs too (benchmarks/README.md, "Weight averaging"), so picking each task's best epoch
on validation picked a lucky step as often as a good model. The average is torch's
``AveragedModel`` over the parameters; buffers (balancer state, target statistics) are the live
model's, copied in before each use (an EMA of the balancer's NaN history would be NaN).
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """EMA of ``model``'s parameters over about ``epochs`` epochs of ``steps_per_epoch`` steps each:
    the decay is 1 - 1/(epochs x steps), so a step's weight falls to 1/e after that many steps."""

    def __init__(self, model: torch.nn.Module, epochs: float, steps_per_epoch: int):
        self.decay = 1.0 - 1.0 / max(epochs * steps_per_epoch, 1.0)
        self._live = model
        self._averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=False)

    def update(self) -> None:
        """After an optimiser step: move the average towards the live weights (the first call copies them)."""
        self._averaged.update_parameters(self._live)

    @property
    def model(self) -> torch.nn.Module:
        """The averaged model, with the live model's buffers and train/eval mode: what to evaluate and save."""
        with torch.no_grad():
            for mine, live in zip(self._averaged.module.buffers(), self._live.buffers(), strict=True):
                mine.copy_(live)
        return self._averaged.module

    def state_dict(self) -> dict:
        return self._averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._averaged.load_state_dict(state)
