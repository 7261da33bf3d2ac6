"""Declarative dashboards: spec (YAML) -> runs from the store -> one offline HTML page + PNGs.

* :mod:`harness.dashboard.spec` reads and checks specs, and finds them by name;
* :mod:`harness.tracking_read` (the tracker's read side) reads runs from MLflow;
* :mod:`harness.claims` judges the plugins' claims on the selected runs;
* :mod:`harness.dashboard.data` turns runs into what each panel draws;
* :mod:`harness.dashboard.html` and :mod:`harness.dashboard.png` draw it.

:func:`render_dashboard` is what ``harness dashboard`` runs;
:func:`render_sweep_dashboard` is the launcher's end-of-sweep call. Nothing here is
imported by ``harness --help``: mlflow and matplotlib load only when rendering.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from harness.dashboard.spec import DashboardSpec, DashboardSpecError, find_spec, list_specs, load_spec

__all__ = [
    "DashboardSpecError",
    "Rendered",
    "build_panels",
    "list_specs",
    "render_dashboard",
    "render_sweep_dashboard",
    "select_runs",
]

log = logging.getLogger("harness.dashboard")


class _Progress:
    """One line on stderr that a large store keeps moving (plain lines when not a terminal)."""

    def __init__(self, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._last = ""

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"[dashboard] {message} ({time.monotonic() - self.start:.1f} s)"
        if self.tty:
            self.stream.write("\r" + line + " " * max(0, len(self._last) - len(line)))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last = line

    def close(self) -> None:
        if self.enabled and self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()


class Rendered:
    """What one rendering produced: the page, its PNGs and where it was filed."""

    def __init__(self, path: Path, html: str, pngs: dict[str, bytes], runs: int, parent_run_id: str | None, logged: bool):
        self.path, self.html, self.pngs = path, html, pngs
        self.runs, self.parent_run_id, self.logged = runs, parent_run_id, logged


def select_runs(reader, spec: DashboardSpec, experiment: str | None = None, sweep: str | None = None,
                progress: Callable[[str], None] | None = None):
    """``(runs, sweep parent or None, experiment names, notes)`` the spec selects.

    ``experiment``/``sweep`` (from the command line) override the spec's ``select``.
    ``sweep``: ``latest`` (the newest sweep parent), ``all`` (no sweep filter) or a
    sweep id (a prefix is enough; its newest parent run). A sweep's runs are its
    parent's children plus the jobs it skipped because they had finished earlier
    (listed in its ``sweep_summary.json``).
    """
    from harness.claims import parse_condition

    names = [experiment] if experiment else list(spec.experiments)
    if not names:
        raise DashboardSpecError(
            f"dashboard spec {spec.path}: select.experiment is not set; name the experiment with --experiment NAME"
        )
    exp_ids = reader.experiment_ids(names)
    mode = sweep or spec.sweep or "latest"
    notes: list[str] = []
    parent = None
    filters, extra_ids = [], set()
    if mode != "all":
        parent = reader.sweep_parent(list(exp_ids), None if mode == "latest" else mode)
        if parent is None and mode != "latest":
            raise LookupError(f"no sweep {mode!r} in experiment(s) {', '.join(names)} at {reader.tracking_uri}")
        if parent is None:
            notes.append("no sweep parent run found: showing every run of the experiment")
        else:
            # This parent's children (a forced rerun of the same sweep has a parent of its
            # own), plus the jobs its summary lists as finished earlier.
            filters.append(f"tags.`mlflow.parentRunId` = '{parent.run_id}'")
            extra_ids = reader.sweep_run_ids(parent)
    if len(spec.status) == 1:
        filters.append(f"attributes.status = '{spec.status[0]}'")
    runs = reader.search(exp_ids, " and ".join(filters), run_ids=extra_ids, progress=progress)
    conds = [parse_condition(k, v) for k, v in dict(spec.where).items()]
    runs = [
        r for r in runs
        if r.tags.get("harness.sweep_parent") != "true"
        and r.status in spec.status
        and all(c.holds(r) for c in conds)
    ]
    runs.sort(key=lambda r: (r.start_ms, r.run_id))
    return runs, parent, names, notes


def build_panels(spec: DashboardSpec, runs, histories=None, claims_of=None):
    """Judge the claims once, then build every panel's data."""
    from harness.claims import judge_runs
    from harness.dashboard.data import build_panel

    wants_claims = any(p.kind == "claims" or (p.claims and p.kind in ("scatter", "line")) for p in spec.panels)
    judgements = judge_runs(runs, claims_of) if wants_claims and runs else []
    return [build_panel(p, runs, judgements, histories) for p in spec.panels], judgements


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "panel"


