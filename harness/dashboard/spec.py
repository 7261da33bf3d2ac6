"""Dashboard specs: YAML in, checked dataclasses out, or an error naming file, key and what is valid.

A spec is found by name in, in order: ``HARNESS_DASHBOARDS`` (``os.pathsep``-separated
folders), ``./dashboards`` in the working folder, the project's own ``dashboards/``
(a source checkout or editable install), and a ``dashboards/`` folder inside every
installed plugin's package (``harness_plugins/ds_cim/dashboards/``), so a plugin
ships its dashboard with its preset. A path to a ``.yaml`` file works too.
See ``docs/dashboards.md`` for the format.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["PANEL_KINDS", "DashboardSpec", "DashboardSpecError", "Panel", "find_spec", "list_specs", "load_spec", "parse_spec"]


class DashboardSpecError(ValueError):
    """A dashboard spec that cannot be used; the message names the file and key."""


#: Keys each panel kind accepts (besides the common ones), and which are required.
_COMMON = {"kind", "title", "where", "claims", "note"}
PANEL_KINDS: Mapping[str, tuple[set[str], set[str]]] = {
    "scatter": ({"x", "y", "color", "facet", "pareto", "log_x", "log_y"}, {"x", "y"}),
    "line": ({"x", "y", "color", "facet", "reference", "log_x", "log_y"}, {"x", "y"}),
    "curves": ({"metric", "color", "max_runs", "log_y"}, {"metric"}),
    "claims": ({"plugins", "show"}, set()),
    "table": ({"columns", "sort", "limit"}, {"columns"}),
}
_TOP = {"title", "description", "select", "panels"}
_SELECT = {"experiment", "sweep", "where", "status"}
_STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED")
_PARETO_SENSE = ("min", "max")


@dataclass(frozen=True)
class Panel:
    """One panel of a dashboard (fields unused by its kind stay at their defaults)."""

    kind: str
    title: str
    x: str = ""
    y: str = ""
    metric: str = ""
    color: str = ""
    facet: str = ""
    pareto: tuple[str, str] | None = None  # (x sense, y sense): "min"/"max"
    reference: tuple[str, ...] = ()
    log_x: bool = False
    log_y: bool = False
    max_runs: int = 40
    plugins: tuple[str, ...] | None = None
    show: str = "applicable"  # claims panel: applicable (some run in the claim's setting) | all
    columns: tuple[str, ...] = ()
    sort: str = ""
    limit: int = 0
    where: Mapping[str, Any] = field(default_factory=dict)
    claims: bool = True
    note: str = ""


@dataclass(frozen=True)
class DashboardSpec:
    name: str
    title: str
    path: str
    description: str = ""
    experiments: tuple[str, ...] = ()  # empty: the experiment given on the command line
    sweep: str = "latest"  # latest | all | a sweep id (or prefix)
    where: Mapping[str, Any] = field(default_factory=dict)
    status: tuple[str, ...] = ("FINISHED",)
    panels: tuple[Panel, ...] = ()


def _err(path: str, key: str, message: str) -> DashboardSpecError:
    return DashboardSpecError(f"dashboard spec {path}: {key}: {message}")


def _unknown(path: str, where: str, got: Mapping, valid: set[str]) -> None:
    bad = sorted(set(got) - valid)
    if bad:
        raise _err(path, where or "top level", f"unknown key(s) {', '.join(map(repr, bad))}; valid: {', '.join(sorted(valid))}")


def _str(path: str, key: str, value: Any, allow_empty: bool = False) -> str:
    if value is None and allow_empty:
        return ""
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise _err(path, key, f"{value!r} must be a non-empty string")
    return value.strip()


def _strs(path: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise _err(path, key, f"{value!r} must be a string or a non-empty list of strings")
    return tuple(v.strip() for v in value)


def _bool(path: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _err(path, key, f"{value!r} must be true or false")
    return value


def _int(path: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _err(path, key, f"{value!r} must be an integer >= {minimum}")
    return value


def _where(path: str, key: str, value: Any) -> dict[str, Any]:
    from harness.claims import parse_condition

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(path, key, f"{value!r} must be a mapping of metric/param/tag to a condition, e.g. {{accelerator: ds_cim, 'eval/accuracy': '> 0.5'}}")
    for k, v in value.items():
        try:
            parse_condition(k, v, f"dashboard spec {path}: {key}")
        except ValueError as exc:
            raise DashboardSpecError(str(exc)) from None
    return dict(value)


def _panel(path: str, i: int, raw: Any) -> Panel:
    where = f"panels[{i}]"
    if not isinstance(raw, dict):
        raise _err(path, where, f"{raw!r} must be a mapping with a 'kind'")
    kind = raw.get("kind")
    if kind not in PANEL_KINDS:
        raise _err(path, f"{where}.kind", f"{kind!r} is not a panel kind; valid: {', '.join(PANEL_KINDS)}")
    own, required = PANEL_KINDS[kind]
    _unknown(path, f"{where} ({kind})", raw, own | _COMMON)
    missing = sorted(required - set(raw))
    if missing:
        raise _err(path, where, f"a {kind} panel needs {', '.join(missing)}")
    kw: dict[str, Any] = {"kind": kind}
    for key in ("x", "y", "metric"):
        if key in raw:
            kw[key] = _str(path, f"{where}.{key}", raw[key])
    for key in ("color", "facet", "sort", "note"):
        if key in raw:
            kw[key] = _str(path, f"{where}.{key}", raw[key], allow_empty=True)
    for key in ("log_x", "log_y", "claims"):
        if key in raw:
            kw[key] = _bool(path, f"{where}.{key}", raw[key])
    if "max_runs" in raw:
        kw["max_runs"] = _int(path, f"{where}.max_runs", raw["max_runs"], 1)
    if "limit" in raw:
        kw["limit"] = _int(path, f"{where}.limit", raw["limit"], 0)
    if "reference" in raw:
        kw["reference"] = _strs(path, f"{where}.reference", raw["reference"])
    if "columns" in raw:
        kw["columns"] = _strs(path, f"{where}.columns", raw["columns"])
    if "plugins" in raw:
        kw["plugins"] = _strs(path, f"{where}.plugins", raw["plugins"])
    if "where" in raw:
        kw["where"] = _where(path, f"{where}.where", raw["where"])
    if "show" in raw:
        if raw["show"] not in ("applicable", "all"):
            raise _err(path, f"{where}.show", f"{raw['show']!r}: valid are applicable (claims some run's setting matches), all")
        kw["show"] = raw["show"]
    if "pareto" in raw:
        p = raw["pareto"]
        if p is True:
            kw["pareto"] = ("min", "max")
        elif p is False or p is None:
            kw["pareto"] = None
        elif isinstance(p, dict) and set(p) == {"x", "y"} and all(v in _PARETO_SENSE for v in p.values()):
            kw["pareto"] = (p["x"], p["y"])
        else:
            raise _err(path, f"{where}.pareto", f"{p!r}: use true (x lower, y higher is better) or {{x: min|max, y: min|max}}")
    default_title = {
        "scatter": f"{kw.get('y')} vs {kw.get('x')}",
        "line": f"{kw.get('y')} vs {kw.get('x')}",
        "curves": f"{kw.get('metric')} per step",
        "claims": "Claimed vs measured",
        "table": "Runs",
    }[kind]
    kw["title"] = _str(path, f"{where}.title", raw["title"]) if "title" in raw else default_title
    return Panel(**kw)


def parse_spec(data: Any, path: str, name: str | None = None) -> DashboardSpec:
    """A checked :class:`DashboardSpec` from parsed YAML ``data`` read from ``path``."""
    if not isinstance(data, dict):
        raise _err(path, "top level", f"expected a mapping with title, select and panels, got {type(data).__name__}")
    _unknown(path, "", data, _TOP)
    if "panels" not in data:
        raise _err(path, "panels", "missing; a dashboard needs a list of panels")
    panels = data["panels"]
    if not isinstance(panels, list) or not panels:
        raise _err(path, "panels", f"must be a non-empty list of panels (kinds: {', '.join(PANEL_KINDS)})")
    select = data.get("select") or {}
    if not isinstance(select, dict):
        raise _err(path, "select", f"{select!r} must be a mapping with keys {', '.join(sorted(_SELECT))}")
    _unknown(path, "select", select, _SELECT)
    kw: dict[str, Any] = {}
    if "experiment" in select:
        kw["experiments"] = _strs(path, "select.experiment", select["experiment"])
    if "sweep" in select:
        kw["sweep"] = _str(path, "select.sweep", str(select["sweep"]))
    if "status" in select:
        statuses = _strs(path, "select.status", select["status"])
        bad = [s for s in statuses if s not in _STATUSES]
        if bad:
            raise _err(path, "select.status", f"{bad} not run statuses; valid: {', '.join(_STATUSES)}")
        kw["status"] = statuses
    if "where" in select:
        kw["where"] = _where(path, "select.where", select["where"])
    stem = name or Path(path).stem
    return DashboardSpec(
        name=stem,
        title=_str(path, "title", data.get("title", stem)),
        path=path,
        description=_str(path, "description", data.get("description", ""), allow_empty=True),
        panels=tuple(_panel(path, i, p) for i, p in enumerate(panels)),
        **kw,
    )


def load_spec(path: str | os.PathLike) -> DashboardSpec:
    """Read and check the spec file at ``path``."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise DashboardSpecError(f"dashboard spec {p}: cannot read it: {exc}") from None
    except yaml.YAMLError as exc:
        raise DashboardSpecError(f"dashboard spec {p}: not valid YAML: {exc}") from None
    return parse_spec(data, str(p))


