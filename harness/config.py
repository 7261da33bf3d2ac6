"""Plugin configs into Hydra's ConfigStore, and the root config schema.

Every registered plugin's config dataclass is stored under its kind's group with
its spec name (``accelerator/ds_cim``), so ``harness run accelerator=ds_cim
accelerator.stream_length=128`` is type-checked by OmegaConf for third-party
plugins too, without them shipping YAML. An unknown choice gets Hydra's own error
listing the available options; an unknown key gets OmegaConf's error naming it.

``harness/conf/config.yaml`` (the root) selects the default of each group and extends
:class:`HarnessConfig`; ``harness/conf/experiment/*.yaml`` are presets selected with
``+experiment=NAME``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping

from harness.specs import KINDS

__all__ = ["HarnessConfig", "conf_dir", "config_hash", "flatten", "numba_cache_folder", "register_configs"]


@dataclass
class HarnessConfig:
    """Root schema. The plugin groups are filled from the ConfigStore."""

    #: Seeds every random choice of the run (plugins derive theirs from it).
    seed: int = 0
    #: MLflow experiment the runs go to.
    experiment_name: str = "harness"
    #: MLflow tracking URI; empty means MLFLOW_TRACKING_URI, else MLflow's
    #: default (sqlite:///mlflow.db in the working folder).
    tracking_uri: str = ""
    #: Where plugins cache reusable products (trained base models).
    cache_dir: str = ".harness_cache"
    #: Compute each technique result once per workload, technique, configs, seed
    #: and code, and reuse it for every accelerator (harness.technique_cache).
    technique_cache: bool = True
    #: Dashboard spec rendered over a sweep when it ends (a preset names its own;
    #: ``harness dashboard --list``); empty: none. Not part of the config hash.
    dashboard: str = ""
    workload: Any = None
    technique: Any = None
    accelerator: Any = None
    #: Parameters that apply only to one choice: ``when.KIND.CHOICE.PARAM=VALUE``
    #: (``when.technique.admm.ratio=10,30``); see ``harness.app.plugin_values``.
    when: Dict[str, Any] = field(default_factory=dict)


def conf_dir() -> Path:
    """The Hydra config tree, shipped inside the ``harness`` package."""
    path = Path(__file__).resolve().parent / "conf"
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(
            f"harness config folder not found at {path}; the installed package is incomplete "
            "(reinstall accel-harness)"
        )
    return path


def register_configs(host=None) -> None:
    """Store the root schema and every plugin's config dataclass in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    from harness.host import get_host

    from omegaconf import OmegaConf

    host = host or get_host()
    cs = ConfigStore.instance()
    schema = OmegaConf.structured(HarnessConfig)
    # Open, unlike the rest: `when.technique.admm.ratio=10` needs no `+`. Its keys
    # are checked against the installed plugins and their fields when applied.
    OmegaConf.set_struct(schema.when, False)
    cs.store(name="harness_schema", node=schema)
    for info in host.infos():
        cs.store(group=info.kind, name=info.name, node=info.spec.config, provider=info.distribution)
    # A broken plugin's names compose to an empty node, so a run choosing one reaches
    # the host and fails with the load error instead of Hydra's "Could not find".
    for broken in host.broken():
        for kind in (broken.kind,) if broken.kind else KINDS:
            for name in broken.names:
                if name not in host.names(kind):
                    cs.store(group=kind, name=name, node={}, provider=broken.distribution)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept as values)."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping) and value:
                out.update(flatten(value, name))
            else:
                out[name] = value
    else:
        out[prefix] = obj
    return out


def plugin_params(config_instance: Any) -> dict[str, Any]:
    """A plugin config dataclass instance as a plain dict."""
    return dataclasses.asdict(config_instance)


def config_hash(choices: Mapping[str, str], params: Mapping[str, Mapping[str, Any]], seed: int) -> str:
    """Identity of an experiment: plugin names, their full configs and the seed.

    Tracking destination and cache folder are not part of it: the same experiment
    logged elsewhere is the same experiment. Resume uses this hash to skip runs
    that already finished.
    """
    canonical = {kind: {"name": choices[kind], "config": dict(params[kind])} for kind in KINDS}
    canonical["seed"] = int(seed)
    blob = json.dumps(canonical, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def numba_cache_folder(cache_dir: str) -> str:
    """``<cache_dir>/numba``: where the jobs' and single runs' numba kernels are cached."""
    return os.path.join(os.path.expanduser(str(cache_dir)), "numba")
