"""One self-contained HTML page: hand-written SVG, inline CSS and ~40 lines of inline JS.

No plotting library and no CDN: the page opens offline, weighs kilobytes per panel
instead of the megabytes of bundled plotly.js or BokehJS, and every point is an
SVG element with ``data-run``, so hovering a point highlights the same run in every
panel and table, and a browser test can count what was drawn. ``docs/dashboards.md``
explains the choice.
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

from harness.dashboard.data import Figure, PanelData, fmt

__all__ = ["PALETTE", "VERDICT_COLORS", "render_html"]

#: Matplotlib's tab10, so the PNGs and the page use the same colours.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
REFERENCE_COLOR = "#444444"
VERDICT_COLORS = {
    "reproduced": "#1a9850",
    "same direction, smaller effect": "#fdae61",
    "not reproduced": "#d73027",
    "not comparable": "#888888",
    "not measured": "#cccccc",
}

W, H = 620, 360
ML, MR, MT, MB = 76, 18, 14, 48


def color(i: int | None) -> str:
    if i is None or i < 0:
        return REFERENCE_COLOR
    return PALETTE[i % len(PALETTE)]


class _Scale:
    """Data to pixels along one axis, with readable ticks (linear, log10 or categories)."""

    def __init__(self, values: Sequence[float], lo_px: float, hi_px: float, log: bool, categories=None, fixed=None):
        self.log, self.categories, self.fixed = log, categories, fixed
        self.lo_px, self.hi_px = lo_px, hi_px
        if categories is not None:
            self.lo, self.hi = -0.5, len(categories) - 0.5
            return
        vals = [self._t(v) for v in values if v is not None and (not log or v > 0)]
        vals = [v for v in vals if math.isfinite(v)]
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        if hi == lo:
            pad = abs(lo) * 0.1 or (0.5 if log else 1.0)
            lo, hi = lo - pad, hi + pad
        pad = (hi - lo) * 0.06
        self.lo, self.hi = lo - pad, hi + pad

    def _t(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def __call__(self, v: float) -> float:
        t = self._t(v) if (not self.log or v > 0) else self.lo
        return self.lo_px + (t - self.lo) / (self.hi - self.lo) * (self.hi_px - self.lo_px)

    def ticks(self) -> list[tuple[float, str]]:
        if self.categories is not None:
            return [(float(i), c) for i, c in enumerate(self.categories)]
        if self.fixed:
            return [(v, tick_label(v)) for v in self.fixed if not self.log or v > 0]
        if self.log:
            out = []
            for k in range(math.floor(self.lo), math.ceil(self.hi) + 1):
                for m in ((1,) if self.hi - self.lo > 3 else (1, 2, 5)):
                    t = math.log10(m) + k
                    if self.lo <= t <= self.hi:
                        out.append((m * 10.0**k, tick_label(m * 10.0**k)))
            if len(out) >= 2:
                return out
            lo, hi = 10**self.lo, 10**self.hi
            return [(v, tick_label(v)) for v in _nice_ticks(lo, hi) if v > 0]
        return [(v, tick_label(v)) for v in _nice_ticks(self.lo, self.hi)]


def tick_label(v: float) -> str:
    """Short tick text: 0.25, 8e+06, 2.5e-05."""
    return f"{v:.3g}"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def _figure_svg(fig: Figure, panel_idx: int) -> str:
    xs, ys = [], []
    for s in fig.series:
        xs += [p.x for p in s.points] + [x for x, _ in s.line]
        ys += [p.y for p in s.points] + [y for _, y in s.line]
    for m in fig.marks:
        if m.x is not None:
            xs.append(m.x)
        if m.y is not None:
            ys.append(m.y)
    sx = _Scale(xs, ML, W - MR, fig.log_x, fig.categories, fig.xticks)
    sy = _Scale(ys, H - MB, MT, fig.log_y)
    out = [f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
           f'aria-label="{escape(fig.ylabel)} vs {escape(fig.xlabel)}">']
    # axes and grid
    out.append(f'<rect class="frame" x="{ML}" y="{MT}" width="{W - ML - MR}" height="{H - MT - MB}"/>')
    for v, label in sx.ticks():
        x = sx(v)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{MT}" x2="{x:.1f}" y2="{H - MB}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{H - MB + 14}" text-anchor="middle">{escape(label)}</text>')
    for v, label in sy.ticks():
        y = sy(v)
        out.append(f'<line class="grid" x1="{ML}" y1="{y:.1f}" x2="{W - MR}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    out.append(f'<text class="axis" x="{(ML + W - MR) / 2}" y="{H - 8}" text-anchor="middle">'
               f'{escape(fig.xlabel)}{" (log)" if fig.log_x else ""}</text>')
    out.append(f'<text class="axis" transform="translate(14,{(MT + H - MB) / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(fig.ylabel)}{" (log)" if fig.log_y else ""}</text>')
    out.append(f'<clipPath id="clip{panel_idx}"><rect x="{ML}" y="{MT}" width="{W - ML - MR}" height="{H - MT - MB}"/></clipPath>')
    out.append(f'<g clip-path="url(#clip{panel_idx})">')
    # pareto front under the points
    if len(fig.pareto) >= 1:
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(fig.pareto))
        out.append(f'<path class="pareto" d="{d}"><title>Pareto front ({len(fig.pareto)} runs)</title></path>')
    for i, s in enumerate(fig.series):
        col = color(s.color)
        if len(s.line) >= 2:
            d = " ".join(f"{'M' if k == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for k, (x, y) in enumerate(s.line))
            cls = "series-line dashed" if s.dashed else "series-line"
            out.append(f'<path class="{cls}" data-series="{s.color}" d="{d}" stroke="{col}"><title>{escape(s.name)}</title></path>')
        elif s.dashed and len(s.line) == 1:
            x, y = s.line[0]
            out.append(f'<path class="series-line dashed" data-series="{s.color}" d="M{ML},{sy(y):.1f} L{W - MR},{sy(y):.1f}" '
                       f'stroke="{col}"><title>{escape(s.name)}: {fmt(y)}</title></path>')
        for p in s.points:
            on_front = (p.x, p.y) in fig.pareto
            out.append(f'<circle class="pt{" front" if on_front else ""}" data-run="{escape(p.run_id)}" data-series="{s.color}" '
                       f'cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="4.5" fill="{col}"><title>{escape(p.label)}</title></circle>')
    for m in fig.marks:
        vc = VERDICT_COLORS.get(m.verdict, "#888888")
        title = f"<title>{escape(m.label)}</title>"
        if m.kind == "point":
            x, y = sx(m.x), sy(m.y)
            pts = f"{x:.1f},{y - 8:.1f} {x + 8:.1f},{y:.1f} {x:.1f},{y + 8:.1f} {x - 8:.1f},{y:.1f}"
            edge = color(m.color) if m.color is not None else "#000"
            out.append(f'<polygon class="claim" data-verdict="{escape(m.verdict)}" points="{pts}" fill="{vc}" stroke="{edge}">{title}</polygon>')
        elif m.kind == "hline":
            y = sy(m.y)
            out.append(f'<line class="claim claim-line" data-verdict="{escape(m.verdict)}" x1="{ML}" y1="{y:.1f}" x2="{W - MR}" y2="{y:.1f}" stroke="{vc}">{title}</line>')
        else:
            x = sx(m.x)
            out.append(f'<line class="claim claim-line" data-verdict="{escape(m.verdict)}" x1="{x:.1f}" y1="{MT}" x2="{x:.1f}" y2="{H - MB}" stroke="{vc}">{title}</line>')
    out.append("</g></svg>")
    return "".join(out)


def _legend(data: PanelData) -> str:
    items = [f'<span class="legend-item" data-series="{i}"><i style="background:{color(i)}"></i>{escape(name)}</span>'
             for i, name in data.legend]
    figs = data.figures
    if any(f.pareto for f in figs):
        items.append('<span class="legend-static"><i class="pareto-key"></i>Pareto front</span>')
    if any(s.dashed for f in figs for s in f.series):
        names = sorted({s.name for f in figs for s in f.series if s.dashed})
        items.append(f'<span class="legend-static"><i class="dash-key"></i>{escape(", ".join(names))}</span>')
    if any(f.marks for f in figs):
        items.append('<span class="legend-static"><i class="claim-key"></i>paper\'s claim (fill: verdict)</span>')
    return f'<div class="legend">{"".join(items)}</div>' if items else ""


def _table_html(data: PanelData) -> str:
    t = data.table
    head = "".join(f"<th>{escape(c)}</th>" for c in t.columns)
    body = []
    for k, row in enumerate(t.rows):
        run = t.run_ids[k] if k < len(t.run_ids) else ""
        cls = t.row_class[k] if k < len(t.row_class) else ""
        cells = "".join(f"<td>{escape(c)}</td>" for c in row)
        body.append(f'<tr class="{escape(cls)}" data-run="{escape(run)}">{cells}</tr>')
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _panel_html(i: int, data: PanelData) -> str:
    p = data.panel
    n = sum(f.n_points for f in data.figures) if data.figures else (len(data.table.rows) if data.table else 0)
    parts = [f'<section class="panel" id="panel-{i}" data-kind="{p.kind}" data-points="{n}">',
             f"<h2>{escape(p.title)}</h2>"]
    if p.note:
        parts.append(f'<p class="note">{escape(p.note)}</p>')
    for note in data.notes:
        parts.append(f'<p class="warn">{escape(note)}</p>')
    if data.figures:
        parts.append('<div class="figures">')
        for k, fig in enumerate(data.figures):
            title = f"<h3>{escape(fig.title)}</h3>" if fig.title else ""
            parts.append(f'<div class="figure">{title}{_figure_svg(fig, i * 100 + k)}</div>')
        parts.append("</div>")
        parts.append(_legend(data))
        marks = [m for f in data.figures for m in f.marks]
        if marks:
            seen, lines = set(), []
            for m in marks:
                if m.label not in seen:
                    seen.add(m.label)
                    lines.append(f'<li><i style="background:{VERDICT_COLORS.get(m.verdict, "#888")}"></i>{escape(m.label)}</li>')
            parts.append(f'<ul class="claims-list">{"".join(lines)}</ul>')
    if data.table is not None:
        parts.append(_table_html(data))
    parts.append("</section>")
    return "".join(parts)


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#fafafa;color:#222}
header{background:#fff;border-bottom:1px solid #ddd;padding:12px 24px}
header h1{margin:0 0 4px;font-size:20px} header p{margin:2px 0;color:#555}
main{display:flex;flex-wrap:wrap;gap:16px;padding:16px 24px}
.panel{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;max-width:100%;overflow-x:auto}
.panel h2{font-size:16px;margin:0 0 6px} .figure h3{font-size:13px;margin:4px 0;color:#444}
.figures{display:flex;flex-wrap:wrap;gap:8px}
.plot .frame{fill:none;stroke:#999} .plot .grid{stroke:#eee} .plot .tick{font-size:11px;fill:#555}
.plot .axis{font-size:12px;fill:#222} .series-line{fill:none;stroke-width:1.8} .series-line.dashed{stroke-dasharray:6 4}
.pt{stroke:#fff;stroke-width:1;cursor:pointer} .pt.front{stroke:#000;stroke-width:1.4}
.pt.hl{r:7;stroke:#000;stroke-width:2} tr.hl td{background:#fff3bf}
.pareto{fill:none;stroke:#000;stroke-width:1.2;stroke-dasharray:2 3}
.claim{stroke-width:1.5} .claim-line{stroke-width:2;stroke-dasharray:8 3}
.legend{margin:4px 0;font-size:12px} .legend-item,.legend-static{display:inline-block;margin-right:12px}
.legend-item{cursor:pointer} .legend-item.off{opacity:.35}
.legend i,.claims-list i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle;border-radius:2px}
.legend i.pareto-key{border-top:2px dotted #000;height:0;border-radius:0} .legend i.dash-key{border-top:2px dashed #444;height:0;border-radius:0}
.legend i.claim-key{background:#fff;border:1.5px solid #000;transform:rotate(45deg);width:8px;height:8px}
.claims-list{font-size:12px;margin:4px 0;padding-left:16px;list-style:none}
.note{color:#555;font-size:12px;margin:2px 0} .warn{color:#8a5300;font-size:12px;margin:2px 0}
table{border-collapse:collapse;font-size:12px} th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0;cursor:pointer;position:sticky;top:0} tr.failed td{color:#b00}
tr.verdict-reproduced td:nth-child(6){background:#d9f0d3} tr.verdict-same-direction td:nth-child(6){background:#fee8c8}
tr.verdict-not-reproduced td:nth-child(6){background:#fcd5d0} tr.verdict-not-comparable td:nth-child(6){background:#eee}
footer{padding:8px 24px;color:#777;font-size:12px}
"""

