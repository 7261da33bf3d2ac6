"""Plugin discovery: entry points in, validated specs out.

Every plugin, built-in or third-party, is a distribution's entry point in the
``harness`` group. The host imports each one, registers it with pluggy, calls the
three spec hooks per plugin (so every spec is attributed to the distribution that
provided it), validates the specs, and indexes them by kind and name.

A broken plugin does not take the host down (conda's plugin manager is the model).
A plugin whose import fails, whose hook raises, or that yields a spec breaking the
contract is left out of the usable index, recorded as a :class:`BrokenPlugin`, and
reported once as a :class:`PluginWarning` naming the plugin, its distribution,
what broke and how to block it. ``harness plugins`` lists it as broken, and a run
that chooses it (by spec name or entry-point name) fails with the load error
(:meth:`Host.info` raises :class:`PluginError`).

Two specs of one kind with one name are a conflict: that name is left out and both
providers are listed as broken; their other specs stay usable. A run choosing the
name fails with "Conflicting plugins found for accelerator 'x': provided by
dist-a 1.0 (plugin 'a') and dist-b 0.2 (plugin 'b')".

Strict mode (``Host(strict=True)``, ``HARNESS_STRICT_PLUGINS=1``, ``harness plugins
--strict``) turns the warnings into one :class:`PluginError` listing every broken
plugin, for CI.

``HARNESS_DISABLE_PLUGINS`` (comma-separated) blocks plugins by entry-point
name or spec name before anything of theirs is imported or used, which is also
the way to silence a broken third-party plugin.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Iterable

import pluggy

from harness import hookspecs
from harness.specs import KINDS, PluginSpec, SpecError, validate_spec

__all__ = [
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "STRICT_ENV",
    "BrokenPlugin",
    "Host",
    "PluginError",
    "PluginInfo",
    "PluginWarning",
    "get_host",
]

ENTRY_POINT_GROUP = "harness"
DISABLE_ENV = "HARNESS_DISABLE_PLUGINS"
STRICT_ENV = "HARNESS_STRICT_PLUGINS"

_HOOKS = {
    "workload": "harness_workloads",
    "technique": "harness_techniques",
    "accelerator": "harness_accelerators",
}


class PluginError(RuntimeError):
    """A chosen plugin could not be loaded (or conflicts), or strict mode found a broken one."""


class PluginWarning(UserWarning):
    """A plugin could not be loaded and was left out; the message says why and how to block it."""


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


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin left out of the index, with the reason.

    ``names`` are what a run may have typed to choose it: its entry-point name and
    every spec name it yielded (none are known when its import failed). ``kind`` is
    the kind that broke, or ``None`` when unknown (a failed import).
    """

    plugin: str
    distribution: str
    version: str
    error: str  # what broke, one sentence naming the plugin and its distribution
    remedy: str  # how to get rid of the warning
    kind: str | None = None
    names: tuple[str, ...] = ()

    def provenance(self) -> str:
        return f"{self.distribution} {self.version}".strip()

    def message(self) -> str:
        return f"{self.error}. {self.remedy}"


