"""Valid values of plugin config fields: declared next to the field, checked on the driver.

A config field states what it accepts in its dataclass metadata, and one method of
the config holds the rules that tie fields together::

    @dataclass
    class MyConfig:
        #: Samples per stream; time grows linearly with it, hence the ceiling.
        stream_length: int = field(default=256, metadata=valid(ge=1, le=2**16))
        scheme: str = field(default="exclusive", metadata=valid(one_of=SCHEMES))
        rows: int = 128
        or_group: int = field(default=16, metadata=valid(ge=1, check=(is_power_of_two, "a power of two")))

        def __validate__(self):  # cross-field rules: yield (field, what is wrong)
            if self.rows % self.or_group:
                yield "rows", f"must be a multiple of or_group={self.or_group}"

:func:`validate_config` checks an instance: every field's type (from its annotation:
``int``, ``float``, ``str``, ``bool``, ``Optional[...]``, ``Dict[str, ...]``,
``List[...]``, Enum types), its rule, no NaN or infinity in any float field (unless
its rule says ``finite=False``), then, once each field is valid by itself,
``__validate__``. It raises one
:class:`ConfigError` listing every problem, each naming the key as typed on the
command line (``accelerator.stream_length``), the value given and what is valid.
The runner calls it for every job's plugin configs on the driver
(:func:`harness.runner.experiment_identity`), so a bad value fails before Ray starts
or anything trains, instead of deep inside a worker.

Choices are ``str`` fields with ``one_of`` rather than Enum or Literal types: Literal
is not supported by OmegaConf's structured configs, and an Enum would change the
values plugins compare against, the recorded params and the config hash.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import numbers
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable

__all__ = [
    "METADATA_KEY",
    "ConfigError",
    "Problem",
    "Rule",
    "config_problems",
    "describe",
    "is_power_of_two",
    "metadata_problems",
    "rule_of",
    "valid",
    "validate_config",
    "value_problems",
]

#: The key under which :func:`valid` stores its :class:`Rule` in a field's metadata.
METADATA_KEY = "valid"

_MISSING = object()


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """What values one field accepts (build it with :func:`valid`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    one_of: tuple | None = None
    also: tuple = ()
    finite: bool = True
    check: tuple[Callable[[Any], bool], str] | None = None
    why: str = ""

    @property
    def bounded(self) -> bool:
        return any(b is not None for b in (self.ge, self.gt, self.le, self.lt))


def valid(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    one_of: Iterable | None = None,
    also: Iterable = (),
    finite: bool = True,
    check: tuple[Callable[[Any], bool], str] | None = None,
    why: str = "",
) -> dict[str, Rule]:
    """Field metadata declaring the valid values: ``field(default=..., metadata=valid(...))``.

    ``ge``/``gt``/``le``/``lt``: bounds (inclusive / exclusive) of a number; ``le`` on a
    size is its ceiling, and ``why`` says where it comes from. ``one_of``: the valid
    choices. ``also``: values valid besides the bounds (``valid(ge=2, le=16, also=(0,))``
    reads "0, or 2..16"). ``finite=False`` admits NaN and infinities in a float field
    (refused by default). ``check=(predicate, "a power of two")`` adds a test the
    bounds cannot express, with its description. ``why`` is appended to the message.
    For a ``Dict`` or ``List`` field the rule applies to every value.
    Combine with other metadata as ``metadata={**valid(...), "other": ...}``.
    A malformed rule raises ``TypeError``/``ValueError`` where the config is defined.
    """
    rule = Rule(ge=ge, gt=gt, le=le, lt=lt, one_of=None if one_of is None else tuple(one_of),
                also=tuple(also), finite=bool(finite), check=check, why=str(why))
    problems = _rule_problems(rule)
    if problems:
        raise ValueError(f"valid({_args(rule)}): " + "; ".join(problems))
    return {METADATA_KEY: rule}


def _args(rule: Rule) -> str:
    return ", ".join(f"{f.name}={getattr(rule, f.name)!r}" for f in dataclasses.fields(rule)
                     if getattr(rule, f.name) != f.default)


def _real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and not math.isnan(x)


def _rule_problems(rule: Rule) -> list[str]:
    """How ``rule`` contradicts itself (independent of the field it is attached to)."""
    problems = []
    for name in ("ge", "gt", "le", "lt"):
        bound = getattr(rule, name)
        if bound is not None and not _real(bound):
            problems.append(f"{name}={bound!r} must be a number")
    if rule.ge is not None and rule.gt is not None:
        problems.append("give ge or gt, not both")
    if rule.le is not None and rule.lt is not None:
        problems.append("give le or lt, not both")
    lo = rule.ge if rule.ge is not None else rule.gt
    hi = rule.le if rule.le is not None else rule.lt
    if _real(lo) and _real(hi) and (lo > hi or (lo == hi and (rule.gt is not None or rule.lt is not None))):
        problems.append(f"no value lies between the lower bound {lo} and the upper bound {hi}")
    if rule.one_of is not None:
        if not rule.one_of:
            problems.append("one_of must list at least one choice")
        if rule.bounded or rule.also:
            problems.append("one_of lists every valid value; do not combine it with bounds or also")
    if rule.also and not rule.bounded:
        problems.append("also adds values to bounds; without bounds use one_of")
    if rule.check is not None and not (
        isinstance(rule.check, tuple) and len(rule.check) == 2 and callable(rule.check[0])
        and isinstance(rule.check[1], str) and rule.check[1].strip()
    ):
        problems.append("check must be (predicate, 'what it accepts'), e.g. (is_power_of_two, 'a power of two')")
    return problems


def is_power_of_two(n: Any) -> bool:
    """True for 1, 2, 4, 8, ... (a predicate for ``valid(check=...)``)."""
    return isinstance(n, numbers.Integral) and n >= 1 and not (n & (n - 1))


def rule_of(f: dataclasses.Field) -> Rule | None:
    """The :class:`Rule` declared on a dataclass field, or None."""
    return f.metadata.get(METADATA_KEY) if f.metadata else None


# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class _Shape:
    """A field's annotation, reduced to what validation needs."""

    base: Any  # bool, int, float, str, an Enum type, or None (anything)
    optional: bool = False
    container: str = ""  # "", "dict" or "list"


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # one annotation that cannot be resolved: resolve the others one by one
        pass
    namespace = {**vars(typing), **getattr(sys.modules.get(cls.__module__), "__dict__", {})}
    hints = {}
    for f in dataclasses.fields(cls):
        try:
            hints[f.name] = eval(f.type, namespace) if isinstance(f.type, str) else f.type  # noqa: S307
        except Exception:  # unknown: the type is not checked
            pass
    return hints


def _shape(tp: Any) -> _Shape:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _shape(args[0]) if len(args) == 1 else _Shape(None)
        return dataclasses.replace(inner, optional=len(args) < len(typing.get_args(tp)) or inner.optional)
    if origin in (dict, typing.Dict) or tp in (dict, typing.Dict):
        args = typing.get_args(tp)
        return _Shape(_shape(args[1]).base if len(args) == 2 else None, container="dict")
    if origin in (list, tuple, typing.List) or tp in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return _Shape(_shape(args[0]).base if len(set(args)) == 1 else None, container="list")
    if tp in (bool, int, float, str) or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        return _Shape(tp)
    return _Shape(None)


def _field_shape(cls: type, f: dataclasses.Field) -> _Shape:
    tp = _hints(cls).get(f.name, f.type)
    return _shape(tp) if not isinstance(tp, str) else _Shape(None)


def _type_ok(value: Any, base: Any) -> bool:
    if base is None:
        return True
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if base is str:
        return isinstance(value, str)
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return isinstance(value, base) or (isinstance(value, str) and value in base.__members__)
    return True


_NOUNS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x)


