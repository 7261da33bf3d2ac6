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
from pathlib import Path

from harness import __version__

USAGE = f"""\
usage: harness <command> [args]

A benchmarking harness for neural-network accelerators and compression
techniques (version {__version__}). One experiment = workload x technique x
accelerator; every run is recorded in MLflow.

commands:
  run [--verbose] [OVERRIDES]
                        run one experiment, or a sweep with -m (Hydra flags work:
                        --cfg job, --info, --help; --verbose or HYDRA_FULL_ERROR=1
                        shows tracebacks). Example:
                          harness run -m workload=dot_products accelerator=exact,ds_cim
  plugins [--json|--markdown] [--strict]
                        list installed workloads, techniques and accelerators
                        (broken plugins are listed as such; --strict fails on them)
  ui [--port N]         serve the MLflow UI for the configured store on 127.0.0.1
                        (prints a link to each experiment's runs)
  flush [--cache-dir D] write records kept on disk because the store failed after
                        their run (D/pending_records; the next run also does)
  dashboard SPEC [--sweep ID] [--experiment NAME] [--out FILE] [--list]
                        render a dashboard spec to one offline HTML file (and file
                        it with the sweep's parent run); see docs/dashboards.md
  ray-stop              stop the local Ray a sweep left running with
                        hydra.launcher.keep_ray=true (by its process group id)
  compare (--sweeps A B | --commits REV1 REV2 [OVERRIDES]) [--factor F]
                        compare two sweeps, or one sweep (default +experiment=perf)
                        run at two git commits in temporary worktrees, metric by
                        metric; exits 1 on a regression beyond the factor (1.1)

environment:
  MLFLOW_TRACKING_URI       where runs are recorded (default: sqlite:///mlflow.db here)
  HARNESS_DISABLE_PLUGINS   comma-separated plugin names to skip
  HARNESS_STRICT_PLUGINS    1: a broken plugin is an error, not a warning (for CI)
"""


def _fail(message: str, code: int = 2) -> int:
    print(f"harness: {message}", file=sys.stderr)
    return code


def argument_parser(prog: str, **kwargs):
    """An ``argparse`` parser whose errors are one line (with where to find the usage),
    exit 2, like every other user error of the harness."""
    import argparse

    class OneLineErrors(argparse.ArgumentParser):
        def error(self, message):
            self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    return OneLineErrors(prog=prog, **kwargs)


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


def _port_problem(port: int) -> str:
    """Why ``harness ui`` cannot serve on 127.0.0.1:``port``, or ``""``."""
    import socket

    if not 1 <= port <= 65535:
        return f"--port {port}: not a TCP port; valid is 1-65535"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return f"--port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); choose another with --port N"
    return ""


