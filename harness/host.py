"""Plugin discovery: entry points in, validated specs out.

Every plugin, built-in or third-party, is a distribution's entry point in the
``harness`` group. The host imports each one, registers it with pluggy, calls the
three spec hooks per plugin (so every spec is attributed to the distribution that
provided it), validates the specs, and indexes them by kind and name.

Failures are reported with the plugin's entry-point name and its distribution:

* an entry point that fails to import, or a spec that breaks the contract, raises
  :class:`PluginError` saying which, and how to block it;
* two specs of one kind with one name raise :class:`PluginError` naming both
  distributions ("Conflicting plugins found for accelerator 'x': provided by
  dist-a 1.0 and dist-b 0.2").

``HARNESS_DISABLE_PLUGINS`` (comma-separated) blocks plugins by entry-point
name or spec name before anything of theirs is imported or used, which is also
the way out when a broken third-party plugin is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Iterable

import pluggy

from harness import hookspecs
from harness.specs import KINDS, PluginSpec, SpecError, validate_spec

__all__ = ["DISABLE_ENV", "ENTRY_POINT_GROUP", "Host", "PluginError", "PluginInfo", "get_host"]

ENTRY_POINT_GROUP = "harness"
DISABLE_ENV = "HARNESS_DISABLE_PLUGINS"

_HOOKS = {
    "workload": "harness_workloads",
    "technique": "harness_techniques",
    "accelerator": "harness_accelerators",
}


class PluginError(RuntimeError):
    """A plugin could not be loaded, or its specs conflict or break the contract."""


@dataclass(frozen=True)
class PluginInfo:
    """A registered spec with where it came from."""

    spec: PluginSpec
    plugin: str  # entry-point name (or the registered object's name)
    distribution: str
    version: str

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def name(self) -> str:
        return self.spec.name

    def provenance(self) -> str:
        return f"{self.distribution} {self.version}".strip()


def _blocked_names(blocked: Iterable[str] | None) -> set[str]:
    names = set(blocked or ())
    names.update(n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip())
    return names


class Host:
    """Loads plugins once and answers lookups by kind and name.

    ``extra`` registers in-process plugin objects (modules or instances) next to
    the entry points, as ``(name, object, distribution)`` triples; the
    conformance kit uses it to check a plugin that is not installed yet.
    """

    def __init__(
        self,
        group: str = ENTRY_POINT_GROUP,
        blocked: Iterable[str] | None = None,
        extra: Iterable[tuple[str, Any, str]] = (),
    ):
        self.group = group
        self.blocked = _blocked_names(blocked)
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._origin: dict[str, tuple[str, str]] = {}  # plugin name -> (dist, version)
        self._index: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in KINDS}
        self._load_entry_points()
        for name, obj, dist in extra:
            self._register(name, obj, dist, "")
        self._collect()

    # -- loading ------------------------------------------------------------
    def _load_entry_points(self) -> None:
        for ep in sorted(metadata.entry_points(group=self.group), key=lambda e: e.name):
            if ep.name in self.blocked:
                continue
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else ""
            if self._pm.get_plugin(ep.name) is not None:
                other = self._origin[ep.name]
                raise PluginError(
                    f"Conflicting plugins found for entry point {ep.name!r}: provided by "
                    f"{other[0]} {other[1]} and {dist} {version}"
                )
            try:
                obj = ep.load()
            except Exception as exc:  # report any import failure with its origin
                raise PluginError(
                    f"plugin {ep.name!r} from distribution {dist} {version} failed to import "
                    f"({ep.value}): {type(exc).__name__}: {exc}. "
                    f"Set {DISABLE_ENV}={ep.name} to skip it."
                ) from exc
            self._register(ep.name, obj, dist, version)

    def _register(self, name: str, obj: Any, dist: str, version: str) -> None:
        try:
            self._pm.register(obj, name=name)
        except ValueError as exc:
            raise PluginError(f"plugin {name!r} from distribution {dist}: {exc}") from exc
        self._origin[name] = (dist, version)

    def _collect(self) -> None:
        for kind, hook_name in _HOOKS.items():
            hook = getattr(self._pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                dist, version = self._origin.get(impl.plugin_name, ("unknown", ""))
                try:
                    specs = list(impl.function() or ())
                except Exception as exc:
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} from distribution {dist} {version} raised in "
                        f"{hook_name}(): {type(exc).__name__}: {exc}. Set {DISABLE_ENV}={impl.plugin_name} to skip it."
                    ) from exc
                for spec in specs:
                    self._add(kind, spec, impl.plugin_name, dist, version)

    def _add(self, kind: str, spec: Any, plugin: str, dist: str, version: str) -> None:
        try:
            validate_spec(spec)
        except SpecError as exc:
            raise PluginError(
                f"plugin {plugin!r} from distribution {dist} {version} yielded an invalid spec: {exc}"
            ) from exc
        if spec.kind != kind:
            raise PluginError(
                f"plugin {plugin!r} from distribution {dist} {version} yielded a {spec.kind} spec "
                f"{spec.name!r} from the {kind} hook"
            )
        if spec.name in self.blocked:
            return
        existing = self._index[kind].get(spec.name)
        if existing is not None:
            raise PluginError(
                f"Conflicting plugins found for {kind} {spec.name!r}: provided by "
                f"{existing.provenance()} (plugin {existing.plugin!r}) and {dist} {version} (plugin {plugin!r})"
            )
        self._index[kind][spec.name] = PluginInfo(spec, plugin, dist, version)

    # -- lookups ------------------------------------------------------------
    def infos(self, kind: str | None = None) -> list[PluginInfo]:
        """Registered specs, sorted by kind (composition order) then name."""
        kinds = KINDS if kind is None else (kind,)
        return [self._index[k][n] for k in kinds for n in sorted(self._index[k])]

    def names(self, kind: str) -> list[str]:
        return sorted(self._index[kind])

    def info(self, kind: str, name: str) -> PluginInfo:
        if kind not in self._index:
            raise KeyError(f"unknown plugin kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        try:
            return self._index[kind][name]
        except KeyError:
            valid = ", ".join(self.names(kind)) or "(none installed)"
            raise KeyError(f"no {kind} named {name!r}; valid choices: {valid}") from None

    def spec(self, kind: str, name: str) -> PluginSpec:
        return self.info(kind, name).spec


_HOST: Host | None = None


def get_host() -> Host:
    """The process-wide host, loaded on first use."""
    global _HOST
    if _HOST is None:
        _HOST = Host()
    return _HOST


def reset_host() -> None:
    """Forget the loaded host (tests that install plugins at run time)."""
    global _HOST
    _HOST = None