def describe(rule: Rule | None, base: Any = None) -> str:
    """What is valid, in words: ``an integer >= 1 and <= 65536``, ``uniform, gaussian, relu``."""
    if isinstance(base, type) and issubclass(base, enum.Enum) and (rule is None or rule.one_of is None):
        text = ", ".join(base.__members__)
    elif rule is not None and rule.one_of is not None:
        text = ", ".join(c.name if isinstance(c, enum.Enum) else str(c) for c in rule.one_of)
    else:
        noun = _NOUNS.get(base, "a value") if base is not None else ("a number" if rule and rule.bounded else "a value")
        if base is float and (rule is None or rule.finite):
            noun = "a finite number"
        bounds = []
        if rule is not None:
            for name, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                bound = getattr(rule, name)
                if bound is not None:
                    bounds.append(f"{sign} {_fmt(bound)}")
        text = noun + (" " + " and ".join(bounds) if bounds else "")
        if rule is not None and rule.check is not None:
            text += f", {rule.check[1]}"
        if rule is not None and rule.also:
            text = ", ".join(_fmt(a) for a in rule.also) + ", or " + text
    if rule is not None and rule.why:
        text += f" ({rule.why})"
    return text


def _verdict(rule: Rule | None, base: Any) -> str:
    lead = "valid are" if (rule is not None and rule.one_of is not None) or (
        isinstance(base, type) and issubclass(base, enum.Enum)) else "valid is"
    return f"{lead} {describe(rule, base)}"


