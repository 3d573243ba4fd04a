"""What ``graviti train`` prints while it runs: one line per epoch, from the driver.

Workers' output (Ray Train's report dumps, per-rank chatter) stays in Ray's logs unless
``--verbose``; the driver follows the run's ``metrics.jsonl`` (rank 0 appends a record per
epoch) and prints each new record as one line, under an epoch progress bar in a terminal.
"""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm

from graviti_dist.train.run_dir import RunDir

_KEY_METRICS = 4  # validation metrics on a line without an early-stopping metric: one per task, the first few


def epoch_line(record: dict, epochs: int, metric: str | None = None) -> str:
    """``epoch 3/10  5,210 seeds/s  loss 2.314  val interest/accuracy 0.812  (best epoch 2)``."""
    losses = [v for k, v in record.items() if k.startswith("loss/")]
    parts = [f"epoch {record['epoch'] + 1}/{epochs}", f"{record.get('seeds_per_s', 0):,.0f} seeds/s",
             f"loss {sum(losses):.4f}"]
    if metric is not None:
        shown = [metric] if f"val/{metric}" in record else []
    else:
        by_task: dict[str, str] = {}
        for key in record:
            if key.startswith("val/"):
                task, name = key[4:].split("/", 1)
                if name not in ("loss", "count") and task not in by_task:
                    by_task[task] = f"{task}/{name}"
        shown = list(by_task.values())[:_KEY_METRICS]
    if shown:
        parts.append("val " + " ".join(f"{m} {record[f'val/{m}']:.4f}" for m in shown))
    if "best_epoch" in record:
        parts.append(f"(best epoch {record['best_epoch'] + 1})")
    return "  ".join(parts)


class EpochPrinter:
    """Prints the run's new epoch records every ``interval_s`` until stopped (a context manager)."""

    def __init__(self, run: RunDir, epochs: int, metric: str | None, first_epoch: int = 0, interval_s: float = 0.5,
                 on_record=None):
        self.run, self.epochs, self.metric, self.interval_s = run, epochs, metric, interval_s
        self.on_record = on_record  # called with each new record after its line (experiment tracking)
        self.seen = first_epoch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="graviti-epochs", daemon=True)
        self.bar = tqdm(total=epochs, initial=first_epoch, unit="epoch", file=sys.stderr, leave=False,
                        disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def __enter__(self) -> "EpochPrinter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._print_new()
        self.bar.close()

    def _follow(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._print_new()

    def _print_new(self) -> None:
        try:
            records = self.run.read_records()
        except ValueError:  # a line being written: read again next time
            return
        for record in records:
            if record["epoch"] >= self.seen:
                self.seen = record["epoch"] + 1
                self.bar.update(1)
                tqdm.write(epoch_line(record, self.epochs, self.metric), file=sys.stderr)
                if self.on_record is not None:
                    self.on_record(record)
