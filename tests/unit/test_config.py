"""Training configs are refused up front, with the field named, when they cannot train."""

import pytest

from graviti_dist.errors import GravitiError
from graviti_dist.train import load_train_config


@pytest.mark.parametrize("override, field", [
    ("optim.lr=.inf", "optim.lr"), ("optim.lr=.nan", "optim.lr"), ("model.dropout=.nan", "model.dropout"),
    ("tasks=[]", "tasks"), ("epochs=0", "epochs"), ("sampling=sometimes", "sampling"), ("colour=red", "colour"),
    ("optim.average_epochs=-1", "optim.average_epochs"),
])
def test_configs_that_cannot_train_are_refused(override, field):
    with pytest.raises(GravitiError) as err:
        load_train_config(None, ["partitions=p", override])
    assert f"  {field}:" in str(err.value), str(err.value)


def test_a_sound_config_loads_with_its_defaults():
    config = load_train_config(None, ["partitions=p", "optim.lr=0.01", "tasks=[a]"])
    assert config.optim.lr == 0.01 and config.tasks == ["a"] and config.sampling == "auto"


def test_a_non_finite_training_loss_stops_the_run_naming_task_and_epoch():
    from graviti_dist.train.loop import check_finite_losses

    check_finite_losses({"a": 0.5, "b": 0.0}, 3)
    with pytest.raises(GravitiError, match=r"diverged in epoch 3: the loss of b is nan"):
        check_finite_losses({"a": 0.5, "b": float("nan")}, 3)
    with pytest.raises(GravitiError, match="a is inf"):
        check_finite_losses({"a": float("inf")}, 0)


def test_model_settings_reach_the_encoder_and_shape_the_checkpoint():
    """model.residual (the benchmark's like-for-like model turns it off) reaches the encoder, and a
    resumed run may not change it: the residual maps are weights of the checkpoint."""
    from graviti_dist.train.config import encoder_config, resume_conflicts

    plain = load_train_config(None, ["partitions=p", "model.residual=false", "model.layer_norm=false"])
    assert encoder_config(plain).residual is False and encoder_config(plain).layer_norm is False
    default = load_train_config(None, ["partitions=p"])
    assert encoder_config(default).residual is True
    assert any("model.residual" in c for c in resume_conflicts(default, plain))


def test_a_run_trains_its_named_tasks_or_every_task():
    assert load_train_config(None, ["partitions=p"]).trains("views")
    subset = load_train_config(None, ["partitions=p", "tasks=[days]"])
    assert subset.trains("days") and not subset.trains("views")
