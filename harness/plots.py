"""Plots the runner attaches to every record that has curves.

One PNG with a panel per curve (``train/loss``, ``train/val_accuracy``, ...), so
the MLflow artifact view shows a run's training at a glance, without opening the
metric charts one by one. Series that differ only in a numbered path segment (a
technique's ``technique/stage0/loss``, ``technique/stage1/loss``, ...) share one
panel, a line each, so stages can be compared and none is left out.

It is drawn on the job's slot after the run, so it is kept cheap: a fixed layout
(matplotlib's ``tight_layout`` measured 0.5-0.6 s of a 1.3-1.6 s twelve-panel
figure) and no pyplot state.
"""

from __future__ import annotations

import io
import math
import re

from harness.record import Record

__all__ = ["curve_panels", "curves_png"]

_NUMBERED = re.compile(r"^[A-Za-z_]*\d+$")


def curve_panels(names) -> dict[str, list[tuple[str, str]]]:
    """``{panel title: [(line label, series name), ...]}``: series whose names differ only
    in one numbered segment (``stage0``, ``fold3``) share a panel labelled by it."""
    panels: dict[str, list[tuple[str, str]]] = {}
    for name in sorted(names):
        parts = name.split("/")
        numbered = [i for i, p in enumerate(parts) if _NUMBERED.match(p)]
        if len(numbered) == 1 and len(parts) > 1:
            i = numbered[0]
            title = "/".join(parts[:i] + ["*"] + parts[i + 1:])
            panels.setdefault(title, []).append((parts[i], name))
        else:
            panels.setdefault(name, []).append(("", name))
    return panels


def curves_png(record: Record, max_panels: int = 12) -> bytes | None:
    """A PNG of the record's series (at most ``max_panels`` panels), or None when it has none."""
    panels = curve_panels(record.series)
    if not panels:
        return None
    from matplotlib.figure import Figure  # no pyplot: no global figure registry, no GUI backend

    titles = list(panels)[:max_panels]
    cols = min(3, len(titles))
    rows = math.ceil(len(titles) / cols)
    width, height = 4.2 * cols, 3.0 * rows
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, title in zip(axes.flat, titles):
        for label, name in panels[title]:
            steps, values = zip(*record.series[name])
            ax.plot(steps, values, marker="o", markersize=2.5, linewidth=1.2, label=label or None)
        if len(panels[title]) > 1:
            ax.legend(fontsize=6, loc="best")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(titles):]:
        ax.axis("off")
    # Margins in inches, whatever the grid: room for titles, tick labels and x labels.
    fig.subplots_adjust(left=0.55 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.3 / height,
                        wspace=0.3, hspace=0.45)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
