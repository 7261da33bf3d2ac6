"""Options of ``hydra/launcher=harness_ray`` (``hydra.launcher.NAME=VALUE``).

The config is generic: nothing in it refers to the harness's own config keys, so
any Hydra app can use the launcher. Checked once, on the driver, when Hydra
instantiates the launcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["HarnessRayLauncherConf", "options_from"]

LAUNCHER_NAME = "harness_ray"


@dataclass
class HarnessRayLauncherConf:
    """Options of ``hydra/launcher=harness_ray``; docs/ray.md has the table."""

    _target_: str = "hydra_plugins.harness_ray_launcher.harness_ray_launcher.HarnessRayLauncher"
    #: None: start a private Ray on this machine (loopback only) for the sweep.
    #: ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``: join that cluster and leave it running.
    address: Optional[str] = None
    #: CPUs each job reserves; its numba/OpenMP threads follow.
    cpus_per_job: float = 1.0
    #: At most this many jobs in flight (None: as many as the cluster's CPUs allow).
    max_concurrent: Optional[int] = None
    #: Jobs per Ray task, at most, once the jobs finished so far show they are short
    #: (median under 50 ms): Ray's own per-task work (~10 ms of the driver's CPU here)
    #: is then paid once per batch. 1: one job per task. A batch whose worker dies is
    #: retried job by job, so a job that kills its worker fails alone.
    max_jobs_per_task: int = 16
    #: Times a job is retried after its worker process or node died.
    max_retries: int = 2
    #: Private Ray only: times Ray is restarted when its node (the raylet) dies
    #: mid-sweep; the jobs it took with it are resubmitted.
    max_restarts: int = 2
    #: Joining a cluster: seconds to wait for its address to answer before giving up
    #: with a message (Ray's own retries would take about 13 minutes).
    connect_timeout_s: float = 20.0
    #: Private Ray only: its CPUs (None: all cores).
    num_cpus: Optional[int] = None
    #: Private Ray only: object store size in bytes (job results are small).
    object_store_memory: Optional[int] = 256 * 1024 * 1024
    #: Private Ray only: session folder (None: a fresh temporary folder, removed at the end).
    temp_dir: Optional[str] = None
    #: Private Ray only: leave it running on 127.0.0.1 after the sweep (recorded under the
    #: temp folder) and join one a previous sweep left, if alive; ``harness ray-stop`` stops it.
    keep_ray: bool = False
    #: NUMBA_CACHE_DIR of the jobs (None: the hook's choice, else numba's default).
    numba_cache_dir: Optional[str] = None
    #: Extra environment variables for the jobs.
    env_vars: Dict[str, str] = field(default_factory=dict)
    #: Show workers' stdout/stderr on the driver.
    log_to_driver: bool = False
    #: Live progress line (plain lines when stdout is not a terminal).
    progress: bool = True
    #: Driver-side hook, ``module:Class`` (None: the task function's ``sweep_hook``
    #: attribute, if any). See :class:`harness.launcher.hooks.SweepHook`.
    hook: Optional[str] = None
    #: For the hook: skip jobs it knows already finished (the harness: same config hash).
    resume: bool = True
    #: For the hook: metrics shown in its summary (empty: chosen automatically).
    summary_metrics: List[str] = field(default_factory=list)


def options_from(options: Dict[str, Any]) -> HarnessRayLauncherConf:
    """Validated options; errors name the option, the value and what is valid."""
    known = {f for f in HarnessRayLauncherConf.__dataclass_fields__ if f != "_target_"}
    unknown = sorted(set(options) - known - {"_target_"})
    if unknown:
        raise ValueError(f"hydra/launcher={LAUNCHER_NAME}: unknown option(s) {unknown}; valid: {sorted(known)}")
    opts = HarnessRayLauncherConf(**{k: v for k, v in options.items() if k != "_target_"})
    if not opts.cpus_per_job or opts.cpus_per_job <= 0:
        raise ValueError(f"hydra.launcher.cpus_per_job={opts.cpus_per_job}: must be > 0 (for example 1 or 0.5)")
    if opts.max_concurrent is not None and opts.max_concurrent < 1:
        raise ValueError(f"hydra.launcher.max_concurrent={opts.max_concurrent}: must be >= 1, or null for no cap")
    if opts.max_jobs_per_task < 1:
        raise ValueError(f"hydra.launcher.max_jobs_per_task={opts.max_jobs_per_task}: must be >= 1 (1: one job per Ray task)")
    if opts.max_retries < 0:
        raise ValueError(f"hydra.launcher.max_retries={opts.max_retries}: must be >= 0")
    if opts.max_restarts < 0:
        raise ValueError(f"hydra.launcher.max_restarts={opts.max_restarts}: must be >= 0")
    if not opts.connect_timeout_s or not 0 < float(opts.connect_timeout_s) <= 3600:
        raise ValueError(f"hydra.launcher.connect_timeout_s={opts.connect_timeout_s}: must be > 0 and <= 3600 seconds")
    if opts.address is not None and str(opts.address).strip() == "":
        opts.address = None
    return opts
