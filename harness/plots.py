"""Plots the runner attaches to every record that has curves.

One PNG with a panel per series (``train/loss``, ``train/val_accuracy``, a
technique's per-stage curves, ...), so the MLflow artifact view shows a run's
training at a glance, without opening the metric charts one by one.
"""

from __future__ import annotations

import io
import math

from harness.record import Record

__all__ = ["curves_png"]


def curves_png(record: Record, max_panels: int = 12) -> bytes | None:
    """A PNG of the record's series, or None when it has none."""
    names = sorted(record.series)[:max_panels]
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")  # headless: runs on Ray workers and CI without a display
    import matplotlib.pyplot as plt

    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = zip(*record.series[name])
        ax.plot(steps, values, marker="o", markersize=2.5, linewidth=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
