"""From selected runs to what a panel draws: plain data, no MLflow, no drawing.

Both renderers (the HTML/SVG page and the PNGs) draw the same :class:`PanelData`,
so a PNG filed with the sweep shows exactly what the page shows. A reference to a
run's value (an axis, a colour, a column) is a metric when it contains ``/``
(``eval/accuracy``), ``tag:NAME`` for a tag, ``run``/``run_id``/``status`` for the
run itself, and a param otherwise (``accelerator.stream_length``, ``technique``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from harness.claims import Condition, Judgement, parse_condition
from harness.dashboard.spec import Panel
from harness.tracking_read import RunView

__all__ = ["Figure", "Mark", "PanelData", "Point", "Series", "Table", "build_panel", "pareto_front", "value_of"]


@dataclass
class Point:
    x: float
    y: float
    run_id: str
    label: str


@dataclass
class Series:
    name: str
    color: int
    points: list[Point] = field(default_factory=list)
    line: list[tuple[float, float]] = field(default_factory=list)  # drawn through, in order
    dashed: bool = False


@dataclass
class Mark:
    """A paper's claim on a figure: a point, or a line when only one axis is pinned."""

    kind: str  # point | hline | vline
    x: float | None
    y: float | None
    label: str
    verdict: str
    color: int | None = None


@dataclass
class Figure:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    pareto: list[tuple[float, float]] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    log_x: bool = False
    log_y: bool = False
    categories: list[str] | None = None  # categorical x axis: tick labels at 0..n-1
    xticks: list[float] | None = None  # a swept param's values, as the x ticks

    @property
    def n_points(self) -> int:
        return sum(len(s.points) for s in self.series if not s.dashed)


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    run_ids: list[str] = field(default_factory=list)
    row_class: list[str] = field(default_factory=list)


@dataclass
class PanelData:
    panel: Panel
    figures: list[Figure] = field(default_factory=list)
    table: Table | None = None
    notes: list[str] = field(default_factory=list)
    legend: list[tuple[int, str]] = field(default_factory=list)


# -- values -------------------------------------------------------------------
def value_of(run: RunView, ref: str) -> Any:
    if ref == "run":
        return run.name
    if ref == "run_id":
        return run.run_id
    if ref == "status":
        return run.status
    if ref.startswith("tag:"):
        return run.tags.get(ref[4:])
    if "/" in ref:
        return run.metrics.get(ref)
    return run.params.get(ref)


