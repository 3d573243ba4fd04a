"""Train/val/test splits: by node (default) a node has one split for all its tasks; by task each
task cuts exact fractions of its own nodes; old sets are read as split by task."""

import json

import numpy as np
import pytest

from graviti_dist.crawl import SyntheticSpec, generate_crawl, load_crawl
from graviti_dist.partition import PartitionSet, PartitionSpec, partition_crawl, read_manifest
from graviti_dist.partition.splits import NONE, TEST, TRAIN, VAL, make_splits, node_level_splits


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    out = tmp_path_factory.mktemp("splits") / "crawl"
    generate_crawl(out, SyntheticSpec(users=1500, seed=3), progress=False)
    return load_crawl(out)


def _user_tasks(crawl):
    return [t.name for t in crawl.schema.tasks if not t.is_link and t.node_type == "user"]


def test_node_level_splits_hold_the_fractions_in_expectation_and_are_reproducible():
    split = node_level_splits(200_000, (0.8, 0.1, 0.1), seed=7, node_type="user")
    shares = [float(np.mean(split == s)) for s in (TRAIN, VAL, TEST)]
    assert np.allclose(shares, [0.8, 0.1, 0.1], atol=0.005)
    assert np.array_equal(split, node_level_splits(200_000, (0.8, 0.1, 0.1), seed=7, node_type="user"))
    assert not np.array_equal(split, node_level_splits(200_000, (0.8, 0.1, 0.1), seed=8, node_type="user"))


def test_by_node_every_node_has_one_split_for_all_its_tasks(crawl):
    tasks = _user_tasks(crawl)
    assert len(tasks) >= 2
    by_node, _ = make_splits(crawl, (0.6, 0.2, 0.2), seed=0, by="node")
    by_task, _ = make_splits(crawl, (0.6, 0.2, 0.2), seed=0, by="task")
    stacked = np.stack([by_node[t] for t in tasks])
    labelled = stacked != NONE
    for row in range(stacked.shape[1]):  # all labelled entries of a node agree
        assert len(set(stacked[labelled[:, row], row].tolist())) <= 1
    for task in tasks:
        mask = crawl.labels[task].mask
        assert np.array_equal(by_node[task] != NONE, mask) and np.array_equal(by_task[task] != NONE, mask)
        assert abs(np.mean(by_node[task][mask] == TRAIN) - 0.6) < 0.06
    mixed = np.stack([by_task[t] for t in tasks])
    both = (mixed != NONE).all(axis=0)
    assert (mixed[:, both] != mixed[0, both]).any()  # by task, some node is trained on one task and tested on another


def test_adding_a_task_does_not_move_the_others(crawl):
    tasks = _user_tasks(crawl)
    full, _ = make_splits(crawl, (0.8, 0.1, 0.1), seed=0)
    schema = crawl.schema.model_copy(update={"tasks": [t for t in crawl.schema.tasks if t.name != tasks[-1]]})
    fewer, _ = make_splits(type(crawl)(schema, crawl.nodes, crawl.edges, crawl.labels, crawl.report), (0.8, 0.1, 0.1), seed=0)
    assert all(np.array_equal(full[t], fewer[t]) for t in tasks[:-1])


def test_the_set_records_split_by_and_older_sets_read_as_by_task(tmp_path, crawl):
    from tests.helpers import small_schema, small_tables, write_crawl

    nodes, edges = small_tables()
    small = write_crawl(tmp_path / "crawl", small_schema(), nodes, edges)
    out = tmp_path / "parts"
    partition_crawl(small, out, PartitionSpec(num_parts=2, method="random", executor="local"))
    assert read_manifest(out).spec.split_by == "node"
    path = PartitionSet(out).manifest_path
    raw = json.loads(path.read_text())
    del raw["spec"]["split_by"]
    path.write_text(json.dumps(raw))
    assert read_manifest(out).spec.split_by == "task"
    with pytest.raises(Exception, match="split_by"):
        PartitionSpec(num_parts=2, split_by="edge")

