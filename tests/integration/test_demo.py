"""The README's main-job command, end to end in a fresh process: generate -> validate -> partition (+ check)
-> sample in a Ray actor -> train on 2 Ray Train workers; then every command that starts a local Ray,
each watched for sockets beyond loopback."""

import subprocess
import sys

from tests.helpers import ListenWatcher

CLI = [sys.executable, "-m", "graviti_dist.cli"]


def _watched(args, timeout=600):
    """Run a graviti command; (result, listening sockets it opened beyond loopback, all it opened).
    DDP's rendezvous store is among them (train/rendezvous.py binds it to the node address)."""
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = ListenWatcher(proc.pid)
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr), watcher.beyond_loopback(), watcher.seen


def test_demo_runs_end_to_end_and_every_local_ray_stays_on_loopback(tmp_path):
    demo = tmp_path / "demo"
    result, open_sockets, seen = _watched(["demo", "--out", str(demo), "--users", "800", "--epochs", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert seen and not open_sockets, open_sockets  # Ray started (sockets seen), all on 127.0.0.1
    out = result.stdout
    assert "[5/5]" in out and "--check passed" in out and "| interest | accuracy |" in out
    # A readable console: the steps, one line per epoch and the table; no Ray report dumps or DGL logs.
    console = out + result.stderr
    assert len(console.encode()) < 4096, console
    assert "epoch 1/2" in console and "epoch 2/2" in console
    assert "TrainingReport" not in console and "find_unused_parameters" not in console and "metis" not in console
    assert (demo / "partitions" / "manifest.json").exists()
    assert (demo / "run" / "metrics.jsonl").read_text().count("\n") == 2
    again = subprocess.run([*CLI, "demo", "--out", str(demo), "--users", "800"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "earlier demo" in again.stderr

    commands = {
        "generate": ["generate", "--users", "300", "--parallel", "--out", str(tmp_path / "crawl")],
        "partition": ["partition", str(tmp_path / "crawl"), "--out", str(tmp_path / "parts"), "--num-parts", "2",
                      "--executor", "ray"],
        "train": ["train", "--set", f"partitions={demo / 'partitions'}", "--set", f"out={tmp_path / 'run'}",
                  "--set", "epochs=1", "--set", "num_workers=1", "--set", "model.hidden=16"],
        "infer": ["infer", str(demo / "run"), "--partitions", str(demo / "partitions"), "--out", str(tmp_path / "pred"),
                  "--executor", "ray"],
    }
    for name, args in commands.items():
        result, open_sockets, seen = _watched(args)
        assert result.returncode == 0, (name, result.stderr[-3000:])
        assert seen and not open_sockets, (name, open_sockets)
        if name == "train":  # DDP's rendezvous store was among what the watch saw, on loopback
            assert any(proc.startswith("ray::RayTrainWorker") for proc, _, _ in seen), seen
