"""Deterministic train/validation/test splits, per task.

Each task gets its own random stream (seed + task name), so adding a task does
not reshuffle the others. Nodes without a label for a task are in no split.
"""

from __future__ import annotations

import zlib

import numpy as np

TRAIN, VAL, TEST, NONE = 0, 1, 2, -1
SPLIT_NAMES = ("train", "val", "test")


def check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6 or fractions[0] <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1 with train > 0, got {fractions}")
    return tuple(float(f) for f in fractions)


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
