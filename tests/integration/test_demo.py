"""The README's main-job command, end to end in a fresh process: generate -> validate -> partition (+ check)
-> sample in a Ray actor -> train on 2 Ray Train workers."""

import subprocess
import sys


def test_demo_runs_end_to_end(tmp_path):
    command = [sys.executable, "-m", "graviti_dist.cli", "demo", "--out", str(tmp_path / "demo"), "--users", "800",
               "--epochs", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "[5/5]" in out and "--check passed" in out and "| interest | accuracy |" in out
    # A readable console: the steps, one line per epoch and the table; no Ray report dumps or DGL logs.
    console = out + result.stderr
    assert len(console.encode()) < 4096, console
    assert "epoch 1/2" in console and "epoch 2/2" in console
    assert "TrainingReport" not in console and "find_unused_parameters" not in console and "metis" not in console
    assert (tmp_path / "demo" / "partitions" / "manifest.json").exists()
    assert (tmp_path / "demo" / "run" / "metrics.jsonl").read_text().count("\n") == 2
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "earlier demo" in again.stderr
