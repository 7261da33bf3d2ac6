"""What a Ray worker runs for one job: Hydra's ``run_job``, as Hydra's own launchers do.

``run_job`` creates the job's output folder under ``hydra.sweep.dir``, writes
``.hydra/{config,hydra,overrides}.yaml`` and the job log, honours
``hydra.job.chdir``, runs the ``on_job_start``/``on_job_end`` callbacks and
returns a :class:`~hydra.core.utils.JobReturn` whose ``working_dir`` is the
job's. Relative paths are taken from the driver's working folder when that
folder exists here (a private Ray, a shared file system), else from the worker's.

The launch-wide state (Hydra's singletons, the hydra context, the task function)
is put in Ray's object store once per launch and handed over as nested object
refs, so a worker deserializes it once per launch, not once per job: setting
Hydra's singleton state re-scans Hydra's plugins, which would dominate short jobs.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

__all__ = ["execute_job"]

#: Per worker process: the launch whose state is installed, and that state.
_installed: Dict[str, Any] = {"key": None}


def _install(key: str, shared_ref: List[Any]) -> Dict[str, Any]:
    if _installed["key"] != key:
        import ray
        from hydra.core.singleton import Singleton
        from hydra.core.utils import setup_globals

        shared = ray.get(shared_ref[0])
        setup_globals()
        Singleton.set_state(shared["singleton_state"])
        _installed.clear()
        _installed.update(shared, key=key)
    return _installed


def execute_job(key: str, shared_ref: List[Any], sweep_config, driver_cwd: str):
    """Run one job on this worker and return its ``JobReturn``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import run_job

    state = _install(key, shared_ref)
    HydraConfig.instance().set_config(sweep_config)
    here = os.getcwd()
    if driver_cwd and os.path.isdir(driver_cwd):
        os.chdir(driver_cwd)
    try:
        return run_job(
            hydra_context=state["hydra_context"],
            task_function=state["task_function"],
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    finally:
        os.chdir(here)
