"""What keeps the last good output alive, without Ray: publishing whole, recovering an interrupted
replacement, removing dead builds, the run lock, resume compatibility and the driver's console."""

import json
import os
import subprocess
import sys

import pytest

from graviti_dist.errors import FieldError, GravitiError
from graviti_dist.runtime import output
from graviti_dist.runtime.output import check_output, publish, recover, remove_stale_staging, staging_dir
from graviti_dist.train import TrainConfig
from graviti_dist.train.config import resume_conflicts
from graviti_dist.train.console import epoch_line
from graviti_dist.train.run_dir import RunDir, RunLock, driver_holds_lock, lock_path
from graviti_dist.train.trainer import _training_failure


def _tree(path):
    return {p.relative_to(path).as_posix(): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_publish_replaces_whole_with_or_without_an_atomic_exchange(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(output, "_exchange", lambda a, b: False)
    out, new = tmp_path / "out", tmp_path / ".new"
    out.mkdir(), new.mkdir()
    (out / "old.txt").write_text("old")
    (new / "a" / "b.txt").parent.mkdir()
    (new / "a" / "b.txt").write_text("new")
    publish(new, out)
    assert _tree(out) == {"a/b.txt": "new"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupted_replacement_is_recovered_by_the_next_writer_and_reader(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("partitions: x\n")
    out.rename(tmp_path / ".run.old-1a2b3c4d")  # a replacement killed between its two renames
    assert not out.exists()
    with pytest.raises(FieldError, match="already exists"):
        check_output(out, overwrite=False)  # restored first, so it is refused like any existing output
    assert _tree(out) == {"config.yaml": "partitions: x\n"}
    assert not recover(out)  # nothing left to restore
    out.rename(tmp_path / ".run.old-5e6f7a8b")
    with pytest.raises(GravitiError, match="no best_model.pt"):
        from graviti_dist.train import load_run
        load_run(out)  # the reader restores it too (then finds the run unfinished)
    assert out.is_dir()


def test_builds_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    out = tmp_path / "parts"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = staging_dir(out)
    stale = tmp_path / live.name.replace(f"-{os.getpid()}-", f"-{dead.stdout.strip()}-")
    other_host = tmp_path / f".parts.tmp-elsewhere-{dead.stdout.strip()}-00000000"
    for d in (live, stale, other_host):
        d.mkdir()
    assert remove_stale_staging(out) == [stale]
    assert live.exists() and other_host.exists() and not stale.exists()


def test_outputs_get_their_parent_folders_but_never_a_file_as_one(tmp_path):
    check_output(tmp_path / "a" / "b" / "crawl", overwrite=False)
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FieldError, match="is a file, not a folder"):
        check_output(tmp_path / "file" / "crawl", overwrite=False)


def test_a_run_lock_refuses_a_second_holder_and_tells_workers_when_the_driver_is_gone(tmp_path):
    out = tmp_path / "run"
    assert driver_holds_lock(out, "abc")  # no lock file: not started by graviti train
    with RunLock(out, "abc"):
        holder = json.loads(lock_path(out).read_text())
        assert holder["pid"] == os.getpid() and holder["run_id"] == "abc"
        with pytest.raises(GravitiError, match=rf"{out} is in use by another graviti train .*\"pid\": {os.getpid()}"):
            with RunLock(out, "def"):
                pass
        assert driver_holds_lock(out, "abc") and not driver_holds_lock(out, "other-run")
    assert not driver_holds_lock(out, "abc")  # released: the driver is gone
    held = subprocess.Popen([sys.executable, "-c", "import sys, time; from graviti_dist.train.run_dir import RunLock\n"
                             f"with RunLock({str(out)!r}, 'xyz'):\n    print('held', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    assert held.stdout.readline().strip() == "held"
    assert driver_holds_lock(out, "xyz")
    held.kill(), held.wait()  # SIGKILL: the kernel releases the lock
    assert not driver_holds_lock(out, "xyz")
    with RunLock(out, "next"):
        pass


def test_resume_refuses_settings_that_reshape_the_checkpoint_and_allows_the_rest():
    stored = TrainConfig(partitions="/p", tasks=["a", "b"], model={"hidden": 32})
    allowed = stored.model_copy(update={"epochs": 50, "num_workers": 4, "optim": {"lr": 1e-4},
                                        "model": stored.model.model_copy(update={"dropout": 0.3})})
    assert resume_conflicts(stored, allowed) == []
    changed = stored.model_copy(update={"tasks": ["a"], "balancing": "dwa",
                                        "model": stored.model.model_copy(update={"hidden": 64, "fanouts": [5]})})
    assert resume_conflicts(stored, changed) == ["tasks is ['a', 'b'] in the run and ['a'] now",
                                                 "balancing is 'uncertainty' in the run and 'dwa' now",
                                                 "model.hidden is 32 in the run and 64 now",
                                                 "model.fanouts is [10, 10] in the run and [5] now"]


def test_run_dir_files_are_replaced_whole_and_the_build_dir_is_never_recorded(tmp_path):
    run = RunDir(tmp_path / "run")
    config = TrainConfig(partitions="/p", out=str(run.path), build_dir=str(tmp_path / ".run.tmp-x"))
    run.write_config(config)
    run.write_test_metrics({"a": {"accuracy": 0.5}}, "| table |\n")
    run.save_best_model({"w": 1})
    assert run.read_config().build_dir is None and run.read_config().out == str(run.path)
    assert sorted(p.name for p in run.path.iterdir()) == ["best_model.pt", "config.yaml", "test_metrics.json",
                                                          "test_metrics.md"]  # no temporary left beside them


def test_one_console_line_per_epoch_with_the_metric_that_selects():
    record = {"epoch": 2, "seeds_per_s": 5210.4, "loss/a": 1.0, "loss/b": 1.314, "val/a/accuracy": 0.8123,
              "val/a/loss": 0.5, "val/b/rmse": 1.5, "val/b/count": 10, "best_epoch": 1}
    assert epoch_line(record, 10) == ("epoch 3/10  5,210 seeds/s  loss 2.3140  val a/accuracy 0.8123 b/rmse 1.5000  "
                                      "(best epoch 2)")
    assert epoch_line(record, 10, metric="b/rmse").endswith("val b/rmse 1.5000  (best epoch 2)")
    assert epoch_line({"epoch": 0, "seeds_per_s": 10.0, "loss/a": 2.0}, 1) == "epoch 1/1  10 seeds/s  loss 2.0000"


def test_a_training_failure_names_each_distinct_worker_error_without_tracebacks():
    class WorkerGroupError(Exception):
        def __init__(self, failures):
            super().__init__("Training failed due to worker errors:\nTraceback ...")
            self.worker_failures = failures

    error = _training_failure(WorkerGroupError({0: FileNotFoundError("part1/graph.dgl"), 1: FileNotFoundError("part1/graph.dgl"),
                                                2: GravitiError("tasks: 'x' is not a task")}))
    assert str(error) == ("training failed: worker 0, 1: FileNotFoundError: part1/graph.dgl; worker 2: tasks: 'x' is not "
                          "a task (full tracebacks: --verbose, or the workers' Ray logs)")
    assert "Traceback" not in str(_training_failure(RuntimeError("Traceback (most recent call last):\n  ...\nValueError: bad")))


def test_resources_the_cluster_cannot_place_are_refused_before_training():
    from graviti_dist.train.trainer import check_resources

    check_resources(TrainConfig(partitions="/p", num_workers=2), {"CPU": 2.0})
    check_resources(TrainConfig(partitions="/p", num_workers=2, device="cuda"), {"CPU": 16.0, "GPU": 2.0})
    with pytest.raises(FieldError, match=r"device cannot be placed: 2 GPUs wanted \(one per worker\), the Ray cluster has 0"):
        check_resources(TrainConfig(partitions="/p", num_workers=2, device="cuda"), {"CPU": 2.0})
    with pytest.raises(FieldError, match=r"num_workers cannot be placed: 4 CPUs wanted .* has 2\. Use num_workers <= 2"):
        check_resources(TrainConfig(partitions="/p", num_workers=4), {"CPU": 2.0})


def test_a_filesystem_without_locks_trains_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    """Some NFS mounts answer flock with ENOLCK; that cannot be mounted here, so flock is made to answer so."""
    import errno
    import fcntl

    def no_locks(f, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "run"
    with caplog.at_level("WARNING"), RunLock(out, "abc") as lock:
        assert not lock.locked and json.loads(lock_path(out).read_text())["run_id"] == "abc"
        assert driver_holds_lock(out, "abc")  # cannot tell: workers keep going
    assert "does not support locks" in caplog.text and "No locks available" in caplog.text
