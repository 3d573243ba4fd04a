"""`ray start --head` on loopback + `ray job submit` of a 2-worker CPU training job on the real Twitch crawl.

Runs last (see conftest): `ray stop` ends every Ray process on the machine.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from graviti_dist.partition import PartitionSpec, partition_crawl

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ray_cluster
def test_ray_job_submit_trains_on_twitch(twitch_crawl, tmp_path, ray_local):
    parts = tmp_path / "parts"
    partition_crawl(twitch_crawl, parts, PartitionSpec(num_parts=2))
    # The job's `python` is the head node's: put this virtualenv first on its PATH, as a cluster image would.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    port, dashboard = _free_port(), _free_port()
    temp_dir = Path("/tmp") / f"gr{os.getpid()}"  # short: Ray's socket paths have a length limit
    start = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard}", "--num-cpus=2", f"--temp-dir={temp_dir}", "--include-dashboard=true"]
    ray_local.shutdown()  # the session's in-process Ray would compete for the 2 cores
    try:
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stderr[-2000:]
        run_dir = tmp_path / "run"
        submit = [str(REPO / "launch" / "submit_train.sh"), f"http://127.0.0.1:{dashboard}",
                  str(REPO / "launch" / "train.example.yaml"), "--set", f"partitions={parts}", "--set", f"out={run_dir}",
                  "--set", "epochs=2", "--set", "early_stopping=null", "--set", "model.hidden=16"]
        job = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
        assert "succeeded" in (job.stdout + job.stderr).lower()  # ray prints "Job 'raysubmit_...' succeeded"
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 2 and (run_dir / "test_metrics.json").exists()
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
