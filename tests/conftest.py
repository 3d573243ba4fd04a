"""Shared fixtures: real datasets in ../shared, small hand-made crawls, one Ray per session.

Tests declare their cost: everything under tests/integration, and any test that uses Ray
(``ray_local``) or the real datasets (``datasets``, ``twitch_crawl``), is marked ``slow``
here; ``pytest -m "not slow"`` is the quick lane. tests/unit may not start Ray at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import small_schema, small_tables, write_crawl

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("GRAVITI_DATASETS", REPO.parent / "shared" / "datasets"))


SLOW_FIXTURES = {"ray_local", "datasets", "twitch_crawl"}


def pytest_collection_modifyitems(config, items):
    import torch

    for item in items:
        in_unit = "tests/unit/" in item.nodeid or item.nodeid.startswith("unit/")
        if in_unit and "ray_local" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(f"{item.nodeid}: tests/unit is Ray-free; move it to tests/integration")
        if not in_unit or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

    # Tests that start Ray nodes of their own shut the session's in-process Ray down: run them last.
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


@pytest.fixture
def small_crawl(tmp_path) -> Path:
    nodes, edges = small_tables()
    return write_crawl(tmp_path / "small", small_schema(), nodes, edges)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray per test session, stopped at the end."""
    import ray

    from graviti_dist.runtime.ray_cluster import ray_session

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # on loopback only (ray_session), so nobody else reaches it
    with ray_session(num_cpus=2, num_threads=1):
        yield ray
