"""Shared fixtures: real datasets in ../shared, small hand-made crawls, one Ray per session."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("GRAVITI_DATASETS", REPO.parent / "shared" / "datasets"))


def pytest_collection_modifyitems(config, items):
    import torch

    # `ray stop` in the job-submission test ends every Ray process on the machine: run it last.
    items.sort(key=lambda item: "ray_cluster" in item.keywords)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def datasets() -> Path:
    """../shared/datasets, read in place (never copied into the repo)."""
    if not (DATASETS / "twitch" / "ENGB").is_dir():
        pytest.skip(f"real datasets not found at {DATASETS} (set GRAVITI_DATASETS)")
    return DATASETS


@pytest.fixture(scope="session")
def twitch_crawl(tmp_path_factory, datasets) -> Path:
    """ENGB + PTBR imported once per session."""
    from graviti_dist.crawl.importers import import_twitch

    out = tmp_path_factory.mktemp("twitch") / "crawl"
    import_twitch([datasets / "twitch" / "ENGB", datasets / "twitch" / "PTBR"], out)
    return out


def write_crawl(root: Path, schema: dict, nodes: dict[str, list[pa.Table]], edges: dict[str, list[pa.Table]]) -> Path:
    """Write a crawl by hand (so tests can also write broken ones)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "graph.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    for folder, tables in (("nodes", nodes), ("edges", edges)):
        for name, shards in tables.items():
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            for i, table in enumerate(shards):
                pq.write_table(table, root / folder / name / f"part-{i:05d}.parquet")
    return root


def small_schema() -> dict:
    return {
        "name": "small",
        "node_types": {
            "user": {"features": [{"name": "x", "kind": "vector", "width": 2}, {"name": "region", "kind": "categorical"}],
                     "labels": ["bot", "topic"]},
            "post": {"features": [{"name": "age", "kind": "numeric"}], "labels": []},
        },
        "relations": {
            "follows": {"src": "user", "dst": "user"},
            "authored": {"src": "user", "dst": "post", "attributes": ["ts"]},
        },
        "tasks": [
            {"name": "bot", "type": "binary", "node_type": "user", "label": "bot"},
            {"name": "topic", "type": "multiclass", "node_type": "user", "label": "topic"},
            {"name": "rec", "type": "link", "relation": "authored"},
        ],
    }


def small_tables() -> tuple[dict, dict]:
    users = pa.table({
        "id": ["a", "b", "c", "d"],
        "x": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], None], pa.list_(pa.float32())),
        "region": ["eu", "us", "eu", None],
        "bot": pa.array([True, None, False, False]),
        "topic": pa.array(["sport", "music", None, "sport"]),
    })
    posts = pa.table({"id": ["p1", "p2", "p3"], "age": pa.array([1.0, float("nan"), 3.0])})
    follows = pa.table({"src": ["a", "b", "c", "a"], "dst": ["b", "c", "a", "c"]})
    authored = pa.table({"src": ["a", "a", "b"], "dst": ["p1", "p2", "p3"], "ts": pa.array([10, 20, 30], pa.int64())})
    return {"user": [users], "post": [posts]}, {"follows": [follows], "authored": [authored]}


@pytest.fixture
def small_crawl(tmp_path) -> Path:
    nodes, edges = small_tables()
    return write_crawl(tmp_path / "small", small_schema(), nodes, edges)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray per test session, stopped at the end."""
    import ray

    from graviti_dist.runtime.runtime_env import ray_runtime_env

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=ray_runtime_env(num_threads=1), log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
