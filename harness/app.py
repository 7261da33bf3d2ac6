"""The Hydra side of a run: composed config in, record out, record into MLflow.

:func:`record_for` turns one composed job config into a record without touching
the tracking store; :func:`task` is the Hydra task function that also writes it.
On ``hydra/launcher=harness_ray`` the task function's ``sweep_hook`` (the
harness's :class:`~harness.launcher.harness_hook.HarnessSweepHook`) runs
:func:`record_task` on the workers instead and writes every record on the
driver: one writer, whatever the number of workers.

Parameters that belong to one choice are spelled ``when.KIND.CHOICE.PARAM``
(``when.technique.admm.ratio=10,30``): applied only to jobs whose KIND is
CHOICE, ignored by the others, so a sweep over ``technique=none,admm`` runs
``none`` once (its jobs differ in nothing that reaches it: same config hash).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.record import FAILED, Record
from harness.runner import ExperimentFailed, experiment_identity, format_summary, run_experiment
from harness.specs import KINDS
from harness.validation import ConfigError

__all__ = [
    "ConfigError", "choices_of", "config_hash_of", "label_single_run", "plugin_values", "record_for", "record_task",
    "run_name", "task",
]

log = logging.getLogger("harness")


def choices_of(cfg: DictConfig) -> dict[str, str]:
    """The plugin chosen for each kind in the job being run."""
    from hydra.core.hydra_config import HydraConfig

    runtime_choices = HydraConfig.get().runtime.choices
    return {kind: runtime_choices[kind] for kind in KINDS}


def _job_config_yaml(cfg: DictConfig, values: dict[str, Any]) -> str:
    """The resolved config as the run used it: per-choice values applied, ``when`` gone."""
    from harness.launcher.remote import container_to_yaml

    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    plain.pop("when", None)
    plain.update(values)
    return container_to_yaml(plain)


def _when_values(cfg: DictConfig, choices: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The ``when.KIND.CHOICE.*`` entries that apply to ``choices``, checked: an
    unknown kind, choice or parameter is an error naming what is valid."""
    from harness.host import get_host

    when = cfg.get("when")
    if not when:
        return {}
    host = get_host()
    out: dict[str, dict[str, Any]] = {}
    for kind, per_choice in when.items():
        if kind not in KINDS:
            raise ConfigError(f"when.{kind}: unknown kind; valid: {', '.join(f'when.{k}' for k in KINDS)}")
        for name, values in (per_choice or {}).items():
            try:
                spec = host.info(kind, str(name)).spec
            except KeyError as exc:
                raise ConfigError(f"when.{kind}.{name}: {exc.args[0]}") from None
            if not OmegaConf.is_dict(values):
                raise ConfigError(f"when.{kind}.{name}={values!r}: give parameters, e.g. when.{kind}.{name}.PARAM=VALUE")
            fields = [f.name for f in dataclasses.fields(spec.config)]
            for key in values:
                if key not in fields:
                    raise ConfigError(
                        f"when.{kind}.{name}.{key}: {kind} {name!r} has no parameter {key!r}; "
                        f"valid: {', '.join(fields) or '(none)'}"
                    )
            if choices[kind] == name:
                # Type-checked against the plugin's own config node, as `technique.ratio=` would be.
                merged = OmegaConf.merge(cfg[kind], values) if OmegaConf.is_config(cfg[kind]) else values
                out[kind] = {k: merged[k] for k in values}
    return out


def plugin_values(cfg: DictConfig, choices: dict[str, str] | None = None) -> dict[str, Any]:
    """Each kind's plugin config values in ``cfg``, as plain containers, with the
    chosen plugin's ``when.KIND.CHOICE.*`` values applied."""
    values = {kind: OmegaConf.to_container(cfg[kind], resolve=True) or {} for kind in KINDS}
    if cfg.get("when"):
        for kind, own in _when_values(cfg, choices or choices_of(cfg)).items():
            values[kind].update(OmegaConf.to_container(OmegaConf.create(own), resolve=True))
    return values


def config_hash_of(cfg: DictConfig, choices: dict[str, str]) -> str:
    """The config hash the run of ``cfg`` will be recorded under (without running it);
    also where the root keys that are not plugin configs are checked."""
    name = str(cfg.get("experiment_name", "") or "")
    if not name.strip() or len(name) > 256:
        raise ConfigError(f"experiment_name={name!r}: valid is a non-empty name of at most 256 characters")
    if not str(cfg.get("cache_dir", "") or "").strip():
        raise ConfigError("cache_dir='': valid is a folder path (default .harness_cache)")
    return experiment_identity(choices, plugin_values(cfg, choices), int(cfg.seed))[3]


def record_for(cfg: DictConfig, choices: dict[str, str] | None = None) -> Record:
    """Run the experiment ``cfg`` describes and return its record."""
    choices = choices or choices_of(cfg)
    values = plugin_values(cfg, choices)
    return run_experiment(
        choices,
        values,
        seed=int(cfg.seed),
        cache_dir=str(Path(cfg.cache_dir).expanduser().resolve()),
        resolved_config_yaml=_job_config_yaml(cfg, values),
        technique_cache=bool(cfg.get("technique_cache", True)),
    )


