"""``hydra/launcher=harness_ray``: a Hydra launcher that runs each job on Ray.

A general launcher: each job's task function runs in a Ray task through Hydra's
``run_job`` (per-job output folders, ``.hydra/*.yaml``, job logs,
``hydra.job.chdir``, job callbacks), on a private loopback-only Ray or a cluster
joined by address; it passes Hydra's own launcher test suites. App-specific
behaviour plugs in through a driver-side :class:`~harness.launcher.hooks.SweepHook`;
the harness's (single writer to MLflow, resume by config hash, the sweep parent
run) is :class:`harness.launcher.harness_hook.HarnessSweepHook`.

Modules, by responsibility:

* ``config``       the launcher's options (a dataclass in Hydra's ConfigStore);
* ``core``         the driver loop: compose, hook, schedule with ``ray.wait``, collect;
* ``compose``      Hydra's ``load_sweep_config``, the defaults composed once per shape;
* ``cluster``      Ray's lifecycle: private local Ray or a cluster by address;
  ``kept_ray`` a private Ray left running for later sweeps (``keep_ray``);
* ``remote``       what a worker runs: ``run_job`` on the job's composed config;
* ``hooks``        the seam: :class:`SweepHook` and :class:`Job`;
* ``progress``     the progress line;
* ``harness_hook`` the harness's hook; ``record_writer`` its writer thread (records
  in batches); ``summary`` formats its tables.

Nothing here imports ray or mlflow at module level: Hydra imports the plugin
whenever it scans plugins, including for ``harness run --help``.
"""

from harness.launcher.config import HarnessRayLauncherConf, options_from
from harness.launcher.hooks import Job, SweepHook, load_hook
from harness.launcher.progress import Progress

__all__ = ["HarnessRayLauncherConf", "Job", "Progress", "SweepHook", "load_hook", "options_from"]
