"""A trial's status in the study summary: ASHA's stop reaches a trial asynchronously, so a stopped trial
may have written every epoch's record before it is killed; only an error Tune saw makes it 'failed'."""

from graviti_dist.train.run_dir import RunDir
from graviti_dist.train.tune import _status


def test_a_trial_with_every_epoch_but_no_test_metrics_is_stopped_unless_tune_saw_it_fail(tmp_path):
    run = RunDir(tmp_path / "t1")
    run.path.mkdir()
    for epoch in range(3):
        run.append_record({"epoch": epoch, "val_score": 0.5})
    assert _status(run, "t1", failed=set()) == "stopped by ASHA"
    assert _status(run, "t1", failed={"t1"}) == "failed"
    run.write_test_metrics({"mature": {"count": 1}}, "| table |")
    assert _status(run, "t1", failed={"t1"}) == "finished"
