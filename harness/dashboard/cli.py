"""``harness dashboard``: render a dashboard spec over a tracking store to one HTML file."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from harness.cli import argument_parser

    p = argument_parser(
        "harness dashboard",
        description="Render a dashboard spec (dashboards/*.yaml, or one a plugin ships) over an MLflow store "
        "to one self-contained HTML file that works offline; when a sweep is selected, the page and a PNG "
        "of each panel are also filed with the sweep's parent run (artifacts under dashboard/).",
    )
    p.add_argument("spec", nargs="?", help="spec name (see --list) or path to a .yaml file")
    p.add_argument("--list", action="store_true", help="list the specs found and where")
    p.add_argument("--tracking-uri", default="", help="store to read (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--experiment", default="", help="experiment to read (default: the spec's select.experiment)")
    p.add_argument("--sweep", default="", help="'latest' (default), 'all', or a sweep id (harness.sweep_id, a prefix is enough)")
    p.add_argument("--out", default="", help="HTML file to write (default: outputs/dashboards/NAME[-SWEEP].html)")
    p.add_argument("--no-png", action="store_true", help="skip the PNG of each panel")
    p.add_argument("--no-log", action="store_true", help="do not file the dashboard with the sweep's parent run")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(args: list[str]) -> int:
    ns = _parser().parse_args(args)
    from harness.dashboard import DashboardSpecError, describe_specs, render_dashboard

    if ns.list:
        for name, title, path in describe_specs():
            print(f"{name:<22} {title}\n{'':<22} {path}")
        return 0
    if not ns.spec:
        print("harness dashboard: name a spec (harness dashboard --list shows them)", file=sys.stderr)
        return 2
    try:
        result = render_dashboard(
            ns.spec,
            tracking_uri=ns.tracking_uri or None,
            experiment=ns.experiment or None,
            sweep=ns.sweep or None,
            out=ns.out or None,
            png=not ns.no_png,
            log_to_parent=not ns.no_log,
            progress=not ns.quiet,
        )
    except (DashboardSpecError, LookupError) as exc:
        print(f"harness dashboard: {exc}", file=sys.stderr)
        return 2
    where = f"; filed with parent run {result.parent_run_id} under dashboard/" if result.logged else ""
    print(f"{result.path} ({result.runs} runs, {len(result.pngs)} PNGs{where})")
    return 0
