"""The README's main-job command, end to end: generate -> validate -> partition (+ check) -> sample in a Ray actor."""

import pytest

from graviti_dist.demo import run_demo
from graviti_dist.errors import GravitiError


def test_demo_runs_end_to_end(tmp_path, ray_local, capsys):
    summary = run_demo(tmp_path / "demo", users=800, epochs=2)
    out = capsys.readouterr().out
    assert "[5/5]" in out and "--check passed" in out and "| interest | accuracy |" in out
    assert set(summary["test_metrics"]) == {"interest", "influence", "is_bot", "is_rumor"}
    assert summary["node_types"]["user"]["count"] == 600 and len(summary["tasks"]) == 5
    last = summary["sampled_blocks"][-1]
    assert last["dst_nodes"] > 0 and last["edges"] > 0
    assert (tmp_path / "demo" / "partitions" / "manifest.json").exists()
    with pytest.raises(GravitiError, match="earlier demo"):
        run_demo(tmp_path / "demo", users=800)