def _strict_from_env() -> bool:
    value = os.environ.get(STRICT_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise PluginError(f"{STRICT_ENV}={value!r} is not a flag; valid: 1, true, yes, on (strict) or 0, false, no, off")


def _spec_problem(kind: str, spec: Any) -> str:
    """What is wrong with a spec yielded from ``kind``'s hook, or ``""``."""
    try:
        validate_spec(spec)
    except SpecError as exc:
        return f"yielded an invalid spec: {exc}"
    if spec.kind != kind:
        return f"yielded a {spec.kind} spec {spec.name!r} from the {kind} hook"
    return ""


def _blocked_names(blocked: Iterable[str] | None) -> set[str]:
    names = set(blocked or ())
    names.update(n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip())
    return names


class Host:
    """Loads plugins once and answers lookups by kind and name.

    ``extra`` registers in-process plugin objects (modules or instances) next to
    the entry points, as ``(name, object, distribution)`` triples; the
    conformance kit uses it to check a plugin that is not installed yet.
    ``strict`` (default: ``HARNESS_STRICT_PLUGINS``) raises :class:`PluginError`
    for broken plugins instead of warning and leaving them out.
    """

    def __init__(
        self,
        group: str = ENTRY_POINT_GROUP,
        blocked: Iterable[str] | None = None,
        extra: Iterable[tuple[str, Any, str]] = (),
        strict: bool | None = None,
    ):
        self.group = group
        self.strict = _strict_from_env() if strict is None else bool(strict)
        self.blocked = _blocked_names(blocked)
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._origin: dict[str, tuple[str, str]] = {}  # plugin name -> (dist, version)
        self._index: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in KINDS}
        self._broken: list[BrokenPlugin] = []
        self._known_names: set[str] = set()  # entry-point and spec names seen, blocked or not
        self._load_entry_points()
        for name, obj, dist in extra:
            self._register(name, obj, dist, "")
        self._collect()
        self._report()
        self._check_blocked()

    # -- loading ------------------------------------------------------------
    def _broke(self, plugin: str, dist: str, version: str, what: str, names=(), kind: str | None = None) -> None:
        self._broken.append(
            BrokenPlugin(
                plugin=plugin,
                distribution=dist,
                version=version,
                error=f"plugin {plugin!r} from distribution {f'{dist} {version}'.strip()} {what}",
                remedy=f"Set {DISABLE_ENV}={plugin} to skip it.",
                kind=kind,
                names=tuple(dict.fromkeys([plugin, *names])),
            )
        )
        if self._pm.get_plugin(plugin) is not None:
            self._pm.unregister(name=plugin)

    def _load_entry_points(self) -> None:
        by_name: dict[str, list] = defaultdict(list)
        for ep in metadata.entry_points(group=self.group):
            self._known_names.add(ep.name)
            if ep.name not in self.blocked:
                by_name[ep.name].append(ep)
        for name in sorted(by_name):
            eps = by_name[name]
            origins = [
                (ep.dist.metadata["Name"], ep.dist.version) if ep.dist is not None else ("unknown", "") for ep in eps
            ]
            if len(eps) > 1:
                self._name_conflict(name, origins)
                continue
            (ep,), ((dist, version),) = eps, origins
            try:
                obj = ep.load()
            except Exception as exc:  # report any import failure with its origin
                self._broke(name, dist, version, f"failed to import ({ep.value}): {type(exc).__name__}: {exc}")
                continue
            self._register(name, obj, dist, version)

    def _name_conflict(self, name: str, origins: list[tuple[str, str]]) -> None:
        """Two distributions register one plugin name: pluggy keeps one object per name,
        and neither can be trusted to win, so both are left out."""
        providers = " and ".join(f"{d} {v}".strip() for d, v in origins)
        for dist, version in origins:
            self._broken.append(
                BrokenPlugin(
                    name, dist, version,
                    f"Conflicting plugins found for entry point {name!r}: provided by {providers}",
                    "Uninstall one of them, or give one another entry-point name.",
                    names=(name,),
                )
            )

    def _register(self, name: str, obj: Any, dist: str, version: str) -> None:
        if self._pm.get_plugin(name) is not None:  # an in-process plugin named like an installed one
            self._name_conflict(name, [self._origin[name], (dist, version)])
            self._pm.unregister(name=name)
            return
        self._origin[name] = (dist, version)
        try:
            self._pm.register(obj, name=name)
        except Exception as exc:  # pluggy refuses a bad hookimpl (unknown hook, wrong arguments)
            self._broke(name, dist, version, f"could not be registered: {type(exc).__name__}: {exc}")

    def _collect(self) -> None:
        yielded: dict[str, list[tuple[str, Any]]] = defaultdict(list)  # plugin -> [(hook kind, spec)]
        failed: dict[str, tuple[str, str]] = {}  # plugin -> (kind, what broke)
        for kind, hook_name in _HOOKS.items():
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name in failed:
                    continue
                try:
                    yielded[impl.plugin_name].extend((kind, spec) for spec in (impl.function() or ()))
                except Exception as exc:
                    failed[impl.plugin_name] = (kind, f"raised in {hook_name}(): {type(exc).__name__}: {exc}")

        self._known_names.update(
            spec.name for pairs in yielded.values() for _, spec in pairs if isinstance(getattr(spec, "name", None), str)
        )
        providers: dict[tuple[str, str], list[PluginInfo]] = defaultdict(list)
        for plugin in sorted(set(yielded) | set(failed)):
            # A spec blocked by name is dropped before it is checked: blocking is the way out.
            pairs = [(k, spec) for k, spec in yielded.get(plugin, []) if getattr(spec, "name", None) not in self.blocked]
            dist, version = self._origin.get(plugin, ("unknown", ""))
            problems = [p for p in (_spec_problem(kind, spec) for kind, spec in pairs) if p]
            if plugin in failed or problems:
                # A plugin is loaded whole or not at all: half a plugin would be a surprise.
                kind, what = failed.get(plugin) or (pairs[0][0] if pairs else None, "; ".join(problems))
                names = [spec.name for _, spec in pairs if isinstance(getattr(spec, "name", None), str)]
                self._broke(plugin, dist, version, what, names, kind)
                continue
            for kind, spec in pairs:
                providers[(kind, spec.name)].append(PluginInfo(spec, plugin, dist, version))

        for (kind, name), infos in sorted(providers.items()):
            if len(infos) == 1:
                self._index[kind][name] = infos[0]
                continue
            # conda refuses duplicates; we refuse only the name, so the rest of both plugins stays usable.
            listed = " and ".join(f"{i.provenance()} (plugin {i.plugin!r})" for i in infos)
            others = " or ".join(i.plugin for i in infos)
            for i in infos:
                self._broken.append(
                    BrokenPlugin(
                        i.plugin, i.distribution, i.version,
                        f"Conflicting plugins found for {kind} {name!r}: provided by {listed}",
                        f"Set {DISABLE_ENV}={others} to keep the other.",
                        kind=kind,
                        names=(name,),
                    )
                )

    def _report(self) -> None:
        if not self._broken:
            return
        # One message per problem: both sides of a conflict share theirs.
        problems = {b.message(): b for b in self._broken}
        if self.strict:
            lines = "\n".join(f"  - {message}" for message in problems)
            raise PluginError(
                f"strict plugin loading is on ({STRICT_ENV}=1 or --strict), and {len(problems)} "
                f"plugin problem(s) were found:\n{lines}"
            )
        for b in problems.values():
            warnings.warn(f"{b.error}; it is left out, and runs that choose it fail. {b.remedy}", PluginWarning, stacklevel=2)

    def _check_blocked(self) -> None:
        """A name in HARNESS_DISABLE_PLUGINS that is no plugin is a typo: say so, with the valid names."""
        unknown = sorted(n for n in _blocked_names(()) if n not in self._known_names)
        if unknown:
            warnings.warn(
                f"{DISABLE_ENV} names {', '.join(repr(n) for n in unknown)}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not an installed plugin; valid names: "
                f"{', '.join(sorted(self._known_names)) or '(none installed)'}",
                PluginWarning,
                stacklevel=2,
            )

    # -- lookups ------------------------------------------------------------
    def infos(self, kind: str | None = None) -> list[PluginInfo]:
        """Registered specs, sorted by kind (composition order) then name."""
        kinds = KINDS if kind is None else (kind,)
        return [self._index[k][n] for k in kinds for n in sorted(self._index[k])]

    def names(self, kind: str) -> list[str]:
        return sorted(self._index[kind])

    def broken(self) -> list[BrokenPlugin]:
        """Plugins left out of the index (import failed, hook raised, invalid spec, conflict)."""
        return list(self._broken)

    def broken_for(self, name: str) -> BrokenPlugin | None:
        """The broken plugin a run choosing ``name`` would have used, if any."""
        return next((b for b in self._broken if name in b.names), None)

    def providers(self, capability: str, kind: str | None = None) -> list[str]:
        """Names of the usable specs (of ``kind``) whose ``provides`` has ``capability``."""
        return [i.name for i in self.infos(kind) if capability in i.spec.provides]

    def info(self, kind: str, name: str) -> PluginInfo:
        """The usable spec ``name`` of ``kind``.

        Raises :class:`PluginError` with the load error when ``name`` belongs to a
        broken plugin, and ``KeyError`` listing the valid choices when it is unknown.
        """
        if kind not in self._index:
            raise KeyError(f"unknown plugin kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        try:
            return self._index[kind][name]
        except KeyError:
            pass
        broken = self.broken_for(name)
        if broken is not None:
            raise PluginError(f"{kind} {name!r} cannot be used: {broken.message()}")
        valid = ", ".join(self.names(kind)) or "(none installed)"
        raise KeyError(f"no {kind} named {name!r}; valid choices: {valid}")

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

