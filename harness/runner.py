"""One experiment, start to record.

:func:`run_experiment` takes the composed config and the plugin choices and
returns a :class:`~harness.record.Record`; it never talks to MLflow. That split is
what lets the Ray launcher run experiments on workers that share nothing with the
driver: the worker returns the record, the driver writes it.

A failure in any plugin is caught here and turned into a FAILED record carrying
the traceback (as ``traceback.txt``), so a sweep keeps what the failing run had
already measured and says exactly where it broke. A composition that cannot run at
all (a broken plugin chosen, one plugin needing a capability the others do not
provide, or a config value outside what its field declares valid) raises from
:func:`experiment_identity` before any record exists.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import socket
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any, Mapping

from harness import __version__
from harness.api import RunContext
from harness.config import config_hash, flatten, plugin_params
from harness.host import Host, get_host
from harness.numerics.backend import EXACT, bind
from harness.plots import curves_png
from harness.record import FAILED, FINISHED, KILLED, Record
from harness.specs import KINDS, CapabilityError
from harness.validation import ConfigError, valid, validate_config, value_problems
from harness.code_digest import source_digest
from harness.technique_cache import cached_apply, technique_key

__all__ = [
    "ExperimentFailed",
    "check_capabilities",
    "compare_claims",
    "experiment_identity",
    "git_state",
    "run_experiment",
]

log = logging.getLogger("harness")


class ExperimentFailed(RuntimeError):
    """Raised after a FAILED record was produced, to make the command exit non-zero."""


#: ``git_state`` answers per folder, reused for this many seconds: a sweep's worker runs
#: many short jobs, and two git processes per job cost more than a trivial job itself.
GIT_STATE_TTL_S = 60.0
_git_states: dict[str, tuple[float, tuple[str, str]]] = {}


def git_state(path: Path | None = None) -> tuple[str, str]:
    """(commit, dirty flag) of the code that ran, or ("unknown", "unknown")."""
    where = str(path or Path(__file__).resolve().parent)
    now = time.monotonic()
    cached = _git_states.get(where)
    if cached is not None and now - cached[0] < GIT_STATE_TTL_S:
        return cached[1]
    state = _git_state(where)
    _git_states[where] = (now, state)
    return state


def _git_state(where: str) -> tuple[str, str]:
    try:
        commit = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        return commit, str(bool(status.strip())).lower()
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"


def _build_config(spec, values: Mapping[str, Any]) -> Any:
    """The plugin's config instance from ``values``, checked against the valid values its
    fields declare (:func:`harness.validation.validate_config`); raises ConfigError."""
    try:
        instance = spec.config(**dict(values))
    except TypeError as exc:
        raise ConfigError(f"{spec.kind} {spec.name!r}: bad config {dict(values)!r}: {exc}") from None
    validate_config(instance, spec.kind, spec.name)
    return instance


#: The run seed's valid values: derive_seed folds seeds modulo 2**63, so a larger one
#: would silently repeat a smaller one's randomness.
SEED_RULE = valid(ge=0, le=2**63 - 1, why="seeds are folded to 63 bits")["valid"]


def compare_claims(infos, configs: Mapping[str, Any], workload: str, metrics: Mapping[str, float]) -> list[dict]:
    """Each applicable claim of the plugins used, next to what this run measured."""
    rows = []
    for info in infos:
        params = plugin_params(configs[info.kind])
        for claim in info.spec.claims:
            if not claim.applies_to(params):
                continue
            measured = metrics.get(claim.metric)
            same = claim.workload is None or claim.workload == workload
            if measured is None:
                status = "not measured"
            elif same:
                status = "comparable"
            else:
                status = f"different workload: paper used {claim.workload}, this run {workload}"
            rows.append(
                {
                    "kind": info.kind,
                    "plugin": info.name,
                    "metric": claim.metric,
                    "claimed": claim.value,
                    "measured": measured,
                    "ratio": (measured / claim.value) if (measured is not None and claim.value) else None,
                    "unit": claim.unit,
                    "paper_experiment": claim.experiment,
                    "paper_workload": claim.workload or "any",
                    "status": status,
                }
            )
    return rows


def _finite(metrics: Mapping[str, float], source: str) -> dict[str, float]:
    bad = {k: v for k, v in metrics.items() if not isinstance(v, (int, float)) or not math.isfinite(float(v))}
    if bad:
        raise ValueError(f"{source} returned non-finite or non-numeric metrics: {bad}")
    return {k: float(v) for k, v in metrics.items()}


def _prefixed(metrics: Mapping[str, float], stage: str, suffix: str = "") -> dict[str, float]:
    return {(k if "/" in k else f"{stage}/{k}") + suffix: v for k, v in metrics.items()}


def _plural(kind: str) -> str:
    return f"{kind}s"


def check_capabilities(infos, host: Host | None = None) -> None:
    """Raise :class:`~harness.specs.CapabilityError` unless every capability a chosen
    plugin ``needs`` is in what the other chosen plugins ``provide``.

    ``infos`` are the chosen plugins (anything with ``kind``, ``name`` and ``spec``).
    The message names both sides, what is missing, and the installed plugins of the
    providing kind that do provide it.
    """
    host = host or get_host()
    problems = []
    for info in infos:
        others = [o for o in infos if o is not info]
        offered = frozenset().union(*(o.spec.provides for o in others))
        missing = sorted(info.spec.needs - offered)
        if not missing:
            continue
        # Name the plugins that provide something (the workload, in practice), or the workload.
        named = [o for o in others if o.spec.provides] or [o for o in others if o.kind == "workload"] or others
        if len(named) == 1:
            (o,) = named
            what = ", ".join(sorted(o.spec.provides)) or "nothing"
            side = f"which {o.kind} {o.name!r} does not provide (it provides {what})"
        else:
            listed = ", ".join(
                f"{o.kind} {o.name!r} (provides {', '.join(sorted(o.spec.provides)) or 'nothing'})" for o in named
            )
            side = f"which none of {listed} provides"
        where = []
        for capability in missing:
            by_kind = {k: host.providers(capability, k) for k in KINDS if k != info.kind}
            found = [f"{_plural(k)} that provide {capability}: {', '.join(n)}" for k, n in by_kind.items() if n]
            where.append("; ".join(found) or f"no installed plugin provides {capability}")
        problems.append(f"{info.kind} {info.name!r} needs {', '.join(missing)}, {side}; " + "; ".join(where))
    if problems:
        raise CapabilityError("; ".join(problems))


def experiment_identity(
    choices: Mapping[str, str],
    plugin_values: Mapping[str, Mapping[str, Any]],
    seed: int = 0,
    host: Host | None = None,
) -> tuple[list, dict[str, Any], dict[str, dict[str, Any]], str]:
    """``(infos, configs, params, config_hash)`` of an experiment, without running it.

    One function builds the plugin configs for both the runner and the Ray
    launcher's driver, which hashes every job before launching to skip the ones
    already FINISHED: the two must agree on the hash, so they share this code.
    It is also where a composition is refused before anything runs:
    :class:`~harness.host.PluginError` for a broken plugin,
    :class:`~harness.specs.CapabilityError` for plugins that cannot work together
    (:func:`check_capabilities`), :class:`~harness.validation.ConfigError` listing
    every invalid value of the seed and the three plugin configs.
    """
    host = host or get_host()
    infos = [host.info(kind, choices[kind]) for kind in KINDS]
    check_capabilities(infos, host)
    problems = value_problems("seed", seed, SEED_RULE, int)
    configs = {}
    for info in infos:  # every invalid value of every plugin, in one error
        try:
            configs[info.kind] = _build_config(info.spec, plugin_values.get(info.kind, {}))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    params = {kind: plugin_params(configs[kind]) for kind in KINDS}
    return infos, configs, params, config_hash(choices, params, seed)


def run_experiment(
    choices: Mapping[str, str],
    plugin_values: Mapping[str, Mapping[str, Any]],
    seed: int = 0,
    cache_dir: str | os.PathLike = ".harness_cache",
    resolved_config_yaml: str | None = None,
    host: Host | None = None,
    technique_cache: bool = True,
) -> Record:
    """Run workload x technique x accelerator and return the record.

    ``choices`` maps each kind to a plugin name; ``plugin_values`` maps each kind
    to that plugin's config values (a mapping the config dataclass accepts).
    With ``technique_cache`` a technique whose spec allows it (``cache_result``)
    computes its result once per workload, technique, configs, seed and code, and
    every accelerator reuses it (:mod:`harness.technique_cache`).
    """
    record = Record(start_ms=int(time.time() * 1000))
    infos, configs, params, chash = experiment_identity(choices, plugin_values, seed, host)

    record.params["seed"] = str(seed)
    for kind in KINDS:
        record.params[kind] = choices[kind]
        for key, value in flatten(params[kind], kind).items():
            record.params[key] = str(value)
    commit, dirty = git_state()
    record.tags.update(
        {
            "harness.config_hash": chash,
            "harness.version": __version__,
            "harness.seed": str(seed),
            "harness.host": socket.gethostname(),
            "harness.python": platform.python_version(),
            "mlflow.source.git.commit": commit,
            # MLflow 3.17's run page shows the commit only next to a source name.
            "mlflow.source.name": "harness",
            "mlflow.source.type": "LOCAL",
            "harness.git_dirty": dirty,
        }
    )
    for info in infos:
        record.tags[f"harness.{info.kind}"] = info.name
        record.tags[f"harness.{info.kind}.distribution"] = f"{info.distribution} {info.version}".strip()
    if resolved_config_yaml is not None:
        record.artifacts["config.yaml"] = resolved_config_yaml.encode()

    ctx = RunContext(seed=seed, cache_dir=cache_dir, record=record)
    stage = "setup"
    started, started_cpu = time.perf_counter(), time.process_time()
    try:
        stage = "workload factory"
        workload = infos[0].spec.factory(configs["workload"])
        stage = "technique factory"
        technique = infos[1].spec.factory(configs["technique"])
        stage = "accelerator factory"
        accelerator = infos[2].spec.factory(configs["accelerator"])

        stage = f"workload {choices['workload']!r} build"
        subject = workload.build(ctx)
        stage = f"technique {choices['technique']!r} apply"
        if technique_cache and getattr(infos[1].spec, "cache_result", False):
            code = {info.kind: source_digest(info.spec.factory) for info in infos[:2]}
            key = technique_key(choices, params, seed, code)
            base = subject
            subject, _ = cached_apply(cache_dir, key, record, lambda: technique.apply(base, workload, ctx))
        else:
            subject = technique.apply(subject, workload, ctx)

        numerics = getattr(accelerator, "numerics", None)
        simulated = numerics is not None and numerics is not EXACT
        stage = f"workload {choices['workload']!r} evaluate on {choices['accelerator']!r}"
        if simulated:
            # Bound to the run: every GEMM call gets a seed derived from the run's
            # seed and its op, and weight preparation is done once per tensor.
            bound = bind(numerics, seed=ctx.child_seed("numerics"))
            observe = getattr(numerics, "observe", None)
            if callable(observe):
                observe()  # forget what the numerics saw before this evaluation
            quality = _finite(workload.evaluate(subject, bound, ctx), stage)
            ctx.log_metrics(_prefixed(quality, "eval"))
            if callable(observe):
                stage = f"accelerator {choices['accelerator']!r} observe"
                seen = _prefixed(_finite(observe() or {}, stage), "numerics")
                # The workload's own measurement of a metric wins over the numerics'.
                ctx.log_metrics({k: v for k, v in seen.items() if k not in record.metrics})
            ctx.set_tag("numerics.contract", "v1" if bound.v1 else "v2")
        stage = f"workload {choices['workload']!r} evaluate on exact numerics"
        exact = _finite(workload.evaluate(subject, bind(EXACT, seed=ctx.child_seed("numerics")), ctx), stage)
        ctx.log_metrics(_prefixed(exact, "eval", "_exact"))
        if not simulated:
            ctx.log_metrics(_prefixed(exact, "eval"))
        measured = record.metrics.get("eval/accuracy")
        if measured is not None and "accuracy" in exact and "eval/accuracy_drop_points" not in record.metrics:
            # What the accelerator's numerics cost in accuracy, in points (claims and
            # dashboards condition on it, e.g. "<= 0.3"); 0 on exact numerics.
            ctx.log_metric("eval/accuracy_drop_points", 100.0 * (float(exact["accuracy"]) - measured))

        stage = f"workload {choices['workload']!r} op trace"
        trace = workload.op_trace(subject)
        ctx.log_metrics(trace.summary())
        ctx.log_table("op_trace", trace.rows())
        stage = f"accelerator {choices['accelerator']!r} cost"
        cost = _finite(accelerator.cost(trace, ctx), stage)
        ctx.log_metrics(_prefixed(cost, "accelerator"))
        record.status = FINISHED
    except KeyboardInterrupt as exc:  # Ctrl-C: the caller records what there is as KILLED
        record.status = KILLED
        record.error = f"{stage}: interrupted (Ctrl-C)"
        record.tags["harness.failed_stage"] = stage
        _time_tags(record, started, started_cpu)
        record.end_ms = int(time.time() * 1000)
        exc.record = record
        raise
    except Exception as exc:  # any plugin failure becomes a FAILED record
        record.status = FAILED
        record.error = f"{stage}: {type(exc).__name__}: {exc}"
        record.artifacts["traceback.txt"] = traceback.format_exc().encode()
        record.tags["harness.failed_stage"] = stage
        log.error("run failed in %s: %s", stage, exc)

    _time_tags(record, started, started_cpu)
    curves = curves_png(record)
    if curves is not None:
        record.artifacts["plots/curves.png"] = curves
    claims = compare_claims(infos, configs, choices["workload"], record.metrics)
    if claims:
        ctx.log_table("claims", claims)
        ctx.log_json("claims.json", claims)
        record.tags["harness.claims"] = str(len(claims))
    record.end_ms = int(time.time() * 1000)
    return record


def _time_tags(record: Record, started: float, started_cpu: float) -> None:
    """The run's wall time and the CPU time its process spent on it, all threads (tags, not
    metrics: they are measurements of the machine, and vary run to run). Their ratio tells a
    run that computed (about 1 per thread it kept busy) from one that waited, for example on
    another job's technique result."""
    record.tags["harness.duration_s"] = f"{time.perf_counter() - started:.3f}"
    record.tags["harness.cpu_s"] = f"{time.process_time() - started_cpu:.3f}"


def format_summary(record: Record) -> str:
    """A few human lines for the end of a run."""
    lines = [f"status: {record.status}  config_hash: {record.config_hash}"]
    if record.error:
        lines.append(f"error: {record.error}")
    for name in sorted(record.metrics):
        lines.append(f"  {name:<40s} {record.metrics[name]:.6g}")
    return "\n".join(lines)

