"""PNG of each panel (matplotlib, Agg): the same :class:`PanelData` the page draws.

The PNGs go to the sweep's parent run next to the HTML, so the MLflow UI's
artifact view (which previews images but not HTML with scripts) shows the
dashboard too.
"""

from __future__ import annotations

import io
import math
import textwrap

from harness.dashboard.data import PanelData
from harness.dashboard.html import PALETTE, REFERENCE_COLOR, VERDICT_COLORS

__all__ = ["panel_png"]


def _color(i):
    return REFERENCE_COLOR if i is None or i < 0 else PALETTE[i % len(PALETTE)]


def panel_png(data: PanelData, dpi: int = 100) -> bytes | None:
    """A PNG of one panel, or None when it has nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if data.figures:
        n = len(data.figures)
        cols = min(3, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 3.6 * rows), squeeze=False)
        for ax, f in zip(axes.flat, data.figures):
            if f.pareto:
                px, py = zip(*f.pareto)
                ax.plot(px, py, ":", color="black", linewidth=1.2, label="Pareto front", zorder=1)
            for s in f.series:
                col = _color(s.color)
                if s.line and (len(s.line) >= 2 or not s.dashed):
                    lx, ly = zip(*s.line)
                    ax.plot(lx, ly, "--" if s.dashed else "-", color=col, linewidth=1.4,
                            label=s.name if s.dashed else None, zorder=2)
                elif s.dashed and s.line:
                    ax.axhline(s.line[0][1], linestyle="--", color=col, label=s.name)
                if s.points:
                    ax.scatter([p.x for p in s.points], [p.y for p in s.points], s=18, color=col, zorder=3,
                               label=s.name if not s.dashed and len(data.legend) <= 12 else None)
            for m in f.marks:
                vc = VERDICT_COLORS.get(m.verdict, "#888888")
                if m.kind == "point":
                    ax.scatter([m.x], [m.y], marker="D", s=60, color=vc, edgecolor="black", zorder=4)
                elif m.kind == "hline":
                    ax.axhline(m.y, color=vc, linestyle="-.", linewidth=1.5)
                else:
                    ax.axvline(m.x, color=vc, linestyle="-.", linewidth=1.5)
            if f.categories is not None:
                ax.set_xticks(range(len(f.categories)), f.categories, fontsize=7, rotation=20)
            if f.log_x:
                ax.set_xscale("log")
            if f.log_y:
                ax.set_yscale("log")
            if f.xticks:
                ax.set_xticks(f.xticks, [f"{v:g}" for v in f.xticks], fontsize=7)
                ax.minorticks_off()
            ax.set_xlabel(f.xlabel, fontsize=8)
            ax.set_ylabel(f.ylabel, fontsize=8)
            ax.set_title(f.title or data.panel.title, fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if ax.get_legend_handles_labels()[0] and data.panel.kind != "curves":
                ax.legend(fontsize=6, loc="best")
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
    elif data.table is not None and data.table.rows:
        t = data.table
        shown = t.rows[:30]
        # Wrap (not cut) each column at a width fitted to its text, and size rows by their lines.
        widths = [max(6, min(34, max(len(str(x)) for x in [c] + [r[j] for r in shown]))) for j, c in enumerate(t.columns)]
        cells = [[textwrap.fill(str(c), widths[j]) or " " for j, c in enumerate(row)] for row in shown]
        header = [textwrap.fill(c, widths[j]) for j, c in enumerate(t.columns)]
        lines = [max(h.count("\n") + 1 for h in header)] + [max(c.count("\n") + 1 for c in row) for row in cells]
        total = sum(lines)
        fig, ax = plt.subplots(figsize=(min(24, 0.085 * sum(widths) + 1), 0.16 * total + 0.8))
        ax.axis("off")
        table = ax.table(cellText=cells, colLabels=header, colWidths=[w / sum(widths) for w in widths],
                         loc="upper left", cellLoc="left", bbox=[0, 0, 1, 1])
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        for (r, c), cell in table.get_celld().items():
            cell.set_height(lines[r] / total)
            if r == 0:
                cell.set_facecolor("#f0f0f0")
            elif t.columns[c] == "verdict":
                cell.set_facecolor(VERDICT_COLORS.get(shown[r - 1][c].split(" (")[0], "#ffffff") + "55")
        ax.set_title(data.panel.title + (f" (first 30 of {len(t.rows)})" if len(t.rows) > 30 else ""), fontsize=9)
    else:
        return None
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()
