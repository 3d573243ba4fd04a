"""`ray start --head` on loopback with token auth on (Ray's default) + `launch/submit_train.sh` of a
2-worker CPU training job on the real Twitch crawl, with the launch example config as is.

The head runs in a session of its own (`ray start --block`) and is stopped by killing exactly
that session: never `ray stop`, which ends every Ray process on the machine.
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from graviti_dist.partition import PartitionSpec, partition_crawl
from tests.helpers import free_port, ray_node, stop_node, wait_for

REPO = Path(__file__).resolve().parents[2]
SUBMIT = str(REPO / "launch" / "submit_train.sh")


@pytest.mark.ray_cluster
def test_ray_job_submit_with_token_auth_trains_on_twitch(twitch_crawl, tmp_path, ray_local):
    parts = tmp_path / "parts"
    partition_crawl(twitch_crawl, parts, PartitionSpec(num_parts=2))
    # The job's `python` is the head node's: put this virtualenv first on its PATH, as a cluster image would.
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    base.update(RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp_path / "home"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    token = secrets.token_hex(16)
    port, dashboard = free_port(), free_port()
    ray_local.shutdown()  # the session's in-process Ray would compete for the 2 cores
    head = ray_node(["--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                     f"--temp-dir=/tmp/gr{os.getpid()}"], {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
                    num_cpus=2)
    try:
        wait_for(f"http://127.0.0.1:{dashboard}/api/version", 120)
        run_dir = tmp_path / "run"
        submit = [SUBMIT, f"http://127.0.0.1:{dashboard}", str(REPO / "launch" / "train.example.yaml"),
                  "--set", f"partitions={parts}", "--set", f"out={run_dir}", "--set", "epochs=2", "--set", "model.hidden=16"]
        # Without a token the script says what to set, and submits nothing.
        refused = subprocess.run(submit, env=base, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert refused.returncode == 2 and "export RAY_AUTH_TOKEN" in refused.stderr and not run_dir.exists()
        # With the head's token (and RAY_AUTH_MODE unset) it switches token auth on by itself.
        job = subprocess.run(submit, env={**base, "RAY_AUTH_TOKEN": token}, capture_output=True, text=True, timeout=600,
                             cwd=REPO)
        assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
        assert "succeeded" in (job.stdout + job.stderr).lower()  # ray prints "Job 'raysubmit_...' succeeded"
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 2 and (run_dir / "test_metrics.json").exists()
    finally:
        stop_node(head)
