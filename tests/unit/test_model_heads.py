"""Heads' losses and predictions on hand-computed cases, label masks, and the multi-task model."""

import math

import pytest
import torch

from graviti_dist.model import (Block, EncoderConfig, LinkPairs, MiniBatch, MultiTaskModel, NodeInputSpec, TaskSpec,
                                TypedFeatures, build_balancer, build_encoder, build_head)


def test_multiclass_cross_entropy_ignores_unlabelled():
    head = build_head(TaskSpec("topic", "multiclass", num_classes=3), 4)
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 9.0]])
    loss = head.loss(logits, torch.tensor([0, 1]), torch.tensor([True, False]))
    assert loss.item() == pytest.approx(math.log(math.e ** 2 + math.e + 1) - 2, rel=1e-6)
    assert head.predict(logits).sum(1).tolist() == pytest.approx([1.0, 1.0])


def test_binary_bce_with_positive_weight():
    head = build_head(TaskSpec("bot", "binary", pos_weight=3.0), 4)
    loss = head.loss(torch.tensor([0.0, 0.0, 5.0]), torch.tensor([1.0, 0.0, 1.0]), torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx((3 * math.log(2) + math.log(2)) / 2, rel=1e-6)


def test_multilabel_mean_over_labels():
    head = build_head(TaskSpec("tags", "multilabel", width=2), 4)
    loss = head.loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.tensor([True]))
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_regression_standardises_targets_and_predicts_original_units():
    head = build_head(TaskSpec("views", "regression", target_mean=10.0, target_std=2.0), 4)
    loss = head.loss(torch.tensor([1.0, 100.0]), torch.tensor([14.0, 0.0]), torch.tensor([True, False]))
    assert loss.item() == pytest.approx(1.0)  # z = (14 - 10) / 2 = 2, prediction 1
    assert head.predict(torch.tensor([1.0])).item() == pytest.approx(12.0)
    huber = build_head(TaskSpec("v", "regression", loss="huber", target_mean=10.0, target_std=2.0), 4)
    assert huber.loss(torch.tensor([1.0]), torch.tensor([14.0]), torch.tensor([True])).item() == pytest.approx(0.5)


def test_all_unlabelled_batch_gives_zero_loss_that_still_reaches_the_head():
    head = build_head(TaskSpec("bot", "binary"), 4)
    out = head(torch.randn(3, 4))
    loss = head.loss(out, torch.ones(3), torch.zeros(3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and head.linear.weight.grad is not None


def test_link_head_loss_with_sampled_negatives():
    head = build_head(TaskSpec("rec", "link"), 2)
    with torch.no_grad():
        head.src_proj.weight.copy_(torch.eye(2))
        head.src_proj.bias.zero_()
    src, pos, neg = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])
    pos_logit, neg_logit = head(src, pos, neg)
    assert pos_logit.tolist() == [2.0] and neg_logit.tolist() == [[0.0, -1.0]]
    expected = math.log1p(math.exp(-2)) + (math.log(2) + math.log1p(math.exp(-1))) / 2
    assert head.loss((pos_logit, neg_logit)).item() == pytest.approx(expected, rel=1e-6)
    mlp = build_head(TaskSpec("rec", "link", scorer="mlp"), 2)
    assert mlp(src, pos, neg)[1].shape == (1, 2)


def test_unknown_head_type_is_refused():
    with pytest.raises(ValueError, match="no head for type 'ranking'"):
        build_head(TaskSpec("x", "ranking"), 4)


def _toy_batch(num_in=20, seeds=8):
    features = TypedFeatures(torch.zeros(num_in, dtype=torch.long), {0: torch.arange(num_in)}, {0: torch.randn(num_in, 3)})
    blocks = [Block.from_edges(torch.randint(0, num_in, (60,)), torch.randint(0, 12, (60,)), num_in, 12),
              Block.from_edges(torch.randint(0, 12, (30,)), torch.randint(0, seeds, (30,)), 12, seeds)]
    labels = {"bot": (torch.randint(0, 2, (seeds,)).float(), torch.tensor([True, False] * (seeds // 2)))}
    links = {"rec": LinkPairs(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([[4, 5], [6, 7]]))}
    return MiniBatch(blocks, features, torch.zeros(seeds, dtype=torch.long), labels, links)


def test_multitask_masked_seeds_do_not_change_the_loss():
    torch.manual_seed(0)
    specs = [TaskSpec("bot", "binary"), TaskSpec("rec", "link")]
    model = MultiTaskModel(build_encoder(EncoderConfig(hidden=8, heads=2), [NodeInputSpec(dense_width=3)]), specs,
                           build_balancer("static", ["bot", "rec"], {"rec": 0.5})).eval()
    batch = _toy_batch()
    total, losses, _ = model.loss(batch)
    assert total.item() == pytest.approx(losses["bot"].item() + 0.5 * losses["rec"].item(), rel=1e-6)
    target, mask = batch.labels["bot"]
    flipped = torch.where(mask, target, 1 - target)  # change only unlabelled seeds' targets
    batch.labels["bot"] = (flipped, mask)
    assert model.loss(batch)[1]["bot"].item() == pytest.approx(losses["bot"].item())


@pytest.mark.parametrize("kind", ["binary", "regression", "multilabel"])
def test_nan_targets_of_unlabelled_seeds_never_reach_the_gradient(kind):
    from graviti_dist.model.heads import TaskSpec, build_head

    spec = TaskSpec(name="t", type=kind, node_type=0, width=3 if kind == "multilabel" else 1)
    head = build_head(spec, 4)
    emb = torch.randn(5, 4, requires_grad=True)
    target = torch.rand(5, 3) if kind == "multilabel" else torch.rand(5)
    target[1] = float("nan")
    mask = torch.tensor([True, False, True, False, False])
    loss = head.loss(head(emb), target, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()
    assert emb.grad[1].abs().sum() == 0  # unlabelled rows get no gradient
    empty = head.loss(head(emb), target, torch.zeros(5, dtype=torch.bool))
    assert float(empty.detach()) == 0.0


def test_a_head_with_a_hidden_layer_fits_what_a_linear_head_cannot():
    """XOR of two embedding coordinates: no linear read of the embedding gets it, a head with a
    hidden layer of its own does (what model.head_hidden gives each task)."""
    torch.manual_seed(0)
    emb = torch.randn(512, 2)
    target = ((emb[:, 0] > 0) ^ (emb[:, 1] > 0)).float()
    mask = torch.ones(512, dtype=torch.bool)
    final = {}
    for hidden in (0, 16):
        head = build_head(TaskSpec("xor", "binary", hidden=hidden), 2)
        optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
        for _ in range(300):
            optimizer.zero_grad()
            loss = head.loss(head(emb), target, mask)
            loss.backward()
            optimizer.step()
        final[hidden] = float(((head.predict(head(emb)) > 0.5).float() == target).float().mean())
    assert final[0] < 0.7 and final[16] > 0.95, final
    with pytest.raises(ValueError, match="hidden width"):
        TaskSpec("xor", "binary", hidden=-1)