def render_dashboard(
    spec_name: str,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    sweep: str | None = None,
    out: str | Path | None = None,
    png: bool = True,
    log_to_parent: bool = True,
    progress: bool = True,
) -> Rendered:
    """Render spec ``spec_name`` (a name or a path) over the store; see the module docstring.

    Writes the page to ``out`` (default ``outputs/dashboards/NAME[-SWEEP].html`` in
    the working folder) and, when a sweep was selected, files the page and the
    panels' PNGs with the sweep's parent run under ``dashboard/``.
    """
    from harness import __version__
    from harness.dashboard.html import render_html
    from harness.tracking_read import StoreReader

    spec = load_spec(find_spec(spec_name))
    show = _Progress(progress)
    try:
        reader = StoreReader(tracking_uri)
        show(f"selecting runs for {spec.name}")
        runs, parent, names, notes = select_runs(reader, spec, experiment, sweep, show)
        show(f"{len(runs)} runs selected; judging claims and building panels")
        panels, judgements = build_panels(spec, runs, lambda ids, key: reader.histories(ids, key, show))
        if panels:
            panels[0].notes[:0] = notes
        sweep_id = parent.tags.get("harness.sweep_id", "") if parent else ""
        statuses = {}
        for r in runs:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        context = [
            ("store", reader.tracking_uri),
            ("experiment", ", ".join(names)),
            ("sweep", f"{sweep_id} (parent run {parent.run_id}): harness run -m {parent.tags.get('harness.sweep_overrides', '')}"
             if parent else "all runs (no sweep selected)"),
            ("runs", f"{len(runs)} ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items())) or 'none'})"),
            ("claims judged", str(len(judgements))),
            ("rendered", f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC} by accel-harness {__version__} from {spec.path}"),
        ]
        page = render_html(spec.title, spec.description, context, panels)
        pngs: dict[str, bytes] = {}
        if png:
            from harness.dashboard.png import panel_png

            for i, data in enumerate(panels):
                show(f"PNG {i + 1}/{len(panels)}: {data.panel.title}")
                image = panel_png(data)
                if image is not None:
                    pngs[f"{spec.name}/panel-{i:02d}-{_slug(data.panel.title)}.png"] = image
        if out is None:
            suffix = f"-{sweep_id[:8]}" if sweep_id else ""
            out = Path("outputs") / "dashboards" / f"{spec.name}{suffix}.html"
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
        logged = False
        if parent is not None and log_to_parent:
            with tempfile.TemporaryDirectory(prefix="harness-dashboard-") as tmp:
                root = Path(tmp)
                (root / f"{spec.name}.html").write_text(page, encoding="utf-8")
                for rel, data in pngs.items():
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    (root / rel).write_bytes(data)
                show(f"filing the dashboard with parent run {parent.run_id}")
                reader.log_report(parent.run_id, root, "dashboard")
                logged = True
        return Rendered(out.resolve(), page, pngs, len(runs), parent.run_id if parent else None, logged)
    finally:
        show.close()


def render_sweep_dashboard(tracking_uri: str, experiment_name: str, sweep_id: str, spec_name: str,
                           out_dir: str | Path | None = None, progress: bool = False) -> Path:
    """Render ``spec_name`` over sweep ``sweep_id`` and file it with the sweep's parent run.

    The launcher's end-of-sweep call: returns the local HTML path
    (``outputs/dashboards/NAME-SWEEP.html`` unless ``out_dir``). Raises on failure;
    :func:`render_after_sweep` is the guarded form a launcher should call.
    """
    out = None
    if out_dir is not None:
        out = Path(out_dir) / f"{Path(spec_name).stem}-{sweep_id[:8]}.html"
    return render_dashboard(spec_name, tracking_uri, experiment_name, sweep_id, out=out, progress=progress).path


def render_after_sweep(tracking_uri: str, experiment_name: str, sweep_id: str, spec_name: str) -> Path | None:
    """:func:`render_sweep_dashboard`, but a failure is a warning: a dashboard never fails a sweep."""
    if not spec_name:
        return None
    try:
        path = render_sweep_dashboard(tracking_uri, experiment_name, sweep_id, spec_name)
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        log.warning("dashboard %r not rendered: %s: %s", spec_name, type(exc).__name__, exc)
        print(f"harness: warning: dashboard {spec_name!r} not rendered: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    print(f"Dashboard {spec_name!r}: {path} (also in the parent run's artifacts under dashboard/)", flush=True)
    return path


def describe_specs() -> list[tuple[str, str, str]]:
    """``(name, title, path)`` of every spec found (for ``harness dashboard --list``)."""
    out = []
    for name, path in sorted(list_specs().items()):
        try:
            title = load_spec(path).title
        except DashboardSpecError as exc:
            title = f"INVALID: {exc}"
        out.append((name, title, str(path)))
    return out