def _value_ok(value: Any, rule: Rule | None, base: Any) -> bool:
    if not _type_ok(value, base):
        return False
    if isinstance(value, float) and not math.isfinite(value) and (rule is None or rule.finite):
        return False
    if rule is None:
        return True
    if rule.one_of is not None:
        return value in rule.one_of
    if rule.bounded or rule.also:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return False
        if value in rule.also:
            return True
        if math.isnan(value):  # reached only with finite=False: bounds cannot judge NaN
            return True
        if rule.ge is not None and not value >= rule.ge:
            return False
        if rule.gt is not None and not value > rule.gt:
            return False
        if rule.le is not None and not value <= rule.le:
            return False
        if rule.lt is not None and not value < rule.lt:
            return False
    if rule.check is not None:
        try:
            return bool(rule.check[0](value))
        except Exception:
            return False
    return True


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One invalid value: the key as typed on the command line, the value, what is valid."""

    key: str
    value: Any
    text: str
    plugin: str = ""  # "accelerator 'ds_cim'"; empty for a harness-level key such as seed

    def __str__(self) -> str:
        value = "" if self.value is _MISSING else f"={self.value!r}"
        return f"{self.key}{value}: {self.text}" if self.key else self.text


class ConfigError(ValueError):
    """A config value that is not valid, found before anything runs.

    ``problems`` lists every :class:`Problem`; the message names each plugin once, then
    each key with the value given and what is valid, on one line.
    """

    def __init__(self, problems: Iterable[Problem] | str):
        if isinstance(problems, str):
            self.problems: list[Problem] = [Problem("", _MISSING, problems)]
        else:
            self.problems = list(problems)
        super().__init__(format_problems(self.problems))


def format_problems(problems: Iterable[Problem]) -> str:
    """``plugin: key=value: what is valid; key=...; other plugin: ...`` (one line)."""
    groups: dict[str, list[str]] = {}
    for p in problems:
        groups.setdefault(p.plugin, []).append(str(p))
    return "; ".join((f"{plugin}: " if plugin else "") + "; ".join(items) for plugin, items in groups.items())


def value_problems(key: str, value: Any, rule: Rule | None, tp: Any = None, plugin: str = "") -> list[Problem]:
    """Problems of one value against a rule and a type annotation (``key`` as reported)."""
    shape = _shape(tp) if tp is not None else _Shape(None)
    return _check(key, value, rule, shape, plugin)


def _check(key: str, value: Any, rule: Rule | None, shape: _Shape, plugin: str) -> list[Problem]:
    if shape.base is None and not shape.container:  # type unknown: a container's rule is per value
        if isinstance(value, typing.Mapping):
            shape = dataclasses.replace(shape, container="dict")
        elif isinstance(value, (list, tuple)):
            shape = dataclasses.replace(shape, container="list")
    if value is None:
        if shape.optional or (shape.base is None and not shape.container):
            return []
        return [Problem(key, value, _verdict(rule, shape.base), plugin)]
    if shape.container == "dict":
        if not isinstance(value, typing.Mapping):
            return [Problem(key, value, f"valid is a mapping of names to {describe(rule, shape.base)}", plugin)]
        out = []
        for k, v in value.items():
            if not isinstance(k, str):
                out.append(Problem(f"{key}[{k!r}]", v, "keys must be names (strings)", plugin))
            else:
                out.extend(_check(f"{key}.{k}", v, rule, _Shape(shape.base), plugin))
        return out
    if shape.container == "list":
        if isinstance(value, (str, bytes)) or not isinstance(value, typing.Sequence):
            return [Problem(key, value, f"valid is a list of {describe(rule, shape.base)}", plugin)]
        out = []
        for i, v in enumerate(value):
            out.extend(_check(f"{key}[{i}]", v, rule, _Shape(shape.base), plugin))
        return out
    if _value_ok(value, rule, shape.base):
        return []
    return [Problem(key, value, _verdict(rule, shape.base), plugin)]


def _label(instance: Any, kind: str | None, name: str | None) -> str:
    if kind and name:
        return f"{kind} {name!r}"
    return name or type(instance).__name__


def config_problems(instance: Any, kind: str | None = None, name: str | None = None) -> list[Problem]:
    """Every problem of a config dataclass instance (see :func:`validate_config`)."""
    cls = type(instance)
    plugin = _label(instance, kind, name)
    prefix = f"{kind}." if kind else ""
    problems: list[Problem] = []
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name, None)
        problems.extend(_check(prefix + f.name, value, rule_of(f), _field_shape(cls, f), plugin))
    hook = getattr(instance, "__validate__", None)
    if callable(hook) and not problems:  # rules between fields reason about values valid by themselves
        for item in hook() or ():
            if isinstance(item, str):
                problems.append(Problem("", _MISSING, item, plugin))
            else:
                field_name, text = item
                problems.append(Problem(prefix + field_name, getattr(instance, field_name, _MISSING), text, plugin))
    return problems


def validate_config(instance: Any, kind: str | None = None, name: str | None = None) -> None:
    """Raise :class:`ConfigError` listing every invalid value of a plugin config instance.

    Every field is checked against its type and rule, and all problems are listed;
    the config's ``__validate__`` (rules between fields) runs once every field is
    valid by itself, so it never reasons about a value already refused.

    ``kind`` and ``name`` (``"accelerator"``, ``"ds_cim"``) name the plugin in the
    message and prefix the keys (``accelerator.stream_length``) as a user types them.
    """
    problems = config_problems(instance, kind, name)
    if problems:
        raise ConfigError(problems)


def metadata_problems(config: type) -> list[str]:
    """How the ``valid(...)`` metadata of a config dataclass is malformed (empty: fine).

    Checks that each rule is a :class:`Rule`, fits its field's type (bounds on
    numbers, ``one_of`` choices of the field's type) and that ``__validate__``, if
    defined, is a method.
    """
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        return [f"{config!r} is not a dataclass type"]
    problems = []
    for f in dataclasses.fields(config):
        if not f.metadata or METADATA_KEY not in f.metadata:
            continue
        rule = f.metadata[METADATA_KEY]
        where = f"{config.__name__}.{f.name}"
        if not isinstance(rule, Rule):
            problems.append(f"{where}: metadata[{METADATA_KEY!r}] must come from harness.validation.valid(...), "
                            f"got {type(rule).__name__}")
            continue
        problems.extend(f"{where}: {p}" for p in _rule_problems(rule))
        base = _field_shape(config, f).base
        if (rule.bounded or rule.also) and base in (str, bool):
            problems.append(f"{where}: bounds need a number field, the field is {base.__name__}")
        if rule.one_of is not None and base is not None:
            wrong = [c for c in rule.one_of if not _type_ok(c, base)]
            if wrong:
                problems.append(f"{where}: one_of has {wrong!r}, not of the field's type {getattr(base, '__name__', base)}")
    hook = getattr(config, "__validate__", None)
    if hook is not None and not callable(hook):
        problems.append(f"{config.__name__}.__validate__ must be a method yielding (field, what is wrong)")
    return problems
