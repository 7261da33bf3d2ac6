"""Compose a sweep's jobs: Hydra's ``load_sweep_config``, its expensive half done once per shape.

Hydra composes a job in two halves. The first builds the defaults tree and merges
every config file it names (~40 ms for the harness's config, most of a trivial
job's cost on the driver); it depends only on the config name, the ``hydra.*``
overrides (the search path) and the config-group overrides (``workload=spin``,
``+experiment=x``). The second applies the value overrides (``seed=3``) and fills
in the ``hydra`` node (choices, ``overrides.task``, ``override_dirname`` ...).

:class:`SweepComposer` runs the first half once per distinct set of config-group
overrides, keeps a pristine copy of its result, and runs the second half per job
on a copy (unpickled from the pristine one), with Hydra's own functions in Hydra's order (``hydra-core``
1.3's ``ConfigLoaderImpl._load_configuration_impl``). A sweep over values composes
its files once; a sweep over choices once per combination of choices. If Hydra's
internals differ from what this expects (another Hydra version, an override it
classifies differently) it falls back to ``load_sweep_config`` for good.
tests/test_launcher.py checks that both give identical configs.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf, open_dict

__all__ = ["SweepComposer"]

log = logging.getLogger("harness.launcher")


class _Shape:
    """The first half of a composition, shared by the jobs with the same group overrides."""

    def __init__(self, config: DictConfig, known_choices: Dict[str, Any], sources: List[Any], group_lines: Tuple):
        self.config = config  # composed from the defaults list, before any override (never mutated)
        # Each job starts from a copy: unpickling this is ~5x faster than deep-copying
        # the config (0.6 vs 3 ms for the harness's), with the same nodes, flags and types.
        self.pickled = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
        #: The same with the job-independent runtime fields already filled (SweepComposer._constant_runtime).
        self.pickled_runtime: Optional[bytes] = None
        self.known_choices = known_choices
        self.sources = sources
        self.group_lines = group_lines


class SweepComposer:
    """``compose(overrides)`` == ``loader.load_sweep_config(master, overrides)``, faster."""

    def __init__(self, loader, master: DictConfig):
        self.loader, self.master = loader, master
        self.config_name = master.hydra.job.config_name
        self.hydra_overrides = list(OmegaConf.to_container(master.hydra.overrides.hydra))
        self.fast = _hydra_supported(loader)
        self._parser = None
        self._parsed: Dict[str, Any] = {}  # override line -> its Override, scalar values only (_parse)
        self._repos: Dict[Tuple[str, ...], Any] = {}  # by hydra.* override lines: group lookups only
        self._shapes: Dict[Tuple, _Shape] = {}
        self.composed = 0  # first halves run (for tests and benchmarks)
        self.runtime_fills = 0  # _constant_runtime calls: once per shape when no override touches it

    def compose(self, sweep_overrides: Sequence[str]) -> DictConfig:
        if self.fast:
            try:
                return self._compose_fast(list(sweep_overrides))
            except _Unsupported as exc:
                log.debug("composing with Hydra's load_sweep_config from now on: %s", exc)
                self.fast = False
        return self.loader.load_sweep_config(self.master, list(sweep_overrides))

    # -- the fast path ---------------------------------------------------------------
    def _compose_fast(self, sweep_overrides: List[str]) -> DictConfig:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.errors import ConfigCompositionException
        from hydra.types import RunMode
        from omegaconf.errors import OmegaConfBaseException

        overrides = self.hydra_overrides + sweep_overrides
        try:
            self.loader.ensure_main_config_source_available()
            parsed = self._parse(overrides)
            self.loader.validate_sweep_overrides_legal(overrides=parsed, run_mode=RunMode.RUN, from_shell=True)
            repo_key = tuple(o.input_line for o in parsed if o.is_hydra_override())
            repo = self._repos.get(repo_key)
            if repo is None:
                _, repo = self.loader._parse_overrides_and_create_caching_repo(self.config_name, overrides)
                self._repos[repo_key] = repo
            groups, values = _split(parsed, repo)
            key = (repo_key, tuple(o.input_line for o in groups))
            shape = self._shapes.get(key)
            if shape is None:
                shape, hydra_values = self._first_half(overrides, key[1])
                if [o.input_line for o in hydra_values] != [o.input_line for o in values]:
                    raise _Unsupported("Hydra classified the overrides differently")
                self._shapes[key] = shape
            # Values that Hydra sets after the overrides, the same for every job of the shape,
            # are set once in the copy's source unless an override could touch them.
            constant = not any(_touches_runtime(o.key_or_group) for o in values)
            if constant and shape.pickled_runtime is None:
                pristine = pickle.loads(shape.pickled)
                OmegaConf.set_struct(pristine, True)
                OmegaConf.set_readonly(pristine.hydra, False)
                self._constant_runtime(pristine, shape)
                shape.pickled_runtime = pickle.dumps(pristine, protocol=pickle.HIGHEST_PROTOCOL)
            cfg = pickle.loads(shape.pickled_runtime if constant else shape.pickled)
            # From here on: ConfigLoaderImpl._load_configuration_impl, after composing.
            OmegaConf.set_struct(cfg, True)
            OmegaConf.set_readonly(cfg.hydra, False)
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
            app_overrides = []
            for override in parsed:
                if override.is_hydra_override():
                    cfg.hydra.overrides.hydra.append(override.input_line)
                else:
                    cfg.hydra.overrides.task.append(override.input_line)
                    app_overrides.append(override)
            if not constant:
                self._constant_runtime(cfg, shape)
            self._runtime(cfg, app_overrides)
        except OmegaConfBaseException as e:
            raise ConfigCompositionException().with_traceback(sys.exc_info()[2]) from e
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg

    def _parse(self, overrides: List[str]):
        """Hydra's parse of each line; a line seen before gives the same ``Override``
        when its value is a scalar (nothing downstream changes an ``Override``, and a
        scalar cannot be changed through it). Parsing is ~40% of composing a job, and
        all but the swept lines repeat in every job of a sweep."""
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.core.override_parser.types import QuotedString  # frozen dataclass

        if self._parser is None:
            self._parser = OverridesParser.create()
        out = []
        for line in overrides:
            parsed = self._parsed.get(line)
            if parsed is None:
                parsed = self._parser.parse_overrides(overrides=[line])[0]
                if isinstance(parsed._value, (*_SCALARS, QuotedString)):
                    self._parsed[line] = parsed
            out.append(parsed)
        return out

    def _first_half(self, overrides: List[str], group_lines: Tuple):
        """Hydra's defaults list and composition, with a fresh caching repository as Hydra uses."""
        from hydra._internal.defaults_list import create_defaults_list

        parsed, repo = self.loader._parse_overrides_and_create_caching_repo(self.config_name, overrides)
        defaults_list = create_defaults_list(
            repo=repo, config_name=self.config_name, overrides_list=parsed, prepend_hydra=True, skip_missing=False,
        )
        cfg = self.loader._compose_config_from_defaults_list(defaults=defaults_list.defaults, repo=repo)
        self.composed += 1
        shape = _Shape(cfg, dict(defaults_list.overrides.known_choices), list(repo.get_sources()), group_lines)
        return shape, list(defaults_list.config_overrides)

    def _constant_runtime(self, cfg: DictConfig, shape: _Shape) -> None:
        """What Hydra fills in after the overrides that is the same for every job of a
        shape (choices, ``env_set`` from ``env_copy``, versions, cwd, config sources,
        job and config name), in Hydra's order."""
        from hydra import __version__, version
        from hydra.conf import ConfigSourceInfo
        from hydra.core.utils import JobRuntime

        self.runtime_fills += 1
        with open_dict(cfg.hydra):
            cfg.hydra.runtime.choices.update(shape.known_choices)
            for key_ in cfg.hydra.job.env_copy:
                cfg.hydra.job.env_set[key_] = os.environ[key_]
        cfg.hydra.runtime.version = __version__
        cfg.hydra.runtime.version_base = version.getbase()
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.runtime.config_sources = [
            ConfigSourceInfo(path=x.path, schema=x.scheme(), provider=x.provider) for x in shape.sources
        ]
        if "name" not in cfg.hydra.job:
            cfg.hydra.job.name = JobRuntime().get("name")
        cfg.hydra.job.config_name = self.config_name

    def _runtime(self, cfg: DictConfig, app_overrides: list) -> None:
        """The job's own: its override folder name."""
        from hydra._internal.config_loader_impl import get_overrides_dirname

        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=app_overrides,
            kv_sep=cfg.hydra.job.config.override_dirname.kv_sep,
            item_sep=cfg.hydra.job.config.override_dirname.item_sep,
            exclude_keys=cfg.hydra.job.config.override_dirname.exclude_keys,
        )