def record_task(cfg: DictConfig) -> Record:
    """What a sweep's workers run (inside Hydra's ``run_job``): the record, unwritten."""
    return record_for(cfg)


def run_name(record: Record, overrides: list[str] | None = None) -> str:
    """A single run's name: its plugins, the overrides given, the seed (:mod:`harness.naming`)."""
    from harness.naming import parse_overrides, run_name as name_of

    p = record.params
    return name_of({kind: p.get(kind, "?") for kind in KINDS}, p.get("seed", "?"), parse_overrides(overrides or []))


def label_single_run(record: Record, overrides: list[str]) -> str:
    """Give a single run (``harness run`` without ``-m``) its description tag; return its name."""
    import shlex

    from harness.naming import describe_run, parse_overrides

    given = {k: v for k, v in parse_overrides(overrides).items() if k not in KINDS and k != "seed"}
    record.tags.setdefault(
        "mlflow.note.content",
        describe_run(
            " ".join(["harness", "run", *(shlex.quote(str(o)) for o in overrides)]),
            {kind: record.params.get(kind, "?") for kind in KINDS},
            record.params.get("seed", "?"),
            record.config_hash,
            record.tags.get("mlflow.source.git.commit", ""),
            record.tags.get("harness.git_dirty", ""),
            given,
        ),
    )
    return run_name(record, overrides)


class RecordPending(RuntimeError):
    """The run's record could not be written and is kept on disk (the message says where)."""


def _record_interrupted(record: Record, tracker, cache_dir: str, experiment_name: str) -> None:
    """Write an interrupted single run as KILLED (kept on disk if the store refuses).

    A second Ctrl-C during this short write is ignored, so the record is never half
    written; the interrupt goes on as soon as it is stored.
    """
    import signal

    from hydra.core.hydra_config import HydraConfig

    from harness.store import PendingRecord, keep_pending

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        name = label_single_run(record, list(HydraConfig.get().overrides.task))
        try:
            run_id = tracker.write(record, name)
            where = f"run {run_id} recorded as KILLED in experiment {experiment_name!r} at {tracker.tracking_uri}"
        except Exception as exc:
            path = keep_pending(cache_dir, PendingRecord(record, name, tracker.tracking_uri, experiment_name, error=str(exc)))
            where = f"its KILLED record could not be written ({type(exc).__name__}) and is kept in {path}"
        print(f"harness: interrupted in {record.tags.get('harness.failed_stage', '?')}; {where}", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def task(cfg: DictConfig) -> str:
    """Hydra task function: run, write to MLflow, fail loudly if the run failed."""
    from hydra.errors import CompactHydraException

    from harness.host import PluginError
    from harness.specs import CapabilityError
    from harness.tracking import MlflowTracker

    from harness.store import PendingRecord, flush_pending, keep_pending

    try:
        choices = choices_of(cfg)
        config_hash_of(cfg, choices)  # refuse a bad config before the store is even opened
        # The store first: a bad one fails in seconds, before anything trains (harness.store).
        tracker = MlflowTracker(cfg.tracking_uri or None, cfg.experiment_name)
        cache_dir = str(Path(cfg.cache_dir).expanduser().resolve())
        flush_pending(cache_dir, tracker.tracking_uri)  # records an earlier run could not write
        try:
            record = record_for(cfg, choices)
        except KeyboardInterrupt as exc:  # Ctrl-C mid-run: record it KILLED, then stop
            if getattr(exc, "record", None) is not None:
                _record_interrupted(exc.record, tracker, cache_dir, cfg.experiment_name)
            raise
    except (CapabilityError, PluginError, ConfigError) as exc:  # refused before it started: one line, no run recorded
        raise CompactHydraException(f"harness: {exc}") from exc
    from hydra.core.hydra_config import HydraConfig

    name = label_single_run(record, list(HydraConfig.get().overrides.task))
    try:
        run_id = tracker.write(record, name)
    except Exception as exc:  # the store went away while the run ran: keep the record (harness.store)
        path = keep_pending(cache_dir, PendingRecord(record, name, tracker.tracking_uri, cfg.experiment_name, error=str(exc)))
        print(format_summary(record))
        from harness.store import store_reason

        raise RecordPending(
            f"the run {record.status} but could not be written to {tracker.tracking_uri} ({store_reason(exc)}); "
            f"the record is kept in {path}; "
            "`harness flush` (or the next `harness run`) writes it once the store works again"
        ) from exc
    print(format_summary(record))
    print(f"run {run_id} in experiment {cfg.experiment_name!r} at {tracker.tracking_uri}")
    if record.status == FAILED:
        raise ExperimentFailed(f"run {run_id} FAILED in {record.error} (traceback.txt is in its artifacts)")
    return run_id


#: The harness's driver-side hook for ``hydra/launcher=harness_ray`` (docs/ray.md).
task.sweep_hook = "harness.launcher.harness_hook:HarnessSweepHook"
