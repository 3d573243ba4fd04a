"""Task groups (model.task_groups): an encoder per group in one model, each task's head reading its own
group's columns, so a task's loss trains only its group's encoder; layer-wise inference runs the grouped
encoder as it runs one; the config names a task in two groups or a task the set lacks."""

import pytest
import torch

from graviti_dist.errors import GravitiError
from graviti_dist.infer.layerwise import PartitionInference
from graviti_dist.model import EncoderConfig, TaskGroupEncoder, resolve_task_groups
from graviti_dist.sampling import NodeMinibatches, load_worker_partition
from graviti_dist.train.config import TrainConfig, check_against_partitions
from graviti_dist.train.loop import build_model
from tests.helpers import shallow_and_full_sets

FULL = 10**6  # a fanout above every in-degree: whole neighbourhoods


@pytest.fixture(scope="module")
def part(tmp_path_factory):
    _, full_dir = shallow_and_full_sets(tmp_path_factory.mktemp("task-groups"), users=300, seed=5)
    return load_worker_partition(full_dir, 1)


def test_groups_keep_the_runs_tasks_and_put_the_unnamed_ones_together():
    tasks = ["a", "b", "c", "d"]
    assert resolve_task_groups([["b"], ["a", "x"]], tasks) == [["b"], ["a"], ["c", "d"]]
    assert resolve_task_groups([["a", "b", "c", "d"]], tasks) == []  # one group is one shared encoder
    assert resolve_task_groups([["x"], ["a"]], ["a"]) == []  # a single-task run of a grouped config
    assert resolve_task_groups([], tasks) == []


def test_a_tasks_loss_trains_only_its_own_groups_encoder(part):
    names = [spec.name for spec in build_model(part, EncoderConfig(hidden=8, heads=2)).specs.values() if not spec.is_link]
    first, second = names[0], names[1]
    model = build_model(part, EncoderConfig(hidden=8, heads=2), task_groups=[[first], [second]])
    assert isinstance(model.encoder, TaskGroupEncoder) and len(model.encoder.encoders) == 3  # + the rest, together
    batches = NodeMinibatches(part, [5, 5], 64, "train", shuffle=False)
    inputs, blocks = batches.sample(batches.seeds[:64])
    emb = model.encoder(blocks, batches.features(inputs))
    assert emb.shape == (64, 3 * 8)
    model.heads[first](model.task_embedding(first, emb)).pow(2).mean().backward()
    grads = [[p.grad for p in encoder.parameters() if p.requires_grad] for encoder in model.encoder.encoders]
    assert any(g is not None and g.abs().sum() > 0 for g in grads[0])
    assert all(g is None or g.abs().sum() == 0 for group in grads[1:] for g in group)


def test_layerwise_inference_of_a_grouped_model_is_its_full_neighbourhood_forward(part):
    torch.manual_seed(0)
    names = [spec.name for spec in build_model(part, EncoderConfig(hidden=8, heads=2)).specs.values()]
    model = build_model(part, EncoderConfig(hidden=8, heads=2), task_groups=[names[:1], names[1:2]]).eval()
    layerwise = PartitionInference(part, model)
    batches = NodeMinibatches(part, [FULL, FULL], 10**9, "train", shuffle=False)
    seeds = batches.seeds[:40]
    emb, predictions = layerwise.predict(seeds, layerwise.hidden(1))
    inputs, blocks = batches.sample(seeds)
    with torch.no_grad():
        expected = model.encoder(blocks, batches.features(inputs))
        torch.testing.assert_close(emb, expected, atol=1e-4, rtol=1e-4)
        for name, values in predictions.items():
            head = model.heads[name]
            torch.testing.assert_close(values, head.predict(head(model.task_embedding(name, expected))), atol=1e-4, rtol=1e-4)


def test_the_config_names_a_task_in_two_groups_or_one_the_set_lacks(part):
    with pytest.raises(ValueError, match="task_groups: views in more than one group"):
        TrainConfig.model_validate({"partitions": "p", "out": "o", "model": {"task_groups": [["views"], ["days", "views"]]}})
    with pytest.raises(ValueError, match="a group names no task"):
        TrainConfig.model_validate({"partitions": "p", "out": "o", "model": {"task_groups": [[]]}})
    config = TrainConfig.model_validate({"partitions": part.source[0], "out": "o", "model": {"task_groups": [["nope"]]}})
    with pytest.raises(GravitiError, match="model.task_groups: 'nope' is not a task of"):
        check_against_partitions(config)


def test_link_recommendations_of_a_grouped_run_score_the_link_tasks_own_columns(part):
    from graviti_dist.infer.recommend import Recommender
    from graviti_dist.partition import PartitionSet
    from graviti_dist.train.run_dir import TrainedRun

    manifest = part.manifest
    link = manifest.link_tasks[0]
    config = TrainConfig.model_validate({"partitions": part.source[0], "out": "o", "model": {
        "hidden": 8, "heads": 2, "task_groups": [[t.name for t in manifest.tasks if not t.is_link][:1], [link.name]]}})
    model = build_model(part, EncoderConfig(hidden=8, heads=2), task_groups=config.model.task_groups)
    parts = PartitionSet(part.source[0])
    relation = manifest.relation(link.relation)
    emb = {t: torch.randn(parts.read_id_map(t, columns=["raw_id"]).num_rows, model.encoder.out_dim)
           for t in {relation.src, relation.dst}}
    recommender = Recommender(TrainedRun(config, model.state_dict(), part.source[0]), parts, manifest, link,
                              emb[relation.src], emb[relation.dst])
    sources = torch.arange(5)
    items, probabilities = recommender.top_k(sources, 3)
    head = model.heads[link.name]
    with torch.no_grad():
        own_src = model.task_embedding(link.name, emb[relation.src][sources])
        own_dst = model.task_embedding(link.name, emb[relation.dst])
        expected = torch.sigmoid(head.score(own_src.unsqueeze(1), own_dst[items]))
    torch.testing.assert_close(probabilities, expected)
    assert model.encoder.slice_of(link.name) == slice(8, 16)  # the second of three groups: not the first columns