#: Override values an ``Override`` may share between jobs: immutable ones.
_SCALARS: Tuple[type, ...] = (str, int, float, bool, type(None))

#: What ``_constant_runtime`` sets, or reads (``env_copy`` feeds ``env_set``).
_RUNTIME_FIELDS = (
    "hydra.runtime.choices", "hydra.runtime.version", "hydra.runtime.version_base", "hydra.runtime.cwd",
    "hydra.runtime.config_sources", "hydra.job.env_set", "hydra.job.env_copy", "hydra.job.name",
    "hydra.job.config_name",
)


def _touches_runtime(key: str) -> bool:
    """Whether a value override at ``key`` may set what ``_constant_runtime`` fills (the
    field, inside it, or a node holding it, such as ``hydra.job``): then the job fills
    those fields itself, after its overrides, as Hydra does (an override there must not
    survive where Hydra overwrites it). Other ``hydra.*`` overrides (``hydra.mode``, which
    every multirun has, ``hydra.sweep.dir``, ``hydra.launcher.*``) leave them alone."""
    return any(key == f or key.startswith(f + ".") or f.startswith(key + ".") for f in _RUNTIME_FIELDS)


class _Unsupported(Exception):
    """This Hydra does not look like the one the fast path copies."""


def _split(parsed, repo) -> Tuple[list, list]:
    """``(group overrides, value overrides)`` as Hydra's ``defaults_list.Overrides`` splits them."""
    groups, values = [], []
    for override in parsed:
        if override.is_sweep_override():
            continue
        is_group = repo.group_exists(override.key_or_group)
        if isinstance(override.value(), dict) or not is_group:
            values.append(override)
        else:
            groups.append(override)
    return groups, values


def _hydra_supported(loader) -> bool:
    """True when ``loader`` has what the fast path calls (hydra-core 1.3)."""
    try:
        import hydra
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.defaults_list import create_defaults_list  # noqa: F401
    except ImportError:
        return False
    needed = ("ensure_main_config_source_available", "validate_sweep_overrides_legal",
              "_parse_overrides_and_create_caching_repo", "_compose_config_from_defaults_list")
    return (
        isinstance(loader, ConfigLoaderImpl)
        and hydra.__version__.startswith("1.3.")
        and all(hasattr(loader, name) for name in needed)
        and hasattr(ConfigLoaderImpl, "_apply_overrides_to_config")
    )