def experiment_links(base: str, timeout: float = 10.0) -> list[tuple[str, str]]:
    """``(experiment name, link)`` for each experiment of the server at ``base``: the
    link opens its runs table (MLflow 3.17 opens experiments in the GenAI traces view
    unless ``workflowType=machine_learning`` is in the route)."""
    import urllib.request

    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/experiments/search",
        data=json.dumps({"max_results": 1000}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        experiments = json.loads(answer.read().decode()).get("experiments", [])
    return [
        (e["name"], f"{base}/#/experiments/{e['experiment_id']}/runs?workflowType=machine_learning")
        for e in sorted(experiments, key=lambda e: int(e["experiment_id"]) if str(e["experiment_id"]).isdigit() else 0)
    ]


def _serving(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def cmd_ui(args: list[str]) -> int:
    import argparse
    import time

    parser = argument_parser("harness ui", description="Serve the MLflow UI on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    parser.add_argument("--tracking-uri", default="", help="store to browse (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for the server (default 60)")
    ns = parser.parse_args(args)
    from harness.store import StoreError, check_store
    from harness.tracking import resolve_tracking_uri

    problem = _port_problem(ns.port)
    if problem:
        return _fail(f"ui: {problem}")
    uri = resolve_tracking_uri(ns.tracking_uri or None)
    try:
        check_store(uri)
    except StoreError as exc:
        return _fail(f"ui: {exc}", 1)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    cmd = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", uri,
        "--host", "127.0.0.1",
        "--port", str(ns.port),
        "--workers", "1",
    ]
    base = f"http://127.0.0.1:{ns.port}"
    print(f"MLflow UI for {uri}: starting at {base} (Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(cmd, env=env)

    def _forward(signum, _frame):
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, _forward)
    try:
        deadline = time.monotonic() + ns.start_timeout
        while proc.poll() is None and not _serving(ns.port):
            if time.monotonic() > deadline:
                proc.terminate()
                proc.wait()
                return _fail(f"ui: the MLflow server did not answer on {base} within {ns.start_timeout:g} s", 1)
            time.sleep(0.3)
        if proc.poll() is not None:  # it exited before serving (port taken since, bad store ...)
            return _fail(f"ui: the MLflow server exited (code {proc.returncode}) before serving on {base}", proc.returncode or 1)
        try:
            links = experiment_links(base)
        except Exception as exc:  # the UI works without the list
            print(f"harness: ui: could not list experiments ({exc}); open {base}", file=sys.stderr)
            links = []
        print(f"MLflow UI for {uri} at {base}", flush=True)
        for name, link in links:
            print(f"  {name}: {link}", flush=True)
        code = proc.wait()
        return code
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()
        return 130


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


def _verbose_requested(args: list[str]) -> tuple[bool, list[str]]:
    """``--verbose`` (ours, removed from ``args``) or ``HYDRA_FULL_ERROR=1``."""
    verbose = os.environ.get("HYDRA_FULL_ERROR", "") == "1"
    rest = [a for a in args if a != "--verbose"]
    return verbose or len(rest) != len(args), rest


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def error_message(exc: BaseException) -> tuple[str, int]:
    """``(one or two lines, exit code)`` for an error ending ``harness run``.

    User errors (a bad override or value, a store that cannot be used, a cluster
    that does not answer, a failed run) are named in a line or two; anything else
    is an internal error, shown with its type and a hint to rerun with --verbose.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from harness.app import RecordPending
    from harness.host import PluginError
    from harness.runner import ExperimentFailed
    from harness.specs import CapabilityError
    from harness.store import StoreError
    from harness.validation import ConfigError

    text = str(exc).strip()
    if text.startswith("harness: "):
        text = text[len("harness: "):]
    if isinstance(exc, (StoreError, RecordPending, ConfigError, PluginError, CapabilityError)):
        return text, (1 if isinstance(exc, (StoreError, RecordPending)) else 2)
    if isinstance(exc, ExperimentFailed):
        return text, 1
    missing = _missing_choice(exc)
    if missing:
        return missing, 2
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        cause = exc.__cause__
        lines = [_first_line(text)]
        if isinstance(cause, OmegaConfBaseException) and _first_line(str(cause)) not in lines[0]:
            lines.append(_first_line(str(cause)))
        else:  # Hydra's own detail lines ("Available options in 'accelerator':" + one per line)
            rest = [line.strip() for line in text.splitlines()[1:] if line.strip()]
            if rest:
                lines.append(rest[0] + " " + ", ".join(rest[1:]) if rest[0].endswith(":") else " ".join(rest))
        return "\n  ".join(line for line in lines if line), 2
    try:
        from harness.launcher.cluster import ClusterUnreachable

        if isinstance(exc, ClusterUnreachable):
            return text, 1
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (ValueError, TypeError, KeyError)) and type(exc).__module__ in ("builtins",) and _from_harness_config(exc):
        return _first_line(text), 2
    return f"{type(exc).__name__}: {_first_line(text)} (internal error; rerun with --verbose for the traceback)", 1


def _missing_choice(exc: BaseException) -> str:
    """``workload=nope: no such option; valid: a, b`` for Hydra's missing config group option."""
    import re

    from hydra.errors import MissingConfigException

    if not isinstance(exc, MissingConfigException):
        return ""
    text = str(exc)
    found = re.search(r"Could not find '(.+)/([^/']+)'", text)
    if not found:
        return ""
    group, name = found.groups()
    options = []
    for line in text.splitlines()[1:]:
        line = line.strip()
        if line.startswith("Config search path"):
            break
        if line and not line.startswith("Available options"):
            options.append(line)
    key = group if group.startswith("hydra/") or group in ("workload", "technique", "accelerator") else f"+{group}"
    valid = f"; valid: {', '.join(options)}" if options else ""
    return f"{key}={name}: no such {group.split('/')[-1]} option{valid}"


def _from_harness_config(exc: BaseException) -> bool:
    """A ValueError raised by the launcher's option checks (``hydra.launcher.X=...: ...``)."""
    text = str(exc)
    return text.startswith("hydra.launcher.") or text.startswith("hydra/launcher=")


def _multirun_first(args: list[str]) -> list[str]:
    """``-m``/``--multirun`` anywhere among the overrides (Hydra's parser takes it only
    before them)."""
    flags = [a for a in args if a in ("-m", "--multirun")]
    return flags[:1] + [a for a in args if a not in ("-m", "--multirun")] if flags else args


def _unparsable_override(args: list[str]) -> str:
    """``OVERRIDE: what is wrong`` for the first override Hydra cannot parse, if any."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:  # a flag, a flag's value (--cfg job), or Hydra's to judge
            continue
        if arg.startswith("="):
            return f"run: {arg}: an override is KEY=VALUE (for example workload.count=64)"
        try:
            parser.parse_overrides([arg])
        except Exception as exc:
            first = _first_line(str(exc)).replace("Error parsing override ", "")
            return (f"run: {arg}: not a valid override ({first}); "
                    "see https://hydra.cc/docs/advanced/override_grammar/basic/")
    return ""


def _empty_sweep(args: list[str]) -> str:
    """The first sweep override with no values (``seed=range(0)``), if any."""
    if not {"-m", "--multirun"} & set(args):
        return ""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    candidates = [a for a in args if not a.startswith("-") and "=" in a]
    try:
        parsed = OverridesParser.create().parse_overrides(candidates)
    except Exception:  # Hydra names a malformed override itself
        return ""
    for o in parsed:
        if o.is_sweep_override():
            try:
                if not list(o.sweep_string_iterator()):
                    return o.input_line
            except Exception:
                return ""
    return ""


def _interrupt_noise(info, interrupted: bool) -> bool:
    """Whether an unraisable exception (``sys.unraisablehook``'s ``info``) is only what
    Ctrl-C leaves behind: the ignored KeyboardInterrupt itself, or, once interrupted,
    llvmlite's finalizer failing on a compiler object the interrupt stopped half-built
    (``AttributeError: ... '_as_parameter_'`` at exit when Ctrl-C lands in a numba compile)."""
    if isinstance(info.exc_value, KeyboardInterrupt):
        return True
    module = getattr(info.object, "__module__", None) or ""
    return interrupted and isinstance(info.exc_value, AttributeError) and module.split(".")[0] == "llvmlite"


def _interruptible():
    """Ctrl-C that always ends a single run: Python ignores a KeyboardInterrupt raised
    inside a finalizer or weakref callback (SQLAlchemy has some), so until the main
    code has handled it, the interrupt is raised again every second. Returns the event
    to set once handled."""
    import threading

    asked, handled = threading.Event(), threading.Event()

    def on_sigint(signum, frame):
        asked.set()
        raise KeyboardInterrupt

    def insist():
        asked.wait()
        while not handled.wait(1.0):
            os.kill(os.getpid(), signal.SIGINT)

    shown = sys.unraisablehook

    def unraisable(info):  # the interrupt's own noise: no "Exception ignored in ..." traceback
        if not _interrupt_noise(info, asked.is_set()):
            shown(info)

    sys.unraisablehook = unraisable
    signal.signal(signal.SIGINT, on_sigint)
    threading.Thread(target=insist, name="harness-sigint", daemon=True).start()
    return handled


class _HydraJobErrorFilter:
    """stderr without Hydra's "Error executing job with overrides: [...]" line: the
    error itself follows in one line of ours (``--verbose`` keeps everything)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        if text.startswith("Error executing job with overrides:"):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _numba_cache_dir(args: list[str]) -> str | None:
    """Where this command's numba kernels are cached: ``<cache_dir>/numba``, the folder a
    sweep's Ray workers use, so a single run and a sweep compile each kernel once between
    them (numba's default is a ``__pycache__`` next to the harness's own source). None when
    ``NUMBA_CACHE_DIR`` is set already or ``cache_dir`` is swept. Read from the command
    line (the config's default otherwise): it must be set before any plugin imports numba,
    so before Hydra composes the config; a preset that sets ``cache_dir`` is not seen."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    from harness.config import HarnessConfig, numba_cache_folder

    cache_dir = HarnessConfig.cache_dir
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "cache_dir":
            cache_dir = value.strip("'\"")
    if "," in cache_dir or "(" in cache_dir or "$" in cache_dir:  # a sweep or an interpolation
        return None
    return str(Path(numba_cache_folder(cache_dir)).resolve())


def cmd_run(args: list[str]) -> int:
    import hydra

    from harness.app import task
    from harness.config import conf_dir, register_configs
    from harness.host import PluginError

    verbose, args = _verbose_requested(args)
    numba_cache = _numba_cache_dir(args)
    if numba_cache is not None:
        os.environ["NUMBA_CACHE_DIR"] = numba_cache
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
    args = _multirun_first(args)
    bad = _unparsable_override(args)
    if bad:
        return _fail(bad)
    empty = _empty_sweep(args)
    if empty:
        return _fail(f"run: {empty}: this sweep has no values, so there is nothing to run; "
                     "give at least one (for example seed=range(0,3) or seed=0,1,2)")
    entry = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(task)
    saved, saved_full, saved_err = sys.argv, os.environ.get("HYDRA_FULL_ERROR"), sys.stderr
    sys.argv = ["harness run", *args]
    # Hydra re-raises instead of printing its own report; we print one (or two) lines.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    if not verbose:
        sys.stderr = _HydraJobErrorFilter(sys.stderr)
    handled = _interruptible() if not {"-m", "--multirun"} & set(args) else None
    try:
        entry()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        if handled is not None:
            handled.set()
        print("\nharness: interrupted (Ctrl-C); a single run is recorded KILLED, a sweep's parent run is "
              "marked KILLED and a rerun resumes it", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        message, code = error_message(exc)
        print(f"harness: {message}", file=sys.stderr, flush=True)
        return code
    finally:
        sys.argv, sys.stderr = saved, saved_err
        if saved_full is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full
    return 0


def cmd_flush(args: list[str]) -> int:
    """Write pending records (kept when the store failed after a run) to their stores."""
    import argparse

    parser = argument_parser(
        "harness flush",
        description="Write the records kept in CACHE_DIR/pending_records (runs whose store failed) to their stores.",
    )
    parser.add_argument("--cache-dir", default=".harness_cache", help="the runs' cache_dir (default .harness_cache)")
    ns = parser.parse_args(args)
    from harness.store import flush_pending, pending_dir, pending_files

    if not pending_files(ns.cache_dir):
        print(f"harness: no pending records in {pending_dir(ns.cache_dir)}")
        return 0
    written, left = flush_pending(ns.cache_dir, out=sys.stdout)
    print(f"harness: {written} pending record(s) written, {left} left in {pending_dir(ns.cache_dir)}")
    return 1 if left else 0


def cmd_ray_stop(args: list[str]) -> int:
    """Stop the private Ray kept running by ``hydra.launcher.keep_ray=true``."""
    parser = argument_parser(
        "harness ray-stop", description="Stop the local Ray a sweep left running with hydra.launcher.keep_ray=true."
    )
    parser.parse_args(args)
    from harness.launcher import kept_ray

    info = kept_ray.stop()
    if info is None:
        print(f"harness: no kept Ray recorded in {kept_ray.record_path()}")
    else:
        print(f"harness: stopped the kept Ray at {info.get('address')} (process group {info.get('pid')})")
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


def cmd_compare(args: list[str]) -> int:
    from harness.compare_cli import main as compare_main  # mlflow loads only in here

    return compare_main(args)


def cmd_dashboard(args: list[str]) -> int:
    from harness.dashboard.cli import main as dashboard_main  # mlflow loads only in here

    return dashboard_main(args)


COMMANDS = {
    "run": cmd_run, "plugins": cmd_plugins, "ui": cmd_ui, "dashboard": cmd_dashboard, "flush": cmd_flush,
    "compare": cmd_compare, "ray-stop": cmd_ray_stop,
}


def _quick_exit_gc() -> None:
    """At exit, leave the objects that exist to the OS instead of Python's final garbage
    collections: with MLflow, Hydra and Ray loaded those took 1.2-1.5 s after a sweep's
    last line (measured). It runs as an atexit hook registered before the command, so
    the hooks registered later (MLflow, Ray, temporary folders) have run; logging's
    own hook runs after it and still flushes and closes every handler."""
    import gc

    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import atexit

    atexit.unregister(_quick_exit_gc)  # once, however often main() is called in a process
    atexit.register(_quick_exit_gc)
    if not argv:  # a command is required: usage on stderr, as argparse does
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
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
