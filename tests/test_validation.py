"""Valid values declared next to config fields, checked on the driver before anything runs.

Three parts: unit tests of :func:`harness.validation.valid` and
:func:`~harness.validation.validate_config` (each rule can fail); a catalogue of bad
plugin-config values generated from every installed plugin's config metadata, each
refused in-process by :func:`harness.runner.experiment_identity` (what the launcher's
driver calls for every job); and a few ``harness run`` commands with bad values.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import pytest

from conftest import mlflow_runs, run_harness
from harness.host import get_host
from harness.runner import experiment_identity
from harness.specs import AcceleratorSpec, SpecError, validate_spec
from harness.testing import check_spec
from harness.validation import (
    ConfigError,
    Rule,
    is_power_of_two,
    metadata_problems,
    rule_of,
    valid,
    validate_config,
)

# --------------------------------------------------------------------------- valid(...)


class Mode(enum.Enum):
    fast = 1
    slow = 2


@dataclass
class Sample:
    size: int = field(default=8, metadata=valid(ge=1, le=1024, why="a typo guard"))
    ratio: float = field(default=0.5, metadata=valid(gt=0, lt=1))
    bits: int = field(default=8, metadata=valid(ge=2, le=16, also=(0,)))
    scheme: str = field(default="a", metadata=valid(one_of=("a", "b")))
    group: Optional[int] = field(default=None, metadata=valid(ge=1, check=(is_power_of_two, "a power of two")))
    gains: Dict[str, float] = field(default_factory=dict, metadata=valid(ge=1))
    widths: List[int] = field(default_factory=list, metadata=valid(ge=1))
    scale: float = 1.0  # no metadata: still typed, still finite
    noise: float = field(default=0.0, metadata=valid(ge=0, finite=False))
    mode: Mode = Mode.fast
    flag: bool = False

    def __validate__(self):
        if self.group is not None and self.size % self.group:
            yield "size", f"must be a multiple of group={self.group}"


def problems_of(**values) -> dict[str, str]:
    """``{key: message}`` of validating ``Sample(**values)`` (empty: valid)."""
    try:
        validate_config(Sample(**values), "accelerator", "sample")
    except ConfigError as exc:
        return {p.key: str(p) for p in exc.problems}
    return {}


def test_defaults_and_good_values_are_valid():
    assert problems_of() == {}
    assert problems_of(size=1024, ratio=0.999, bits=0, scheme="b", group=4, gains={"x": 1.0}, widths=[1, 2],
                       noise=math.inf, mode=Mode.slow, flag=True) == {}
    assert problems_of(mode="slow") == {}  # an Enum's member name, as OmegaConf accepts it


@pytest.mark.parametrize(
    "values, key, needle",
    [
        ({"size": 0}, "accelerator.size", "size=0: valid is an integer >= 1 and <= 1024 (a typo guard)"),
        ({"size": 1025}, "accelerator.size", "<= 1024"),
        ({"size": 10**12}, "accelerator.size", "size=1000000000000: valid is"),
        ({"ratio": 0.0}, "accelerator.ratio", "ratio=0.0: valid is a finite number > 0 and < 1"),
        ({"ratio": 1.0}, "accelerator.ratio", "< 1"),
        ({"bits": 1}, "accelerator.bits", "bits=1: valid is 0, or an integer >= 2 and <= 16"),
        ({"bits": 17}, "accelerator.bits", "bits=17"),
        ({"scheme": "c"}, "accelerator.scheme", "scheme='c': valid are a, b"),
        ({"group": 3}, "accelerator.group", "group=3: valid is an integer >= 1, a power of two"),
        ({"group": 0}, "accelerator.group", "group=0"),
        ({"gains": {"conv1": 0.5}}, "accelerator.gains.conv1", "gains.conv1=0.5: valid is a finite number >= 1"),
        ({"gains": {"conv1": math.nan}}, "accelerator.gains.conv1", "gains.conv1=nan"),
        ({"gains": [1.0]}, "accelerator.gains", "valid is a mapping"),
        ({"widths": [4, 0]}, "accelerator.widths[1]", "widths[1]=0: valid is an integer >= 1"),
        ({"scale": math.nan}, "accelerator.scale", "scale=nan: valid is a finite number"),
        ({"scale": math.inf}, "accelerator.scale", "scale=inf: valid is a finite number"),
        ({"scale": -math.inf}, "accelerator.scale", "scale=-inf"),
        ({"noise": -1.0}, "accelerator.noise", "noise=-1.0: valid is a number >= 0"),
        ({"size": "many"}, "accelerator.size", "size='many': valid is an integer"),
        ({"size": True}, "accelerator.size", "size=True: valid is an integer"),
        ({"size": 8.5}, "accelerator.size", "size=8.5"),
        ({"size": None}, "accelerator.size", "size=None: valid is an integer"),
        ({"flag": "yes"}, "accelerator.flag", "flag='yes': valid is true or false"),
        ({"mode": "medium"}, "accelerator.mode", "mode='medium': valid are fast, slow"),
        ({"size": 12, "group": 8}, "accelerator.size", "size=12: must be a multiple of group=8"),
    ],
)
def test_each_rule_can_fail_and_names_key_value_and_what_is_valid(values, key, needle):
    found = problems_of(**values)
    assert list(found) == [key], found
    assert needle in found[key]


def test_every_problem_is_listed_at_once_on_one_line_naming_the_plugin():
    with pytest.raises(ConfigError) as caught:
        validate_config(Sample(size=0, ratio=math.nan, scheme="z", gains={"a": 0.0, "b": 2.0}), "accelerator", "sample")
    exc = caught.value
    assert isinstance(exc, ValueError)
    assert [p.key for p in exc.problems] == ["accelerator.size", "accelerator.ratio", "accelerator.scheme",
                                             "accelerator.gains.a"]
    message = str(exc)
    assert message.startswith("accelerator 'sample': accelerator.size=0: valid is") and "\n" not in message
    assert message.count("accelerator 'sample'") == 1


def test_cross_field_rules_run_once_every_field_is_valid_by_itself():
    # group=3 breaks its own rule; "size=8 must be a multiple of group=3" would only be noise.
    assert list(problems_of(group=3)) == ["accelerator.group"]
    assert list(problems_of(size=12, group=8)) == ["accelerator.size"]

    @dataclass
    class Buggy:
        n: int = field(default=1, metadata=valid(ge=0))

        def __validate__(self):
            if 10 // self.n > 3:
                yield "n", "too small"

    with pytest.raises(ConfigError, match=r"n=-1: valid is"):  # the rule is not reached
        validate_config(Buggy(n=-1))
    with pytest.raises(ZeroDivisionError):  # a bug in the plugin's own rule surfaces as such
        validate_config(Buggy(n=0))
    with pytest.raises(ConfigError, match=r"^Buggy: n=1: too small$"):
        validate_config(Buggy(n=1))


def test_without_a_plugin_name_keys_are_bare_field_names():
    with pytest.raises(ConfigError, match=r"^Sample: size=0: valid is"):
        validate_config(Sample(size=0))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"ge": 1, "gt": 0}, "give ge or gt, not both"),
        ({"le": 1, "lt": 2}, "give le or lt, not both"),
        ({"ge": 5, "le": 1}, "no value lies between"),
        ({"gt": 1, "lt": 1}, "no value lies between"),
        ({"ge": math.nan}, "must be a number"),
        ({"le": "10"}, "must be a number"),
        ({"one_of": ()}, "at least one choice"),
        ({"one_of": ("a",), "ge": 0}, "do not combine"),
        ({"also": (0,)}, "without bounds use one_of"),
        ({"check": is_power_of_two}, "check must be (predicate, 'what it accepts')"),
        ({"check": (is_power_of_two, "")}, "check must be"),
    ],
)
def test_malformed_rules_are_refused_where_they_are_declared(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        valid(**kwargs)


def test_metadata_problems_find_rules_that_do_not_fit_their_field():
    @dataclass
    class Bad:
        name: str = field(default="a", metadata=valid(ge=1))
        count: int = field(default=1, metadata=valid(one_of=("one", "two")))
        size: int = field(default=1, metadata={"valid": {"ge": 1}})
        fine: Optional[float] = field(default=None, metadata=valid(gt=0))

    found = metadata_problems(Bad)
    assert len(found) == 3, found
    assert "Bad.name: bounds need a number field" in found[0]
    assert "Bad.count: one_of has ['one', 'two']" in found[1]
    assert "Bad.size: metadata['valid'] must come from harness.validation.valid(...)" in found[2]
    assert metadata_problems(Sample) == []
    assert isinstance(rule_of(dataclasses.fields(Sample)[0]), Rule)


def _spec(config):
    return AcceleratorSpec(name="demo", summary="a demo", config=config, factory=lambda c: c)


def test_validate_spec_reports_malformed_metadata_and_the_kit_checks_defaults_and_smoke():
    @dataclass
    class Malformed:
        name: str = field(default="a", metadata=valid(le=3))

    with pytest.raises(SpecError, match="valid\\(...\\) metadata: Malformed.name: bounds need a number field"):
        validate_spec(_spec(Malformed))

    @dataclass
    class DefaultOutside:
        n: int = field(default=0, metadata=valid(ge=1))

    with pytest.raises(AssertionError, match="default config is not valid by its own metadata.*n=0"):
        check_spec(_spec(DefaultOutside))

    @dataclass
    class SmokeOutside:
        n: int = field(default=1, metadata=valid(ge=1))

    spec = dataclasses.replace(_spec(SmokeOutside), smoke={"n": -1})
    with pytest.raises(AssertionError, match="smoke config is not valid by its own metadata.*n=-1"):
        check_spec(spec)


def test_every_installed_plugin_declares_well_formed_metadata_and_valid_defaults():
    for info in get_host().infos():
        assert metadata_problems(info.spec.config) == [], info.name
        validate_config(info.spec.config(), info.kind, info.name)


# --------------------------------------------------------------------------- the catalogue

BASE_CHOICES = {"workload": "dot_products", "technique": "none", "accelerator": "exact"}
HUGE = 10**12


def _choices(info) -> dict[str, str]:
    choices = dict(BASE_CHOICES)
    if info.kind == "technique":
        choices["workload"] = info.spec.smoke_workload
    elif info.kind == "accelerator" and info.spec.needs:  # as the conformance kit's smoke run
        host = get_host()
        choices["workload"] = next(w for w in host.names("workload") if info.spec.needs <= host.spec("workload", w).provides)
    choices[info.kind] = info.name
    return choices


def _base_type(tp):
    """(base type, container) of an annotation: Optional and Dict/List unwrapped."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(tp)
    if origin is dict:
        return typing.get_args(tp)[1], "dict"
    if origin is list:
        return typing.get_args(tp)[0], "list"
    return tp, ""


