"""What a Ray worker runs for one job: Hydra's ``run_job``, as Hydra's own launchers do.

``run_job`` creates the job's output folder under ``hydra.sweep.dir``, writes
``.hydra/{config,hydra,overrides}.yaml`` and the job log, honours
``hydra.job.chdir``, runs the ``on_job_start``/``on_job_end`` callbacks and
returns a :class:`~hydra.core.utils.JobReturn` whose ``working_dir`` is the
job's. Relative paths are taken from the driver's working folder when that
folder exists here (a private Ray, a shared file system), else from the worker's.

Hydra's ``run_job`` copies the job's ``hydra`` node four times (twice for
``HydraConfig``, once for the ``JobReturn``, once with the whole config it then
drops it from) and writes three YAML files with PyYAML's pure-Python emitter:
about 12 and 11 of a trivial job's 24 ms on a worker here. :func:`run_job_lean`
does the same steps without a copy (the job's config is its own: the node moves),
with libyaml's emitter over a direct walk of the config's nodes (the same text),
and packs the ``JobReturn``'s configs with the C pickler when it can. It runs when
the job has no Hydra callbacks (they receive the full config and may keep it),
Hydra is the version it follows (``hydra-core`` 1.3) and the version base is 1.2
or later; otherwise Hydra's ``run_job`` runs.
``tests/test_launcher_remote.py`` checks that both write the same files and
return the same results.

The launch-wide state (Hydra's singletons, the hydra context, the task function)
is put in Ray's object store once per launch and handed over as nested object
refs, so a worker deserializes it once per launch, not once per job: setting
Hydra's singleton state re-scans Hydra's plugins, which would dominate short jobs.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.utils import JobReturn

__all__ = ["PackedJobReturn", "execute_job", "execute_jobs"]

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


def _yaml_dumper():
    """OmegaConf's YAML dumper on libyaml's emitter (PyYAML's pure-Python one takes
    ~6 of a trivial job's ms for its three ``.hydra`` files), or None without libyaml.
    Same representers, same options as ``OmegaConf.to_yaml``; tests check the text is
    identical."""
    import yaml
    from omegaconf._utils import OmegaConfDumper, get_omega_conf_dumper

    if not getattr(yaml, "__with_libyaml__", False):
        return None
    get_omega_conf_dumper()

    class CDumper(yaml.CDumper):  # type: ignore[misc, name-defined]
        pass

    CDumper.add_representer(str, OmegaConfDumper.str_representer)
    return CDumper


_DUMPER: List[Any] = []


def _dumper():
    """The libyaml dumper, made once per process (None without libyaml)."""
    if not _DUMPER:
        _DUMPER.append(_yaml_dumper())
    return _DUMPER[0]


def to_yaml(cfg) -> str:
    """``OmegaConf.to_yaml(cfg)``, on libyaml when it is there."""
    from omegaconf import OmegaConf

    if _dumper() is None:
        return OmegaConf.to_yaml(cfg)
    return container_to_yaml(plain_container(cfg))


def plain_container(conf) -> Any:
    """``OmegaConf.to_container(conf, resolve=False, enum_to_str=True)`` by a direct walk
    over the nodes: OmegaConf's own goes through the validated child access for every
    key, ~2/3 of the time a job's three ``.hydra`` files take. Tests check the result
    is equal on the harness's configs and on awkward values."""
    from enum import Enum

    from omegaconf import MISSING, Container, ListConfig

    if conf._is_none():
        return None
    if conf._is_missing():
        return MISSING
    if conf._is_interpolation():
        return conf._value()
    content = conf.__dict__["_content"]
    if isinstance(conf, ListConfig):
        items = [(None, node) for node in content]
    else:
        items = list(content.items())
    out = []
    for key, node in items:
        if isinstance(node, Container):
            value = plain_container(node)
        else:
            value = node._value()
            if isinstance(value, Enum):
                value = value.name
        out.append((key.name if isinstance(key, Enum) else key, value))
    if isinstance(conf, ListConfig):
        return [value for _, value in out]
    return dict(out)


def container_to_yaml(container) -> str:
    """``OmegaConf.to_yaml(OmegaConf.create(container))`` for a plain container (what
    ``OmegaConf.to_container`` returns), without building the config, on libyaml when
    it is there."""
    import yaml
    from omegaconf import OmegaConf

    dumper = _dumper()
    if dumper is None:
        return OmegaConf.to_yaml(OmegaConf.create(container))
    return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=dumper)


def _save_config(cfg, filename: str, output_dir: Path) -> None:
    """Hydra's ``_save_config`` with :func:`to_yaml`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(str(output_dir / filename), "w", encoding="utf-8") as file:
        file.write(to_yaml(cfg))


def lean_supported(hydra_context) -> bool:
    """Whether :func:`run_job_lean` stands in for Hydra's ``run_job`` for these jobs."""
    import hydra
    from hydra import version

    return (hydra.__version__.startswith("1.3.") and not getattr(hydra_context.callbacks, "callbacks", [True])
            and version.base_at_least("1.2"))


