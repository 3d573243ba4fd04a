"""Deterministic train/validation/test splits of node tasks (by node or by task) and link tasks.

By node (the default): each node of a type draws one number from the type's random stream
(seed + node type) and falls in the same split for every task it is labelled for, so a test
node's correlated targets (``views`` and ``days`` of one Twitch user) are never trained on.
The fractions then hold in expectation, not exactly. By task: each task shuffles its own
labelled nodes (seed + task name) and cuts exact fractions; one node can be in the test split
of one task and the training split of another. Either way adding a task does not reshuffle the
others, and nodes without a label for a task are in no split. Link tasks split their edges.
"""

from __future__ import annotations

import zlib

import numpy as np

from graviti_dist.crawl import Crawl

TRAIN, VAL, TEST, NONE = 0, 1, 2, -1
SPLIT_NAMES = ("train", "val", "test")


def _rng(seed: int, task: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


def assign_splits(eligible: np.ndarray, fractions: tuple[float, float, float], seed: int, task: str) -> np.ndarray:
    """int8 split id per item: TRAIN/VAL/TEST for ``eligible`` items (bool mask), NONE otherwise."""
    split = np.full(eligible.shape[0], NONE, dtype=np.int8)
    items = np.flatnonzero(eligible)
    order = _rng(seed, task).permutation(items)
    n_train = int(round(fractions[0] * len(items)))
    n_val = int(round(fractions[1] * len(items)))
    split[order[:n_train]] = TRAIN
    split[order[n_train:n_train + n_val]] = VAL
    split[order[n_train + n_val:]] = TEST
    return split


def node_level_splits(num_nodes: int, fractions: tuple[float, float, float], seed: int, node_type: str) -> np.ndarray:
    """TRAIN/VAL/TEST for every node of ``node_type``: one uniform draw per node against the fractions."""
    draw = _rng(seed, f"node:{node_type}").random(num_nodes)
    return np.where(draw < fractions[0], TRAIN, np.where(draw < fractions[0] + fractions[1], VAL, TEST)).astype(np.int8)


def make_splits(crawl: Crawl, fractions: tuple[float, float, float], seed: int,
                by: str = "node") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(node task -> split of each node of its type, link task -> split of each edge of its relation);
    node tasks split ``by`` node (one split per node for all its tasks) or by task."""
    node_splits, link_splits, per_type = {}, {}, {}
    for task in crawl.schema.tasks:
        if task.is_link:
            link_splits[task.name] = assign_splits(np.ones(len(crawl.edges[task.relation]), bool), fractions, seed, task.name)
            continue
        labelled = crawl.labels[task.name].mask
        if by == "task":
            node_splits[task.name] = assign_splits(labelled, fractions, seed, task.name)
            continue
        if task.node_type not in per_type:
            per_type[task.node_type] = node_level_splits(labelled.shape[0], fractions, seed, task.node_type)
        node_splits[task.name] = np.where(labelled, per_type[task.node_type], NONE).astype(np.int8)
    return node_splits, link_splits


def split_masks(node_splits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Boolean node data ``<split>_<task>`` for every node task and split (what the sampler reads)."""
    return {f"{name}_{task}": split == i for task, split in node_splits.items() for i, name in enumerate(SPLIT_NAMES)}


def message_passing_crawl(crawl: Crawl, link_splits: dict[str, np.ndarray]) -> Crawl:
    """The crawl without validation/test link edges: a model must not see the edges it is tested on."""
    edges = dict(crawl.edges)
    for task in crawl.schema.tasks:
        if task.is_link:
            edges[task.relation] = edges[task.relation].select(link_splits[task.name] == TRAIN)
    return Crawl(crawl.schema, crawl.nodes, edges, crawl.labels, crawl.report)