def _outside(rule: Rule, base) -> list[tuple[str, object]]:
    """Values just outside each bound of ``rule``, NaN/inf for floats, a bad choice, a huge size."""
    cases = []
    if rule.one_of is not None:
        bad = "bogus" if base is str else max(rule.one_of) + 1
        cases.append(("not one_of", bad))
        return cases
    if base is int:
        if rule.ge is not None:
            cases.append(("below ge", int(rule.ge) - 1))
        if rule.gt is not None:
            cases.append(("at gt", int(rule.gt)))
        if rule.le is not None:
            cases.append(("above le", int(rule.le) + 1))
            if rule.le < HUGE:
                cases.append(("huge", HUGE))
        if rule.lt is not None:
            cases.append(("at lt", int(rule.lt)))
        if rule.check is not None:
            lo = int(rule.ge if rule.ge is not None else 0)
            cases.append(("fails check", next(n for n in range(lo, lo + 1000) if not rule.check[0](n))))
    elif base is float:
        if rule.ge is not None:
            cases.append(("below ge", math.nextafter(float(rule.ge), -math.inf)))
        if rule.gt is not None:
            cases.append(("at gt", float(rule.gt)))
        if rule.le is not None:
            cases.append(("above le", math.nextafter(float(rule.le), math.inf)))
        if rule.lt is not None:
            cases.append(("at lt", float(rule.lt)))
        if rule.finite:
            cases += [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)]
    elif base is str and rule.check is not None:
        cases.append(("fails check", "bogus"))
    return [(label, value) for label, value in cases if value not in rule.also]