def run_job_lean(hydra_context, task_function, config, job_dir_key: str, job_subdir_key: Optional[str]) -> JobReturn:
    """Hydra 1.3's ``run_job`` (``hydra.core.utils``), step for step, without copying
    the config: ``config`` is this job's own (unpickled on this worker; no callback
    sees it), so once the output folder is set, the log configured and the overrides
    read on the full config, as Hydra does, its ``hydra`` node is *moved* into the
    ``HydraConfig`` (where Hydra copies it twice) and what remains is the task's
    config (where Hydra deep-copies the whole config and drops the node from the copy).
    The ``JobReturn`` holds that read-only ``HydraConfig`` (Hydra copies it once more).
    ``config`` is consumed: afterwards it is the task's config, without ``hydra``."""
    from omegaconf import DictConfig, OmegaConf, flag_override, open_dict, read_write
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobRuntime, JobStatus, _flush_loggers, configure_log, env_override

    old_cwd = os.getcwd()
    hydra_config = HydraConfig.instance()
    orig_hydra_cfg = hydra_config.cfg
    OmegaConf.set_readonly(config.hydra, True)
    hydra_config.cfg = config  # for ${hydra:...} in the output folder; HydraConfig.get() is cfg.hydra
    _chdir = None
    try:
        output_dir = str(OmegaConf.select(config, job_dir_key))
        if job_subdir_key is not None:
            output_dir = os.path.join(output_dir, str(OmegaConf.select(config, job_subdir_key)))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(output_dir)
        ret = JobReturn()
        overrides = OmegaConf.to_container(config.hydra.overrides.task)
        assert isinstance(overrides, list)
        ret.overrides = overrides
        Path(str(output_dir)).mkdir(parents=True, exist_ok=True)
        _chdir = config.hydra.job.chdir
        if _chdir is None:  # version_base >= 1.2 (lean_supported); older bases take Hydra's run_job
            _chdir = False
        if _chdir:
            os.chdir(output_dir)
            ret.working_dir = output_dir
        else:
            ret.working_dir = os.getcwd()
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        # Move the node: detached from ``config`` (so OmegaConf does not copy it as a
        # node of the same config) and set as the only key of the HydraConfig, as
        # Hydra's masked copy has it.
        with read_write(config), open_dict(config):
            hydra_node = config._get_node("hydra")
            del config["hydra"]
        hydra_node._set_parent(None)
        hydra_cfg = DictConfig({})
        with flag_override(hydra_cfg, "no_deepcopy_set_nodes", True):
            hydra_cfg["hydra"] = hydra_node
        hydra_config.cfg = hydra_cfg
        task_cfg = config
        ret.cfg = task_cfg
        ret.hydra_cfg = hydra_cfg
        if hydra_cfg.hydra.output_subdir is not None:
            hydra_output = Path(hydra_cfg.hydra.runtime.output_dir) / Path(hydra_cfg.hydra.output_subdir)
            _save_config(task_cfg, "config.yaml", hydra_output)
            _save_config(hydra_cfg, "hydra.yaml", hydra_output)
            _save_config(hydra_cfg.hydra.overrides.task, "overrides.yaml", hydra_output)
        with env_override(hydra_cfg.hydra.job.env_set):
            try:
                ret.return_value = task_function(task_cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as e:
                ret.return_value = e
                ret.status = JobStatus.FAILED
        ret.task_name = JobRuntime.instance().get("name")
        _flush_loggers()
        return ret
    finally:
        hydra_config.cfg = orig_hydra_cfg
        if _chdir:
            os.chdir(old_cwd)


def execute_job(key: str, shared_ref: List[Any], sweep_config, driver_cwd: str):
    """Run one job on this worker and return its ``JobReturn``."""
    from hydra.core.utils import run_job

    state = _install(key, shared_ref)
    if "lean" not in state:
        state["lean"] = lean_supported(state["hydra_context"])
    here = os.getcwd()  # run_job installs the job's Hydra config itself
    if driver_cwd and os.path.isdir(driver_cwd):
        os.chdir(driver_cwd)
    try:
        ret = (run_job_lean if state["lean"] else run_job)(
            hydra_context=state["hydra_context"],
            task_function=state["task_function"],
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    finally:
        os.chdir(here)
    return PackedJobReturn(ret)


def pack(value) -> bytes:
    """``value`` pickled with the C pickler, or by cloudpickle if only it can (a local
    class, a lambda). A job's config goes to Ray this way: Ray's own cloudpickle runs a
    Python hook per object, ~1.7x the C pickler's time on the harness's config."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        from ray import cloudpickle

        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def execute_jobs(key: str, shared_ref: List[Any], sweep_configs: List[Any], driver_cwd: str) -> List[Any]:
    """Run a batch of jobs one after another on this worker (one Ray task for several
    short jobs: Ray's per-task cost is paid once); ``[(JobReturn, seconds), ...]``.
    A config may come :func:`pack`-ed (bytes)."""
    import time

    out = []
    for config in sweep_configs:
        start = time.perf_counter()
        if isinstance(config, bytes):
            config = pickle.loads(config)
        ret = execute_job(key, shared_ref, config, driver_cwd)
        out.append((ret, time.perf_counter() - start))
    return out


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
        self.__dict__["_packed"] = pack((ret.cfg, ret.hydra_cfg))
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
