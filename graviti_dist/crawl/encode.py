"""Turn raw Arrow columns into model-ready numpy arrays: features and task labels.

Nulls and NaNs in label columns mean "no label for this task on this node":
they become ``mask == False``, never an error. Values that cannot be a label
of the task's type (a 3 in a binary column, a negative count under log1p) are
errors that name the column and show examples.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graviti_dist.crawl.schema import Feature, Task
from graviti_dist.crawl.tables import FeatureArray, TaskLabels
from graviti_dist.errors import GravitiError, examples


def _present_mask(column: pa.ChunkedArray) -> np.ndarray:
    mask = pc.is_valid(column)
    if pa.types.is_floating(column.type):
        mask = pc.and_(mask, pc.invert(pc.is_nan(column)))
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def refuse_non_finite(values: np.ndarray, what: str, allow_nan: bool = False) -> None:
    """Refuse inf (and, unless ``allow_nan``, NaN) in ``values``, naming rows. A value beyond
    float32's range (1e308) counts: it becomes inf in the model's float32, and one inf erased a
    feature for a whole partition through standardisation."""
    if values.size == 0:
        return
    rows = values.reshape(len(values), -1)
    bad = np.isinf(rows) if allow_nan else ~np.isfinite(rows)
    where = np.flatnonzero(bad.any(axis=1))
    if where.size:
        shown = rows[where[:5]][bad[where[:5]]]
        raise GravitiError(f"{what}: non-finite values {examples(shown.tolist())} (inf, NaN, or beyond float32's "
                           f"±3.4e38) in rows {examples(where.tolist())}; fix or null them (null = missing)")


def _sorted_unique(values: pa.ChunkedArray) -> list:
    unique = pc.unique(values.drop_null() if hasattr(values, "drop_null") else values).to_pylist()
    return sorted(unique)


def encode_feature(feature: Feature, column: pa.ChunkedArray, where: str) -> FeatureArray:
    """Encode one feature column (``where`` names the node folder in errors)."""
    n = len(column)
    if feature.kind == "numeric":
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, which the next line refuses
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float32)
        refuse_non_finite(values, f"{where}: numeric feature {feature.name!r}", allow_nan=True)
        missing = int(np.isnan(values).sum())
        values = np.nan_to_num(values, nan=0.0).reshape(n, 1)
        return FeatureArray("numeric", values, 1, missing=missing)
    if feature.kind == "vector":
        return FeatureArray("vector", _fixed_width_floats(feature, column, where), feature.width)
    if feature.kind == "categorical":
        categories = _sorted_unique(column)
        if feature.num_categories is not None and len(categories) > feature.num_categories:
            raise GravitiError(
                f"{where}: categorical feature {feature.name!r} has {len(categories)} distinct values, "
                f"more than its declared num_categories={feature.num_categories}"
            )
        codes = pc.index_in(column, value_set=pa.array(categories, type=column.type))
        missing = codes.null_count
        # Missing categories share one extra code so the model can learn an "unknown" vector.
        codes = pc.fill_null(codes, len(categories)).to_numpy(zero_copy_only=False).astype(np.int64)
        return FeatureArray("categorical", codes, 1, categories=categories, missing=int(missing))
    return FeatureArray("multihot", _padded_indices(feature, column, where), feature.width)


def _list_parts(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lengths, flat values, valid) of a list column, nulls as empty lists."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(array).to_numpy(zero_copy_only=False)
    return lengths, flat, valid


def _fixed_width_floats(feature: Feature, column: pa.ChunkedArray, where: str) -> np.ndarray:
    lengths, flat, valid = _list_parts(column)
    bad = np.flatnonzero(valid & (lengths != feature.width))
    if bad.size:
        raise GravitiError(
            f"{where}: vector feature {feature.name!r} must have {feature.width} values per row; "
            f"rows {examples(bad.tolist())} have {examples(lengths[bad].tolist())}"
        )
    out = np.zeros((len(lengths), feature.width), dtype=np.float32)
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, which the next line refuses
        out[valid] = np.asarray(flat, dtype=np.float32).reshape(-1, feature.width)
    refuse_non_finite(out, f"{where}: vector feature {feature.name!r}", allow_nan=True)
    return np.nan_to_num(out, nan=0.0)


def _padded_indices(feature: Feature, column: pa.ChunkedArray, where: str) -> np.ndarray:
    lengths, flat, _ = _list_parts(column)
    flat = np.asarray(flat, dtype=np.int64)
    bad = flat[(flat < 0) | (flat >= feature.width)]
    if bad.size:
        raise GravitiError(
            f"{where}: multihot feature {feature.name!r} has indices outside [0, {feature.width}): {examples(bad.tolist())}"
        )
    width = int(lengths.max()) if lengths.size else 0
    out = np.full((len(lengths), max(width, 1)), -1, dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(flat.size) - np.repeat(starts, lengths)
    out[rows, cols] = flat
    return out


def encode_labels(task: Task, column: pa.ChunkedArray, where: str) -> TaskLabels:
    """Encode the label column of a node ``task``; nulls/NaN become unlabelled."""
    what = f"{where}: label column {task.label!r} (task {task.name!r}, {task.type})"
    mask = _present_mask(column)
    if task.type == "multiclass":
        return _multiclass(task, column, mask, what)
    if task.type == "multilabel":
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) \
                or not pa.types.is_integer(column.type.value_type):
            raise GravitiError(f"{what}: has type {column.type}, expected list<int> of the node's active labels")
        lengths, flat, valid = _list_parts(column)
        flat = np.asarray(flat, dtype=np.int64)
        bad = flat[(flat < 0) | (flat >= task.width)]
        if bad.size:
            raise GravitiError(f"{what}: label indices outside [0, {task.width}): {examples(bad.tolist())}")
        values = np.zeros((len(lengths), task.width), dtype=np.float32)
        values[np.repeat(np.arange(len(lengths)), lengths), flat] = 1.0
        return TaskLabels(values, valid)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type)):
        raise GravitiError(f"{what}: has type {column.type}, expected numbers or booleans")
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(over="ignore"):
        refuse_non_finite(np.where(mask, values, 0.0).astype(np.float32), what)
    if task.type == "binary":
        bad = values[mask & (values != 0) & (values != 1)]
        if bad.size:
            raise GravitiError(f"{what}: binary labels must be 0/1 or true/false (null = unlabelled); found {examples(np.unique(bad).tolist())}")
    elif task.transform == "log1p":
        bad = values[mask & (values <= -1)]
        if bad.size:
            raise GravitiError(f"{what}: log1p needs values > -1; found {examples(np.unique(bad).tolist())}")
        values = np.log1p(np.where(mask, values, 0.0))
    values = np.where(mask, values, 0.0).astype(np.float32)
    return TaskLabels(values, mask)


def _multiclass(task: Task, column: pa.ChunkedArray, mask: np.ndarray, what: str) -> TaskLabels:
    if len(column) == 0:  # an empty node type: nothing to check; callers report the emptiness itself
        return TaskLabels(np.zeros(0, dtype=np.int64), mask, classes=[])
    if pa.types.is_floating(column.type):
        raw = column.to_numpy(zero_copy_only=False)
        if np.any(mask & (raw != np.round(raw))):
            raise GravitiError(f"{what}: class labels must be integers or strings, found fractional values")
        column = pc.cast(pc.if_else(pa.array(mask), column, None), pa.int64())
    if not (pa.types.is_integer(column.type) or pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise GravitiError(f"{what}: has type {column.type}, expected integer or string classes")
    classes = _sorted_unique(column)
    if task.num_classes is not None:
        if pa.types.is_integer(column.type):
            bad = [c for c in classes if not 0 <= c < task.num_classes]
            if bad:
                raise GravitiError(f"{what}: classes outside [0, {task.num_classes}): {examples(bad)}")
            classes = list(range(task.num_classes))
        elif len(classes) > task.num_classes:
            raise GravitiError(f"{what}: {len(classes)} distinct classes, more than num_classes={task.num_classes}")
    if len(classes) < 2:
        raise GravitiError(f"{what}: needs at least two classes among labelled rows, found {classes}")
    codes = pc.index_in(column, value_set=pa.array(classes, type=column.type))
    values = pc.fill_null(codes, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return TaskLabels(values, mask, classes=classes)