def _catalogue():
    """Every (plugin, field, bad value) the installed plugins' metadata implies."""
    cases = []
    for info in get_host().infos():
        hints = typing.get_type_hints(info.spec.config)
        for f in dataclasses.fields(info.spec.config):
            rule = rule_of(f)
            base, container = _base_type(hints[f.name])
            if rule is None:
                if base is float:  # no metadata: NaN/inf are still refused
                    rule = Rule()
                else:
                    continue
            for label, bad in _outside(rule, base):
                key = f"{info.kind}.{f.name}"
                value = {"layer": bad} if container == "dict" else bad
                shown = f"{key}.layer={bad!r}" if container == "dict" else f"{key}={bad!r}"
                cases.append(pytest.param(_choices(info), {info.kind: {f.name: value}}, 0, info, shown, "valid",
                                          id=f"{info.name}.{f.name}-{label}"))
    return cases


def _cross_field_and_seed():
    host = get_host()
    # (kind, name, values, the key=value shown, what the message says is valid instead)
    listed = [
        ("accelerator", "ds_cim", {"rows": 100}, "accelerator.rows=100", "must be a multiple of or_group=16"),
        ("accelerator", "ds_cim", {"or_group": 256}, "accelerator.or_group=256", "must divide rows=128"),
        ("accelerator", "ds_cim", {"scheme": "nested", "partition": "weight"}, "accelerator.partition='weight'",
         "needs scheme='exclusive'"),
        ("technique", "admm", {"layer_bits": {"fc1": 4}}, "technique.layer_bits={'fc1': 4}", "needs quant_bits > 0"),
        ("workload", "mnist_vit", {"dim": 63}, "workload.dim=63", "must be a multiple of heads=4"),
        ("workload", "dot_products", {"count": 2**20}, "workload.count=1048576", "valid is at most 67,108,864"),
    ]
    cases = []
    for kind, name, values, shown, instead in listed:
        info = host.info(kind, name)
        cases.append(pytest.param(_choices(info), {kind: values}, 0, info, shown, instead,
                                  id=f"{name}-cross-{'-'.join(values)}"))
    for seed in (-1, 2**63):
        cases.append(pytest.param(BASE_CHOICES, {}, seed, None, f"seed={seed}", "valid is an integer >= 0",
                                  id=f"seed={seed}"))
    return cases


