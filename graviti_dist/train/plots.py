"""PNG plots of a training run's metrics.jsonl: per-task losses and weights, validation metrics."""

from __future__ import annotations

from pathlib import Path

from graviti_dist.train.run_dir import RunDir


def plot_run(run: RunDir) -> list[Path]:
    """Write the run's loss and validation-metric plots from its epoch records; returns the files written."""
    import matplotlib  # here: only a finished run pays for importing matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = run.read_records()
    if not records:
        return []
    epochs = [r["epoch"] for r in records]
    written = []

    fig, (losses, weights) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key in sorted(k for k in records[-1] if k.startswith("loss/")):
        losses.plot(epochs, [r.get(key) for r in records], marker="o", label=key[5:])
    for key in sorted(k for k in records[-1] if k.startswith("weight/")):
        weights.plot(epochs, [r.get(key) for r in records], marker="o", label=key[7:])
    losses.set(xlabel="epoch", ylabel="training loss", title="per-task loss")
    weights.set(xlabel="epoch", ylabel="effective weight", title="loss balancing")
    for ax in (losses, weights):
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(run.losses_plot)
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    keys = sorted(k for k in {k for r in records for k in r} if k.startswith("val/") and not k.endswith("/count"))
    tasks = sorted({k.split("/")[1] for k in keys})
    if tasks:
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.2), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for key in (k for k in keys if k.split("/")[1] == task):
                points = [(r["epoch"], r[key]) for r in records if key in r]
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key.split("/")[2])
            ax.set(xlabel="epoch", title=f"{task} (validation)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(run.metrics_plot)
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
