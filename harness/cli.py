"""The ``harness`` command.

``harness run [overrides]`` is a Hydra app (``-m``, ``--cfg job``, ``--info``
and every other Hydra flag work); ``harness plugins`` lists what is installed;
``harness ui`` serves the MLflow UI for the configured store on 127.0.0.1.

Help and ``plugins`` must answer in well under a second, so mlflow, ray and hydra
are imported only inside the subcommands that need them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

from harness import __version__

USAGE = f"""\
usage: harness <command> [args]

A benchmarking harness for neural-network accelerators and compression
techniques (version {__version__}). One experiment = workload x technique x
accelerator; every run is recorded in MLflow.

commands:
  run [OVERRIDES]       run one experiment, or a sweep with -m (Hydra flags work:
                        --cfg job, --info, --help). Example:
                          harness run -m workload=dot_products accelerator=exact,ds_cim
  plugins [--json|--markdown] [--strict]
                        list installed workloads, techniques and accelerators
                        (broken plugins are listed as such; --strict fails on them)
  ui [--port N]         serve the MLflow UI for the configured store on 127.0.0.1
  dashboard SPEC [--sweep ID] [--experiment NAME] [--out FILE] [--list]
                        render a dashboard spec to one offline HTML file (and file
                        it with the sweep's parent run); see docs/dashboards.md

environment:
  MLFLOW_TRACKING_URI       where runs are recorded (default: sqlite:///mlflow.db here)
  HARNESS_DISABLE_PLUGINS   comma-separated plugin names to skip
  HARNESS_STRICT_PLUGINS    1: a broken plugin is an error, not a warning (for CI)
"""


def _fail(message: str, code: int = 2) -> int:
    print(f"harness: {message}", file=sys.stderr)
    return code


def plugin_rows(infos, broken=()) -> list[dict]:
    """Plain rows describing installed plugins (for --json, --markdown and the table).

    ``broken`` (:class:`harness.host.BrokenPlugin`) adds one row per broken plugin,
    with ``broken: true`` and its ``error``; healthy rows have ``broken: false``.
    """
    return [
        {
            "kind": i.kind,
            "name": i.name,
            "summary": i.spec.summary,
            "paper": i.spec.paper.short() if i.spec.paper else "",
            "arxiv": (i.spec.paper.arxiv or "") if i.spec.paper else "",
            "claims": [
                {"metric": c.metric, "value": c.value, "unit": c.unit, "experiment": c.experiment}
                for c in i.spec.claims
            ],
            "distribution": i.distribution,
            "version": i.version,
            "needs": sorted(i.spec.needs),
            "provides": sorted(i.spec.provides),
            "broken": False,
        }
        for i in infos
    ] + [
        {
            "kind": b.kind or "?",
            "name": b.names[0],  # the entry-point name, or the conflicting spec name
            "summary": f"BROKEN: {b.message()}",
            "paper": "",
            "arxiv": "",
            "claims": [],
            "distribution": b.distribution,
            "version": b.version,
            "needs": [],
            "provides": [],
            "broken": True,
            "plugin": b.plugin,
            "error": b.message(),
        }
        for b in broken
    ]


def cmd_plugins(args: list[str]) -> int:
    from harness.host import Host, PluginError, get_host

    unknown = [a for a in args if a not in ("--json", "--markdown", "--strict")]
    if unknown:
        return _fail(f"plugins: unknown argument(s) {' '.join(unknown)}; valid: --json, --markdown, --strict")
    try:
        host = Host(strict=True) if "--strict" in args else get_host()
    except PluginError as exc:
        return _fail(str(exc), 1)
    rows = plugin_rows(host.infos(), host.broken())
    if "--json" in args:
        print(json.dumps(rows, indent=2))
        return 0
    if "--markdown" in args:
        print(plugins_markdown(rows))
        return 0
    width = shutil.get_terminal_size((120, 20)).columns
    header = ("KIND", "NAME", "DISTRIBUTION", "SUMMARY / PAPER")
    name_w = max([len(r["name"]) for r in rows] + [4])
    dist_w = max([len(f"{r['distribution']} {r['version']}") for r in rows] + [12])
    lead = 12 + name_w + 2 + dist_w + 2
    print(f"{header[0]:<12}{header[1]:<{name_w + 2}}{header[2]:<{dist_w + 2}}{header[3]}")
    for r in rows:
        text = r["summary"] + (f" [{r['paper']}]" if r["paper"] else "")
        wrapped = textwrap.wrap(text, max(30, width - lead)) or [""]
        dist = f"{r['distribution']} {r['version']}"
        print(f"{r['kind']:<12}{r['name']:<{name_w + 2}}{dist:<{dist_w + 2}}{wrapped[0]}")
        for line in wrapped[1:]:
            print(" " * lead + line)
    return 0


def plugins_markdown(rows: list[dict]) -> str:
    """The plugin table of the README: papers and their claims as data."""
    lines = ["| kind | name | what | paper | claims (paper's headline figures) |", "|---|---|---|---|---|"]
    for r in rows:
        claims = "; ".join(f"`{c['metric']}` {c['value']:g} {c['unit']} ({c['experiment']})" for c in r["claims"])
        paper = f"{r['paper']}" if r["paper"] else "reference"
        if r.get("broken"):
            paper = "-"
        lines.append(f"| {r['kind']} | `{r['name']}` | {r['summary']} | {paper} | {claims or '-'} |")
    return "\n".join(lines)


def cmd_ui(args: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="harness ui", description="Serve the MLflow UI on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    parser.add_argument("--tracking-uri", default="", help="store to browse (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    ns = parser.parse_args(args)
    from harness.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(ns.tracking_uri or None)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    cmd = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", uri,
        "--host", "127.0.0.1",
        "--port", str(ns.port),
        "--workers", "1",
    ]
    print(f"MLflow UI for {uri} at http://127.0.0.1:{ns.port} (Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(cmd, env=env)

    def _forward(signum, _frame):
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, _forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()


def _sweep_cfg_request(args: list[str]) -> tuple[str, bool, list[str]] | None:
    """``(cfg_type, resolve, overrides)`` when ``args`` ask to print a sweep's configs
    (``-m --cfg job ...``), which Hydra refuses ("Only one of --run, --multirun, --cfg")."""
    if not {"-m", "--multirun"} & set(args):
        return None
    rest, cfg_type, resolve, i = [], None, False, 0
    while i < len(args):
        a = args[i]
        if a in ("-m", "--multirun"):
            pass
        elif a in ("--cfg", "-c") and i + 1 < len(args):
            cfg_type, i = args[i + 1], i + 1
        elif a.startswith("--cfg="):
            cfg_type = a.split("=", 1)[1]
        elif a == "--resolve":
            resolve = True
        elif a.startswith("-"):
            return None  # another Hydra flag: Hydra answers
        else:
            rest.append(a)
        i += 1
    return (cfg_type, resolve, rest) if cfg_type in ("job", "hydra", "all") else None


def _print_sweep_configs(cfg_type: str, resolve: bool, overrides: list[str]) -> int:
    """Each job's composed config, as ``--cfg`` prints one run's, headed by its overrides."""
    import itertools

    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from harness.config import conf_dir

    parsed = OverridesParser.create().parse_overrides(overrides)
    axes = []
    for o in parsed:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        axes.append([f"{key}={v}" if not o.is_delete() or v else key for v in values])
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name="harness"):
        for num, job in enumerate(itertools.product(*axes)):
            cfg = compose("config", overrides=list(job), return_hydra_config=cfg_type != "job")
            if cfg_type == "hydra":
                cfg = OmegaConf.create({"hydra": cfg.hydra})
            elif cfg_type == "job" and "hydra" in cfg:
                del cfg["hydra"]
            print(f"# job {num}: {' '.join(job) or '(defaults)'}")
            print(OmegaConf.to_yaml(cfg, resolve=resolve))
    return 0


def cmd_run(args: list[str]) -> int:
    import hydra

    from harness.app import task
    from harness.config import conf_dir, register_configs
    from harness.host import PluginError

    try:
        register_configs()
    except PluginError as exc:
        return _fail(str(exc), 1)
    request = _sweep_cfg_request(args)
    if request is not None:
        try:
            return _print_sweep_configs(*request)
        except Exception as exc:  # a bad override: say which, as Hydra would
            return _fail(f"run {' '.join(args)}: {type(exc).__name__}: {exc}", 1)
    entry = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(task)
    saved = sys.argv
    sys.argv = ["harness run", *args]
    try:
        entry()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def _print_plugin_warnings_plainly() -> None:
    """Show a broken plugin's warning as one ``harness: warning: ...`` line on stderr."""
    import warnings

    from harness.host import PluginWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PluginWarning):
            print(f"harness: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def cmd_dashboard(args: list[str]) -> int:
    from harness.dashboard.cli import main as dashboard_main  # mlflow loads only in here

    return dashboard_main(args)


COMMANDS = {"run": cmd_run, "plugins": cmd_plugins, "ui": cmd_ui, "dashboard": cmd_dashboard}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        print(f"harness {__version__}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        return _fail(f"unknown command {argv[0]!r}; valid commands: {', '.join(COMMANDS)} (see harness --help)")
    _print_plugin_warnings_plainly()
    try:
        return command(argv[1:])
    except BrokenPipeError:  # `harness plugins | head`: the reader left, not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
