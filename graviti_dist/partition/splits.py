"""Deterministic train/validation/test splits, per task.

Each task gets its own random stream (seed + task name), so adding a task does
not reshuffle the others. Nodes without a label for a task are in no split.
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


def make_splits(crawl: Crawl, fractions: tuple[float, float, float], seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(node task -> split of each node of its type, link task -> split of each edge of its relation)."""
    node_splits, link_splits = {}, {}
    for task in crawl.schema.tasks:
        if task.is_link:
            link_splits[task.name] = assign_splits(np.ones(len(crawl.edges[task.relation]), bool), fractions, seed, task.name)
        else:
            node_splits[task.name] = assign_splits(crawl.labels[task.name].mask, fractions, seed, task.name)
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