CATALOGUE = _catalogue() + _cross_field_and_seed()


def test_the_catalogue_is_broad():
    assert len(CATALOGUE) >= 40
    plugins = {p.values[3].name for p in CATALOGUE if p.values[3] is not None}
    assert {"dot_products", "digits_mlp", "mnist_lenet5", "mnist_vit", "minilm_gemm", "admm", "ds_cim"} <= plugins
    ids = {p.id for p in CATALOGUE}
    for expected in ("mnist_lenet5.lr-nan", "ds_cim.stream_length-huge", "ds_cim.clock_mhz-inf",
                     "dot_products.count-huge", "mnist_lenet5.epochs-below ge", "mnist_lenet5.batch_size-below ge"):
        assert expected in ids


@pytest.mark.parametrize("choices, values, seed, info, shown, instead", CATALOGUE)
def test_bad_plugin_config_is_refused_on_the_driver(choices, values, seed, info, shown, instead):
    with pytest.raises(ConfigError) as caught:
        experiment_identity(choices, values, seed=seed)
    message = str(caught.value)
    # The full key with the value given, then what is valid: "workload.lr=nan: valid is ...".
    assert f"{shown}: " in message and instead in message.split(f"{shown}: ", 1)[1], message
    if info is not None:
        assert f"{info.kind} {info.name!r}: " in message
    assert len(caught.value.problems) == 1 and "\n" not in message


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    "args, shown, valid_text",
    [
        (["workload=mnist_lenet5", "workload.lr=nan"], "workload.lr=nan", "valid is a finite number > 0"),
        (["workload=mnist_lenet5", "workload.epochs=0"], "workload.epochs=0", "valid is an integer >= 1"),
        (["accelerator=ds_cim", "accelerator.stream_length=1000000000000"],
         "accelerator.stream_length=1000000000000", "<= 65536"),
        (["seed=-1"], "seed=-1", "valid is an integer >= 0"),
    ],
)
def test_harness_run_refuses_a_bad_value_before_anything_runs(workdir, args, shown, valid_text):
    result = run_harness(["run", *args], workdir, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    # The error is one line naming the key, the value and what is valid.
    lines = [line for line in out.splitlines() if shown in line and valid_text in line]
    assert len(lines) == 1, out
    # Refused before anything ran: no run recorded, nothing trained into the cache.
    if (workdir / "mlflow.db").exists():
        assert mlflow_runs(workdir / "mlflow.db") == []
    assert not (workdir / ".harness_cache").exists()

