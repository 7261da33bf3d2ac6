"""The Hydra side of a run: composed config in, record out, record into MLflow.

:func:`record_for` turns one composed job config into a record without touching
the tracking store; :func:`task` is the Hydra task function that also writes it.
Launchers that run jobs remotely call :func:`record_for` on the worker and write
the record on the driver (see ``hydra_plugins/harness_ray_launcher``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.record import FAILED, Record
from harness.runner import ExperimentFailed, experiment_identity, format_summary, run_experiment
from harness.specs import KINDS

__all__ = ["choices_of", "config_hash_of", "plugin_values", "record_for", "run_name", "task"]

log = logging.getLogger("harness")


def choices_of(cfg: DictConfig) -> dict[str, str]:
    """The plugin chosen for each kind in the job being run."""
    from hydra.core.hydra_config import HydraConfig

    runtime_choices = HydraConfig.get().runtime.choices
    return {kind: runtime_choices[kind] for kind in KINDS}


def _job_config_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def plugin_values(cfg: DictConfig) -> dict[str, Any]:
    """Each kind's plugin config values in ``cfg``, as plain containers."""
    return {kind: OmegaConf.to_container(cfg[kind], resolve=True) or {} for kind in KINDS}


def config_hash_of(cfg: DictConfig, choices: dict[str, str]) -> str:
    """The config hash the run of ``cfg`` will be recorded under (without running it)."""
    return experiment_identity(choices, plugin_values(cfg), int(cfg.seed))[3]


def record_for(cfg: DictConfig, choices: dict[str, str] | None = None) -> Record:
    """Run the experiment ``cfg`` describes and return its record."""
    choices = choices or choices_of(cfg)
    return run_experiment(
        choices,
        plugin_values(cfg),
        seed=int(cfg.seed),
        cache_dir=str(Path(cfg.cache_dir).expanduser().resolve()),
        resolved_config_yaml=_job_config_yaml(cfg),
    )


def run_name(record: Record) -> str:
    p = record.params
    return f"{p['workload']}-{p['technique']}-{p['accelerator']}-s{p['seed']}"


def task(cfg: DictConfig) -> str:
    """Hydra task function: run, write to MLflow, fail loudly if the run failed."""
    from hydra.errors import CompactHydraException

    from harness.host import PluginError
    from harness.specs import CapabilityError
    from harness.tracking import MlflowTracker

    try:
        record = record_for(cfg)
    except (CapabilityError, PluginError) as exc:  # refused before it started: one line, no run recorded
        raise CompactHydraException(f"harness: {exc}") from exc
    tracker = MlflowTracker(cfg.tracking_uri or None, cfg.experiment_name)
    run_id = tracker.write(record, run_name(record))
    print(format_summary(record))
    print(f"run {run_id} in experiment {cfg.experiment_name!r} at {tracker.tracking_uri}")
    if record.status == FAILED:
        raise ExperimentFailed(f"run {run_id} FAILED in {record.error} (traceback.txt is in its artifacts)")
    return run_id