# Highlight a run everywhere on hover, toggle a legend entry's series, sort tables.
_JS = r"""
(function () {
  var all = function (s, root) { return Array.prototype.slice.call((root || document).querySelectorAll(s)); };
  var byRun = {};
  all('[data-run]').forEach(function (el) {
    var run = el.getAttribute('data-run');
    if (!run) return;
    (byRun[run] = byRun[run] || []).push(el);
    el.addEventListener('mouseenter', function () { byRun[run].forEach(function (e) { e.classList.add('hl'); }); });
    el.addEventListener('mouseleave', function () { byRun[run].forEach(function (e) { e.classList.remove('hl'); }); });
  });
  all('.legend-item').forEach(function (item) {
    item.addEventListener('click', function () {
      var off = item.classList.toggle('off');
      var panel = item.closest('.panel');
      all('.pt[data-series="' + item.getAttribute('data-series') + '"], .series-line[data-series="' +
          item.getAttribute('data-series') + '"]', panel).forEach(function (e) { e.style.display = off ? 'none' : ''; });
    });
  });
  all('table.sortable').forEach(function (table) {
    all('th', table).forEach(function (th, col) {
      th.addEventListener('click', function () {
        var body = table.tBodies[0], rows = all('tr', body), asc = th.getAttribute('data-asc') !== '1';
        th.setAttribute('data-asc', asc ? '1' : '0');
        rows.sort(function (a, b) {
          var x = a.cells[col].textContent, y = b.cells[col].textContent, nx = parseFloat(x), ny = parseFloat(y);
          var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  document.body.setAttribute('data-ready', String(all('.panel').length));
})();
"""


def render_html(title: str, description: str, context: Sequence[tuple[str, str]], panels: Sequence[PanelData]) -> str:
    """The whole page as one string (no external resource of any kind)."""
    ctx = "".join(f"<p><b>{escape(k)}:</b> {escape(v)}</p>" for k, v in context)
    desc = f"<p>{escape(description)}</p>" if description else ""
    body = "".join(_panel_html(i, d) for i, d in enumerate(panels))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1>{desc}{ctx}</header><main>{body}</main>"
        "<footer>Rendered by accel-harness (harness dashboard). Hover a point to highlight its run everywhere; "
        "click a legend entry to hide its series; click a column header to sort.</footer>"
        f"<script>{_JS}</script></body></html>\n"
    )
