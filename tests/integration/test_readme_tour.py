"""The README's "A first session on real data", run exactly as written.

Every ```bash block between the README's tour markers is joined into one script and run with
``bash -e`` in a copy of this checkout that has ``../shared/datasets`` beside it, as a user's
fresh clone would, with the virtualenv's ``bin`` first on the PATH (what ``source
.venv/bin/activate`` does): import, inspect, partition, ``graviti train``, a token-auth Ray head
from ``launch/local_ray.sh`` with ``launch/submit_train.sh``, ``graviti infer``, ``graviti serve``
with ``curl``. The commands are never edited here; only the environment is ours (a private HOME
for Ray's token, a short state folder for the head). The test also watches every process the
tour starts, daemons included, for sockets beyond loopback, and checks that nothing it started
is left running.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.helpers import ListenWatcher

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SUBMIT = REPO / "launch" / "submit_train.sh"
# The tour spells these ports out (launch/local_ray.sh's defaults, Ray's own, and serve's --port).
TOUR_PORTS = {6379: "Ray's GCS from launch/local_ray.sh", 8265: "Ray's dashboard and job API", 8000: "graviti serve --port 8000"}
TOUR_TIMEOUT_S = 900  # about 2 minutes idle on 2 cores; CI runs it after the rest of the suite
MARKER = "GRAVITI_TOUR_ID"


def tour_script(readme: str) -> str:
    """The bash blocks between ``<!-- tour:begin`` and ``<!-- tour:end -->``, in order."""
    begin, end = readme.find("<!-- tour:begin"), readme.find("<!-- tour:end -->")
    assert 0 <= begin < end, "README.md lost its tour markers (<!-- tour:begin ... --> / <!-- tour:end -->)"
    blocks = re.findall(r"```bash\n(.*?)```", readme[begin:end], re.S)
    assert blocks, "no ```bash block between the README's tour markers"
    return "".join(blocks)


def copy_checkout(dst: Path) -> None:
    """Tracked and untracked-but-not-ignored files, as a fresh clone of this tree would have them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def marked_processes(value: str) -> list[str]:
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and proc.environ().get(MARKER) == value:
                found.append(f"{proc.pid} {proc.info['name']}")
        except psutil.Error:
            pass
    return found


@pytest.mark.ray_cluster
def test_readme_first_session_runs_verbatim(datasets, tmp_path, ray_local):
    script = tour_script(README.read_text())
    taken = [f"{port} ({what})" for port, what in TOUR_PORTS.items() if listening(port)]
    assert not taken, f"the README's tour needs these loopback ports free: {taken}"
    clone = tmp_path / "graviti-dist"
    copy_checkout(clone)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "datasets").symlink_to(datasets)
    (tmp_path / "home").mkdir()
    venv_bin = Path(sys.executable).parent
    marker = secrets.token_hex(8)
    state = Path(f"/tmp/grt{os.getpid()}")  # short: Ray's socket paths under it must fit AF_UNIX's 107 bytes
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # ray_local set RAY_AUTH_MODE
    env.update(PATH=f"{venv_bin}:{env['PATH']}", VIRTUAL_ENV=str(venv_bin.parent), HOME=str(tmp_path / "home"),
               GRAVITI_LOCAL_RAY=str(state), RAY_USAGE_STATS_ENABLED="0", **{MARKER: marker})
    ray_local.shutdown()  # the session's in-process Ray would compete for the 2 cores
    watcher = ListenWatcher(marker=(MARKER, marker))
    log = tmp_path / "tour.log"
    with log.open("w") as out:
        tour = subprocess.Popen(["bash", "-euxo", "pipefail", "-c", script], cwd=clone, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            tour.wait(timeout=TOUR_TIMEOUT_S)
        finally:
            if tour.poll() is None:
                os.killpg(tour.pid, signal.SIGKILL)
            subprocess.run([str(clone / "launch" / "local_ray.sh"), "stop"], cwd=clone, env=env, capture_output=True,
                           timeout=120)
    console = log.read_text()
    assert tour.returncode == 0, console[-6000:]

    # What each step left, where the README says it goes.
    assert (clone / "crawls" / "twitch" / "graph.yaml").exists()
    assert (clone / "partitions" / "twitch" / "manifest.json").exists()
    for run in ("twitch", "twitch-job"):  # the job's relative out= landed beside the local run, not in Ray's copy
        assert len((clone / "runs" / run / "metrics.jsonl").read_text().splitlines()) == 3, run
        assert (clone / "runs" / run / "test_metrics.json").exists(), run
    assert "succeeded" in console.lower()  # ray job submit: "Job 'raysubmit_...' succeeded"
    predictions = ds.dataset(clone / "predictions" / "twitch" / "predictions" / "user").to_table(columns=["id", "mature"])
    assert predictions.num_rows == 9038
    by_id = dict(zip(map(str, predictions["id"].to_pylist()), predictions["mature"].to_pylist(), strict=True))
    answer, _ = json.JSONDecoder().raw_decode(console[console.index('{"predictions"'):])
    assert not answer["unknown"] and set(answer["predictions"]) == {"62554112", "47886332"}
    for raw_id, node in answer["predictions"].items():  # serve answers what infer wrote
        assert node["predictions"]["mature"]["probability"] == pytest.approx(by_id[raw_id], abs=1e-5)

    # Loopback only, for everything the tour started (the setsid'ed head included), and nothing left running.
    deadline = time.time() + 60
    while marked_processes(marker) and time.time() < deadline:
        time.sleep(1)
    opened = watcher.stop()
    assert {8265, 8000} <= {port for _, _, port in opened}, opened  # the watch saw the head and the service
    assert not [s for s in opened if s[1] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")], opened
    assert not marked_processes(marker), f"left running after the tour: {marked_processes(marker)}"
    assert not state.exists()


def test_submit_script_says_what_to_set_without_a_token(tmp_path):
    """Before contacting any head: no token anywhere -> exit 2 with the export to do; a missing
    config is named."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token
    config = str(REPO / "launch" / "train.example.yaml")
    refused = subprocess.run([str(SUBMIT), "http://127.0.0.1:9", config, "--set", "out=runs/x"], env=env,
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode == 2 and "export RAY_AUTH_TOKEN" in refused.stderr, refused.stderr
    missing = subprocess.run([str(SUBMIT), "http://127.0.0.1:9", "nope.yaml"], env=env, capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
    assert missing.returncode == 2 and "nope.yaml: no such file" in missing.stderr, missing.stderr
