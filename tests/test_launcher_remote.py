"""The worker's lean ``run_job`` against Hydra's own, in process: the same files, the
same ``JobReturn``, the same ``HydraConfig`` seen by the task, the same working folder
afterwards, the same FAILED return for a task that raises; the libyaml dump and the direct
container walk against ``OmegaConf.to_yaml``/``to_container`` on awkward values; a packed
``JobReturn`` whose config only cloudpickle can take.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import os
import pickle
from typing import Optional
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict

from harness.launcher.remote import container_to_yaml, lean_supported, plain_container, run_job_lean, to_yaml


def _seen_by_task(cfg):
    """What a task can observe: its config, and Hydra's config through the resolver."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return {
        "cfg": OmegaConf.to_yaml(cfg),
        "type": OmegaConf.get_type(cfg),
        "has_hydra": "hydra" in cfg,
        "output_dir": hc.runtime.output_dir,
        "subdir": hc.sweep.subdir,  # an interpolation into the hydra node: ${hydra.job.num}
        "log_file": hc.job_logging.handlers.file.filename,  # ${hydra.runtime.output_dir}/...
        "num": hc.job.num,
        "cwd": os.getcwd(),
        "env": os.environ.get("HARNESS_TEST_ENV_SET"),
    }


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*.yaml"))}