def number(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        out = float(v)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt(v: Any) -> str:
    """Numbers readable at any magnitude (8.1e-05, not 0.00); text as it is."""
    n = number(v)
    if n is None:
        return "" if v is None else str(v)
    if n == 0 or (1e-3 <= abs(n) < 1e6):
        return f"{n:.4g}"
    return f"{n:.3e}"


def _sort_key(v: str):
    n = number(v)
    return (0, n, "") if n is not None else (1, 0.0, str(v))


def varied_params(runs: Sequence[RunView]) -> list[str]:
    """Params whose value differs between runs: what says which run is which."""
    keys = sorted({k for r in runs for k in r.params})
    return [k for k in keys if len({r.params.get(k) for r in runs}) > 1]


def run_label(run: RunView, varied: Sequence[str]) -> str:
    parts = [f"{k}={run.params[k]}" for k in varied if k in run.params]
    return " ".join(parts) or run.name


def _filter(runs: Sequence[RunView], where) -> list[RunView]:
    conds = [parse_condition(k, v) for k, v in dict(where).items()]
    return [r for r in runs if all(c.holds(r) for c in conds)]


def _groups(runs: Sequence[RunView], key: str) -> tuple[dict[str, list[RunView]], dict[str, int]]:
    if not key:
        return {"": list(runs)}, {"": 0}
    groups: dict[str, list[RunView]] = {}
    for r in runs:
        groups.setdefault(fmt(value_of(r, key)) or "(none)", []).append(r)
    order = sorted(groups, key=_sort_key)
    return {g: groups[g] for g in order}, {g: i for i, g in enumerate(order)}


def pareto_front(points: Sequence[tuple[float, float]], sense: tuple[str, str]) -> list[tuple[float, float]]:
    """The non-dominated points, ordered along x (``sense``: "min"/"max" per axis)."""
    sx = 1.0 if sense[0] == "min" else -1.0
    sy = 1.0 if sense[1] == "min" else -1.0
    best = math.inf
    front = []
    for x, y in sorted(set(points), key=lambda p: (sx * p[0], sy * p[1])):
        if sy * y < best:
            front.append((x, y))
            best = sy * y
    return front


# -- claims on figures ------------------------------------------------------------
def _claim_label(j: Judgement) -> str:
    c = j.claim
    measured = f", measured {fmt(j.measured)}" if j.measured is not None else ""
    return f"paper: {c.value:g} {c.unit} ({c.experiment}){measured}: {j.verdict}"


def _conflicts(conds: Sequence[Condition], where: dict) -> bool:
    for key, spec in where.items():
        want = parse_condition(key, spec)
        for c in conds:
            if c.key == key and c.op == "==" and want.op == "==" and str(c.value) != str(want.value):
                if number(c.value) is None or number(c.value) != number(want.value):
                    return True
    return False


def _pinned(conds: Sequence[Condition], key: str) -> Any:
    for c in conds:
        if c.key == key and c.bound is not None:
            return c.bound
        if c.key == key and c.op == "==":
            return c.value
    return None


def _claim_marks(panel: Panel, judgements: Sequence[Judgement], facet_value: str | None,
                 colors: dict[str, int], categories: list[str] | None, runs: Sequence[RunView]) -> list[Mark]:
    """The claims that belong on this figure: some run drawn here used the claim's plugin
    with its config (``when`` and param conditions; metric bounds may still be unmet)."""
    marks = []
    for j in judgements:
        conds = j.conditions
        if _conflicts(conds, dict(panel.where)):
            continue
        setting = [c for c in conds if not c.is_metric]
        if not any(r.params.get(j.kind) == j.plugin and all(c.holds(r) for c in setting) for r in runs):
            continue
        if panel.facet and facet_value is not None:
            pinned = _pinned(conds, panel.facet)
            if pinned is not None and fmt(pinned) != facet_value:
                continue
        color = None
        if panel.color:
            pinned = _pinned(conds, panel.color)
            if pinned is not None:
                color = colors.get(fmt(pinned))
        label = _claim_label(j)
        if j.claim.metric == panel.y:
            xv = _pinned(conds, panel.x)
            if categories is not None and xv is not None:
                xv = categories.index(fmt(xv)) if fmt(xv) in categories else None
            xn = number(xv)
            if xn is not None:
                marks.append(Mark("point", xn, j.claim.value, label, j.verdict, color))
            else:
                marks.append(Mark("hline", None, j.claim.value, label, j.verdict, color))
        elif j.claim.metric == panel.x:
            marks.append(Mark("vline", j.claim.value, None, label, j.verdict, color))
    return marks


# -- panels -----------------------------------------------------------------------
def build_panel(panel: Panel, runs: Sequence[RunView], judgements: Sequence[Judgement],
                histories: Callable[[Sequence[str], str], dict] | None = None) -> PanelData:
    """What ``panel`` shows of ``runs`` (already selected by the dashboard)."""
    runs = _filter(runs, panel.where) if panel.where else list(runs)
    data = PanelData(panel)
    if not runs:
        data.notes.append("no run matches this panel's selection")
        if panel.kind != "claims":
            return data
    varied = varied_params(runs)
    if panel.kind in ("scatter", "line"):
        _xy(panel, runs, varied, judgements if panel.claims else [], data)
    elif panel.kind == "curves":
        _curves(panel, runs, varied, histories, data)
    elif panel.kind == "table":
        _table(panel, runs, varied, data)
    elif panel.kind == "claims":
        _claims_table(panel, judgements, data)
    return data


def _xy(panel: Panel, runs, varied, judgements, data: PanelData) -> None:
    refs = [panel.x, panel.y]
    missing = [r for r in runs if any(value_of(r, k) is None for k in refs)]
    if missing:
        by = "accelerator"  # in practice what decides which metrics a run has
        who = sorted({fmt(value_of(r, by)) or "?" for r in missing})
        data.notes.append(
            f"{len(missing)} of {len(runs)} run(s) lack {' or '.join(k for k in refs if any(value_of(r, k) is None for r in missing))}"
            f" and are not drawn ({by}: {', '.join(who)})"
        )
    lacking = {id(r) for r in missing}
    usable = [r for r in runs if id(r) not in lacking]
    xs = [value_of(r, panel.x) for r in usable]
    categories = None
    if any(number(v) is None for v in xs):
        categories = sorted({fmt(v) for v in xs}, key=_sort_key)
    if panel.facet:
        facets, _ = _groups(usable, panel.facet)
    else:
        facets = {"": usable}
    _, colors = _groups(usable, panel.color)
    data.legend = [(i, f"{panel.color}={g}") for g, i in colors.items()] if panel.color else []

    def xof(r):
        v = value_of(r, panel.x)
        return float(categories.index(fmt(v))) if categories is not None else float(number(v))

    for facet_value, frs in facets.items():
        fig = Figure(
            title=f"{panel.facet}={facet_value}" if panel.facet else "",
            xlabel=panel.x, ylabel=panel.y, log_x=panel.log_x, log_y=panel.log_y, categories=categories,
        )
        groups, _ = _groups(frs, panel.color)
        for g, grs in groups.items():
            s = Series(f"{panel.color}={g}" if panel.color else panel.y, colors.get(g, 0))
            s.points = [Point(xof(r), float(number(value_of(r, panel.y))), r.run_id,
                              f"{run_label(r, varied)}\n{panel.x}={fmt(value_of(r, panel.x))}, {panel.y}={fmt(value_of(r, panel.y))}")
                        for r in grs if number(value_of(r, panel.y)) is not None]
            s.points.sort(key=lambda p: p.x)
            if panel.kind == "line":
                s.line = _means([(p.x, p.y) for p in s.points])
            fig.series.append(s)
            for ref in panel.reference:
                pts = [(xof(r), number(r.metrics.get(ref))) for r in grs]
                pts = [(x, y) for x, y in pts if y is not None]
                if pts:
                    fig.series.append(Series(f"{s.name}: {ref}" if panel.color else ref, s.color,
                                             line=_means(pts), dashed=True))
        _merge_equal_references(fig)
        if panel.pareto:
            fig.pareto = pareto_front([(p.x, p.y) for s in fig.series if not s.dashed for p in s.points], panel.pareto)
        fig.marks = _claim_marks(panel, judgements, facet_value if panel.facet else None, colors, categories, frs)
        swept = sorted({p.x for s in fig.series for p in s.points})
        if panel.kind == "line" and categories is None and 1 < len(swept) <= 12 and "/" not in panel.x:
            fig.xticks = swept
        data.figures.append(fig)
    if panel.log_x or panel.log_y:
        for fig in data.figures:
            for s in fig.series:
                keep = [p for p in s.points if (not panel.log_x or p.x > 0) and (not panel.log_y or p.y > 0)]
                if len(keep) < len(s.points):
                    data.notes.append(f"{len(s.points) - len(keep)} point(s) <= 0 left out of {s.name} on a log axis")
                s.points = keep


def _means(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    by: dict[float, list[float]] = {}
    for x, y in points:
        by.setdefault(x, []).append(y)
    return [(x, sum(v) / len(v)) for x, v in sorted(by.items())]


def _merge_equal_references(fig: Figure) -> None:
    """One dashed line when every group's reference is the same (exact INT8 for every variant)."""
    dashed = [s for s in fig.series if s.dashed]
    if len(dashed) > 1 and all(s.line == dashed[0].line for s in dashed):
        name = dashed[0].name.split(": ", 1)[-1]
        fig.series = [s for s in fig.series if not s.dashed] + [Series(name, -1, line=dashed[0].line, dashed=True)]


def _curves(panel: Panel, runs, varied, histories, data: PanelData) -> None:
    runs = sorted(runs, key=lambda r: r.start_ms)
    if len(runs) > panel.max_runs:
        data.notes.append(f"showing the first {panel.max_runs} of {len(runs)} runs (max_runs)")
        runs = runs[: panel.max_runs]
    series = histories([r.run_id for r in runs], panel.metric) if histories else {}
    groups, colors = _groups(runs, panel.color)
    data.legend = [(i, f"{panel.color}={g}") for g, i in colors.items()] if panel.color else []
    fig = Figure("", "step", panel.metric, log_y=panel.log_y)
    for g, grs in groups.items():
        for r in grs:
            pts = series.get(r.run_id) or []
            if not pts:
                continue
            label = run_label(r, varied)
            s = Series(label, colors.get(g, 0))
            s.points = [Point(float(step), float(v), r.run_id, f"{label}\nstep {step}: {fmt(v)}") for step, v in pts]
            s.line = [(float(step), float(v)) for step, v in pts]
            fig.series.append(s)
    if not fig.series:
        data.notes.append(f"no selected run logged a series of {panel.metric}")
        return
    data.figures.append(fig)


def _table(panel: Panel, runs, varied, data: PanelData) -> None:
    rows = list(runs)
    if panel.sort:
        key = panel.sort.lstrip("-")
        rows.sort(key=lambda r: _sort_key(fmt(value_of(r, key))) if value_of(r, key) is not None else (2, 0, ""),
                  reverse=panel.sort.startswith("-"))
    if panel.limit:
        if len(rows) > panel.limit:
            data.notes.append(f"showing {panel.limit} of {len(rows)} runs (limit)")
        rows = rows[: panel.limit]
    absent = [c for c in panel.columns if all(value_of(r, c) is None for r in rows)]
    if absent:
        data.notes.append(f"no run has {', '.join(absent)}")
    data.table = Table(
        columns=list(panel.columns),
        rows=[[fmt(value_of(r, c)) for c in panel.columns] for r in rows],
        run_ids=[r.run_id for r in rows],
        row_class=[r.status.lower() for r in rows],
    )


def _claims_table(panel: Panel, judgements: Sequence[Judgement], data: PanelData) -> None:
    js = [j for j in judgements if panel.plugins is None or j.plugin in panel.plugins]
    if not js:
        data.notes.append("the selected runs used no plugin that declares claims")
        return
    if panel.show == "applicable":
        hidden = [j for j in js if not j.in_setting]
        js = [j for j in js if j.in_setting]
        if hidden:
            data.notes.append(f"{len(hidden)} more claim(s) of these plugins are about settings no selected run used "
                              f"(show: all lists them)")
        if not js:
            return
    columns = ["plugin", "claim", "paper setting", "conditions", "measured (best)", "verdict", "runs", "why"]
    rows, classes, run_ids = [], [], []
    for j in js:
        c = j.claim
        tol = max(c.tolerance * abs(c.value), c.abs_tolerance)
        claim = f"{c.metric} {'>=' if c.direction == 'higher' else '<=' if c.direction == 'lower' else '='} {c.value:g} {c.unit} (±{tol:.3g})"
        setting = c.experiment + (f" [{c.workload}]" if c.workload else "")
        rows.append([f"{j.kind} {j.plugin}", claim, setting, ", ".join(str(x) for x in j.conditions) or "-",
                     fmt(j.measured), j.verdict + (f" (indicative: {j.indicative})" if j.indicative else ""),
                     f"{j.matching} of {j.in_setting}", j.detail])
        classes.append("verdict-" + j.verdict.split(",")[0].replace(" ", "-"))
        run_ids.append(j.run_id)
    data.table = Table(columns, rows, run_ids, classes)
