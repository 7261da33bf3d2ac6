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
import pickle
from typing import Any, Dict, List

from hydra.core.utils import JobReturn

__all__ = ["PackedJobReturn", "execute_job"]

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
    from hydra.core.utils import run_job

    state = _install(key, shared_ref)
    here = os.getcwd()  # run_job installs the job's Hydra config itself
    if driver_cwd and os.path.isdir(driver_cwd):
        os.chdir(driver_cwd)
    try:
        ret = run_job(
            hydra_context=state["hydra_context"],
            task_function=state["task_function"],
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    finally:
        os.chdir(here)
    return PackedJobReturn(ret)


class PackedJobReturn(JobReturn):
    """A ``JobReturn`` whose ``cfg`` and ``hydra_cfg`` travel as pickled bytes and are
    unpickled on the driver only when read.

    Rebuilding a DictConfig from a pickle costs several milliseconds, and a trivial
    job's ``JobReturn`` holds two; a hook that writes records (the harness's) never
    reads them, a sweeper that does gets the very same configs.
    """

    def __init__(self, ret: JobReturn):  # noqa: D107 - not a dataclass __init__
        for name, value in vars(ret).items():
            if name not in ("cfg", "hydra_cfg"):
                self.__dict__[name] = value
        from ray import cloudpickle  # by value where needed, as Ray itself pickles them

        self.__dict__["_packed"] = cloudpickle.dumps((ret.cfg, ret.hydra_cfg), protocol=pickle.HIGHEST_PROTOCOL)
        self.__dict__["_configs"] = None

    def _unpacked(self) -> list:
        if self.__dict__["_configs"] is None:
            self.__dict__["_configs"] = list(pickle.loads(self.__dict__["_packed"]))
        return self.__dict__["_configs"]

    @property
    def cfg(self):
        return self._unpacked()[0]

    @cfg.setter
    def cfg(self, value) -> None:
        self._unpacked()[0] = value

    @property
    def hydra_cfg(self):
        return self._unpacked()[1]

    @hydra_cfg.setter
    def hydra_cfg(self, value) -> None:
        self._unpacked()[1] = value