@pytest.mark.usefixtures("hydra_restore_singletons")
@pytest.mark.parametrize("extra", [[], ["hydra.job.chdir=true", "+hydra.job.env_set.HARNESS_TEST_ENV_SET=on"]])
def test_lean_run_job_does_what_hydras_does(tmp_path, extra):
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import run_job, setup_globals
    from hydra.types import HydraContext, RunMode

    from harness.config import conf_dir, register_configs
    from harness.launcher.compose import SweepComposer

    register_configs()
    sweep_dir = tmp_path / "multirun"
    here = os.getcwd()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name="harness"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", [f"hydra.sweep.dir={sweep_dir}", *extra], run_mode=RunMode.MULTIRUN)
        composer = SweepComposer(loader, master)
        setup_globals()
        context = HydraContext(config_loader=loader, callbacks=Callbacks(master))
        assert lean_supported(context)
        for num, overrides in enumerate([["workload=dot_products", "seed=3"], ["+experiment=quickstart", "seed=1"]]):
            config = composer.compose(overrides)
            with open_dict(config):
                config.hydra.job.num = num
                config.hydra.job.id = f"job{num}"
            results, files = [], []
            for runner in (run_job, run_job_lean):
                before = HydraConfig.instance().cfg
                ret = runner(hydra_context=context, task_function=_seen_by_task, config=copy.deepcopy(config),
                             job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
                assert HydraConfig.instance().cfg is before and os.getcwd() == here
                results.append(ret)
                files.append(_files(sweep_dir))
                for p in sweep_dir.rglob("*"):
                    if p.is_file():
                        p.unlink()
            hydra_ret, lean_ret = results
            assert files[0] == files[1] and {f"{num}/.hydra/config.yaml", f"{num}/.hydra/hydra.yaml",
                                             f"{num}/.hydra/overrides.yaml"} <= set(files[0])
            assert lean_ret.return_value == hydra_ret.return_value
            assert not lean_ret.return_value["has_hydra"] and lean_ret.return_value["subdir"] == str(num)
            assert lean_ret.return_value["log_file"].startswith(str(sweep_dir / str(num)))
            for name in ("overrides", "working_dir", "status", "task_name"):
                assert getattr(lean_ret, name) == getattr(hydra_ret, name), name
            assert OmegaConf.to_yaml(lean_ret.cfg) == OmegaConf.to_yaml(hydra_ret.cfg)
            assert OmegaConf.get_type(lean_ret.cfg) == OmegaConf.get_type(hydra_ret.cfg)
            assert OmegaConf.to_yaml(lean_ret.hydra_cfg) == OmegaConf.to_yaml(hydra_ret.hydra_cfg)
            if extra:
                assert lean_ret.return_value["cwd"] == str(sweep_dir / str(num)) and lean_ret.return_value["env"] == "on"

        def failing(cfg):
            raise ValueError(f"bad seed {cfg.seed}")

        failed = [runner(hydra_context=context, task_function=failing, config=copy.deepcopy(config),
                         job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir") for runner in (run_job, run_job_lean)]
        assert [r.status.name for r in failed] == ["FAILED", "FAILED"] and os.getcwd() == here
        assert [repr(r._return_value) for r in failed] == ["ValueError('bad seed 1')"] * 2


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_hydra_callbacks_take_hydras_run_job():
    """Callbacks receive the full config and may keep it: such jobs run Hydra's own run_job."""
    from hydra._internal.callbacks import Callbacks
    from hydra.types import HydraContext

    with_callbacks = OmegaConf.create(
        {"hydra": {"callbacks": {"log": {"_target_": "hydra.experimental.callbacks.LogJobReturnCallback"}}}}
    )
    assert not lean_supported(HydraContext(config_loader=None, callbacks=Callbacks(with_callbacks)))


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": "yes", "c": "1.0", "d": "null", "e": "~", "f": "", "g": "${x.y}", "h": "on", "i": "0x1F"},
        {"long": "word " * 60, "multi": "line one\nline two\n", "unicode": "µ-ops ≤ 20 ms ∞", "tab": "a\tb"},
        {"nested": {"list": [1, "2", [3, {"k": None}], {}], "empty": {}, "none": None}, "floats": [1e-7, 2.5, float("inf")]},
        {"key with: colon": "- dash", "quote'": 'double"', "hash": "# not a comment", "star": "*alias"},
        ["a", {"b": "c"}, "???"],
    ],
)
def test_libyaml_dump_is_omegaconfs_text(value):
    cfg = OmegaConf.create(value)
    assert plain_container(cfg) == OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    assert to_yaml(cfg) == OmegaConf.to_yaml(cfg)
    assert container_to_yaml(value) == OmegaConf.to_yaml(cfg)


class _Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class _Structured:
    color: _Color = _Color.BLUE
    size: int = 3
    missing: str = "???"
    maybe: Optional[dict] = None
    ref: str = "${size}"
    tags: list = dataclasses.field(default_factory=lambda: ["a", "${size}"])


def test_plain_container_walk_is_omegaconfs_to_container():
    """Enums as values and keys, missing and None and interpolated containers, a
    structured config: what OmegaConf.to_container(resolve=False, enum_to_str=True) gives."""
    cfg = OmegaConf.create({
        "s": OmegaConf.structured(_Structured),
        "enum_key": {_Color.RED: "r", 1: "one"},
        "missing_node": "???",
        "node_interp": "${s}",
        "none_list": None,
        "deep": [[{"x": "${s.size}"}], []],
    })
    with open_dict(cfg):
        cfg.missing_dict = DictConfig("???")
        cfg.interp_dict = OmegaConf.create({})
        cfg.interp_dict._set_value("${deep}")
    expected = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    assert plain_container(cfg) == expected
    assert expected["s"]["color"] == "BLUE" and expected["enum_key"] == {"RED": "r", 1: "one"}
    assert expected["interp_dict"] == "${deep}" and expected["missing_dict"] == "???"
    assert to_yaml(cfg) == OmegaConf.to_yaml(cfg)


def test_packed_job_return_takes_configs_only_cloudpickle_can():
    """The C pickler first; a structured config of a class defined in a function (no
    importable name, as a class Ray sent by value is) goes by cloudpickle, and unpacks."""
    from hydra.core.utils import JobReturn, JobStatus

    from harness.launcher.remote import PackedJobReturn

    @dataclasses.dataclass
    class Local:
        n: int = 4

    from ray import cloudpickle

    local = OmegaConf.structured(Local)
    with pytest.raises(Exception):
        pickle.dumps(local)  # so the second config does take the fallback
    for cfg in (OmegaConf.create({"a": [1, {"b": "${a}"}]}), local):
        ret = JobReturn(overrides=["a=1"], cfg=cfg, hydra_cfg=OmegaConf.create({"hydra": {"job": {"num": 2}}}),
                        working_dir="/tmp", task_name="t", status=JobStatus.COMPLETED, _return_value=5)
        packed = pickle.loads(cloudpickle.dumps(PackedJobReturn(ret)))  # as Ray sends it to the driver
        assert OmegaConf.to_yaml(packed.cfg) == OmegaConf.to_yaml(cfg)
        assert packed.hydra_cfg.hydra.job.num == 2 and packed.return_value == 5 and packed.overrides == ["a=1"]


def test_batch_size_groups_short_jobs_only_and_keeps_every_slot_fed():
    from harness.launcher.core import batch_size

    short, long_ = [0.01] * 4, [0.5] * 4
    assert batch_size([], 100, 2, 16) == 1  # nothing measured yet
    assert batch_size([0.01], 100, 2, 16) == 1  # fewer results than slots
    assert batch_size(short, 100, 2, 16) == 16  # 0.2 s / 10 ms = 20, capped
    assert batch_size(short, 100, 2, 8) == 8
    assert batch_size([0.04] * 4, 100, 2, 16) == 5  # ~0.2 s of work per task
    assert batch_size(short, 12, 2, 16) == 3  # 12 queued on 2 slots: two tasks per slot
    assert batch_size(long_, 100, 2, 16) == 1 and batch_size(short, 100, 2, 1) == 1