def search_path() -> list[Path]:
    """Folders searched for specs by name, in order (see the module docstring)."""
    folders = [Path(p) for p in os.environ.get("HARNESS_DASHBOARDS", "").split(os.pathsep) if p]
    folders.append(Path.cwd() / "dashboards")
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():  # a source checkout, not site-packages
        folders.append(root / "dashboards")
    folders.extend(_plugin_folders())
    seen, out = set(), []
    for f in folders:
        key = f.resolve() if f.exists() else f
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _plugin_folders() -> list[Path]:
    """``dashboards/`` inside each installed plugin's module and top-level package."""
    try:
        from harness.host import get_host

        infos = get_host().infos()
    except Exception:  # no plugins loadable: the other folders still work
        return []
    out = []
    for info in infos:
        # The plugin's package is where its factory or its config dataclass is defined
        # (a plugin may take its config from a shared module: hbm_pim's is harness.serving's).
        for module in {_module_of(info.spec.factory), _module_of(info.spec.config)} - {None}:
            file = getattr(module, "__file__", None)
            if not file:
                continue
            out.append(Path(file).resolve().parent / "dashboards")
            top = sys.modules.get(module.__name__.split(".")[0])
            if top is not None and getattr(top, "__file__", None):
                out.append(Path(top.__file__).resolve().parent / "dashboards")
    return out


def _module_of(obj: Any):
    return sys.modules.get(getattr(obj, "__module__", "") or "")


def list_specs() -> dict[str, Path]:
    """``{name: path}`` of every spec on the search path (first one wins)."""
    found: dict[str, Path] = {}
    for folder in search_path():
        if folder.is_dir():
            for f in sorted(folder.glob("*.y*ml")):
                found.setdefault(f.stem, f)
    return found


def find_spec(name_or_path: str) -> Path:
    """The file of spec ``name_or_path``; raises naming the specs that exist."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if p.is_file():
            return p
        raise DashboardSpecError(f"dashboard spec {name_or_path}: no such file")
    found = list_specs()
    if name_or_path in found:
        return found[name_or_path]
    raise DashboardSpecError(
        f"no dashboard spec named {name_or_path!r}; known: {', '.join(sorted(found)) or 'none'} "
        f"(searched {', '.join(str(f) for f in search_path())})"
    )
