"""Claims judged on sweeps (claims v2): one verdict per claim over all matching runs.

The runner's per-run ``tables/claims.csv`` (:func:`harness.runner.compare_claims`)
puts a claim next to one run's number, which compares a configured target with a
paper's best (a 20x run against a 246x claim). Here a claim is a point with
conditions, judged on every run that matches it:

* the run used the claim's plugin, with the ``when`` config values;
* the run meets every ``at`` condition (other metrics, params or tags);
* the run is FINISHED and logged the claim's ``metric``.

Among those the best measured value (``direction``: the highest, the lowest, or
the closest when the claim has no direction) gets one :data:`VERDICTS`:

``reproduced``
    within the tolerance the claim declares (or better, for a directed claim);
``same direction, smaller effect``
    between the claim's ``baseline`` (the no-effect value) and the claimed value;
``not reproduced``
    anything else;
``not comparable``
    no matching run used the paper's workload; the verdict the numbers would
    get is kept as ``indicative``, so a reader sees the trend without a false match;
``not measured``
    no run in the claim's setting (plugin, ``when``, param conditions) logged the metric.

Runs in the setting that all miss a metric bound of ``at`` (every run lost
accuracy, for a "246x at no loss" claim) make the claim ``not reproduced``.

Conditions (``Claim.at`` and dashboard ``where:``): a key is a metric
(``stage/name``), a param (``accelerator.stream_length``, ``technique``,
``seed``) or a tag (``tag:harness.sweep_id``); a value is a scalar (equality) or a
string ``"<= 0"``, ``"> 0.5"``, ``"!= ds_cim2"`` (operators ``<= >= < > == !=``).
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence

from harness.specs import KINDS, Claim

__all__ = [
    "NOT_COMPARABLE",
    "NOT_MEASURED",
    "NOT_REPRODUCED",
    "REPRODUCED",
    "SMALLER_EFFECT",
    "VERDICTS",
    "Condition",
    "Judgement",
    "RunLike",
    "claim_problems",
    "judge",
    "judge_runs",
    "parse_condition",
]

REPRODUCED = "reproduced"
SMALLER_EFFECT = "same direction, smaller effect"
NOT_REPRODUCED = "not reproduced"
NOT_COMPARABLE = "not comparable"
NOT_MEASURED = "not measured"
VERDICTS = (REPRODUCED, SMALLER_EFFECT, NOT_REPRODUCED, NOT_COMPARABLE, NOT_MEASURED)
DIRECTIONS = ("higher", "lower")

_OPS = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_COND_RE = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$")


class RunLike(Protocol):
    """What judging needs of a run (:class:`harness.tracking_read.RunView` has it)."""

    run_id: str
    status: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) or math.isinf(out) else None


@dataclass(frozen=True)
class Condition:
    """``key OP value``: a test on one metric, param or tag of a run."""

    key: str
    op: str
    value: Any

    @property
    def is_metric(self) -> bool:
        return "/" in self.key and not self.key.startswith("tag:")

    def lookup(self, run: RunLike) -> Any:
        """The run's value for ``key`` (None when it has none)."""
        if self.key.startswith("tag:"):
            return run.tags.get(self.key[4:])
        if self.is_metric:
            return run.metrics.get(self.key)
        return run.params.get(self.key)

    def holds(self, run: RunLike) -> bool:
        return self.test(self.lookup(run))

    def test(self, got: Any) -> bool:
        if got is None:
            return False
        a, b = _number(got), _number(self.value)
        if a is not None and b is not None:
            return _OPS[self.op](a, b)
        if self.op in ("==", "!="):
            return _OPS[self.op](str(got), str(self.value))
        return False  # an ordering between non-numbers: never holds

    @property
    def bound(self) -> float | None:
        """The number this condition pins (for drawing a claim at it), if any."""
        return _number(self.value) if self.op in ("==", "<=", ">=") else None

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.value}"


def parse_condition(key: str, spec: Any, where: str = "condition") -> Condition:
    """``{key: spec}`` as a :class:`Condition`; raises ValueError naming what is valid."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"{where}: key {key!r} must be a metric ('stage/name'), a param ('kind.field') or 'tag:NAME'")
    if isinstance(spec, str):
        m = _COND_RE.match(spec)
        if m:
            op, raw = m.groups()
            num = _number(raw)
            if op in ("<", ">", "<=", ">=") and num is None:
                raise ValueError(f"{where}: {key}: {spec!r} compares with a non-number; use a number after {op}")
            return Condition(key, op, num if num is not None else raw)
        return Condition(key, "==", spec)
    if isinstance(spec, (bool, int, float)):
        return Condition(key, "==", spec)
    raise ValueError(
        f"{where}: {key}: {spec!r} is not a condition; use a value (equality) or a string such as "
        f"'<= 0', '> 0.5', '!= ds_cim2' (operators: {' '.join(_OPS)})"
    )


def claim_problems(claim: Claim) -> list[str]:
    """What is wrong with ``claim``'s v2 fields (empty when nothing)."""
    problems = []
    name = f"claim {claim.metric!r} ({claim.experiment})"
    if claim.direction not in (None, *DIRECTIONS):
        problems.append(f"{name}: direction {claim.direction!r}: valid are 'higher', 'lower' or None")
    for attr in ("tolerance", "abs_tolerance"):
        v = getattr(claim, attr)
        if _number(v) is None or v < 0:
            problems.append(f"{name}: {attr} {v!r} must be a number >= 0")
    if claim.baseline is not None:
        if _number(claim.baseline) is None:
            problems.append(f"{name}: baseline {claim.baseline!r} must be a number or None")
        elif claim.direction is None:
            problems.append(f"{name}: baseline needs a direction ('higher' or 'lower')")
    for key, spec in dict(claim.at).items():
        try:
            parse_condition(key, spec, f"{name} at")
        except ValueError as exc:
            problems.append(str(exc))
    return problems


@dataclass
class Judgement:
    """One claim's verdict over a set of runs, with the run that decided it."""

    kind: str
    plugin: str
    claim: Claim
    verdict: str
    measured: float | None = None
    run_id: str = ""
    matching: int = 0  # runs meeting plugin, when and at, with the metric logged
    in_setting: int = 0  # runs meeting plugin, when and the param/tag conditions of at
    comparable: int = 0  # of those, on the paper's workload (all, when the claim names none)
    indicative: str = ""  # for NOT_COMPARABLE: the verdict the numbers would get
    detail: str = ""
    conditions: list[Condition] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        c = self.claim
        return {
            "kind": self.kind,
            "plugin": self.plugin,
            "metric": c.metric,
            "claimed": c.value,
            "unit": c.unit,
            "paper_experiment": c.experiment,
            "conditions": ", ".join(describe_conditions(c, self.kind)),
            "measured": self.measured,
            "verdict": self.verdict,
            "indicative": self.indicative,
            "runs": self.matching,
            "runs_in_setting": self.in_setting,
            "run_id": self.run_id,
            "detail": self.detail,
        }


def claim_conditions(claim: Claim, kind: str) -> list[Condition]:
    """``when`` (as params of the claim's plugin kind) and ``at``, as conditions."""
    out = [Condition(f"{kind}.{k}", "==", v) for k, v in dict(claim.when).items()]
    out += [parse_condition(k, v) for k, v in dict(claim.at).items()]
    return out


def describe_conditions(claim: Claim, kind: str) -> list[str]:
    return [str(c) for c in claim_conditions(claim, kind)]


def _tolerance(claim: Claim) -> float:
    return max(claim.tolerance * abs(claim.value), claim.abs_tolerance)


def verdict_of(claim: Claim, measured: float) -> tuple[str, str]:
    """The verdict ``measured`` earns against ``claim``, with a short reason."""
    v, tol = claim.value, _tolerance(claim)
    gap = f"{measured:.4g} vs claimed {v:.4g} {claim.unit} (tolerance {tol:.3g})"
    if claim.direction == "higher":
        if measured >= v - tol:
            return REPRODUCED, gap + (", exceeds it" if measured > v + tol else "")
        if claim.baseline is not None and measured > claim.baseline:
            return SMALLER_EFFECT, gap + f"; better than the no-effect {claim.baseline:g}"
        return NOT_REPRODUCED, gap
    if claim.direction == "lower":
        if measured <= v + tol:
            return REPRODUCED, gap + (", better than claimed" if measured < v - tol else "")
        if claim.baseline is not None and measured < claim.baseline:
            return SMALLER_EFFECT, gap + f"; better than the no-effect {claim.baseline:g}"
        return NOT_REPRODUCED, gap
    return (REPRODUCED if abs(measured - v) <= tol else NOT_REPRODUCED), gap


def _best(claim: Claim, runs: Sequence[RunLike]) -> RunLike:
    key = lambda r: r.metrics[claim.metric]  # noqa: E731
    if claim.direction == "higher":
        return max(runs, key=key)
    if claim.direction == "lower":
        return min(runs, key=key)
    return min(runs, key=lambda r: abs(r.metrics[claim.metric] - claim.value))


def judge(claim: Claim, kind: str, plugin: str, runs: Iterable[RunLike]) -> Judgement:
    """Judge ``claim`` of plugin ``kind``/``plugin`` on ``runs`` (see the module docstring).

    Runs in the claim's setting (its plugin, ``when`` and param/tag conditions) that
    logged the metric are the evidence; the metric bounds of ``at`` then pick the
    runs that count. Setting runs that all miss a bound ("246x *at no loss*" when every
    run lost accuracy) make the claim not reproduced, not unmeasured.
    """
    conditions = claim_conditions(claim, kind)
    setting = [c for c in conditions if not c.is_metric]
    bounds = [c for c in conditions if c.is_metric]
    in_setting = [
        r
        for r in runs
        if r.status == "FINISHED"
        and r.params.get(kind) == plugin
        and _number(r.metrics.get(claim.metric)) is not None
        and all(c.holds(r) for c in setting)
    ]
    matching = [r for r in in_setting if all(c.holds(r) for c in bounds)]
    j = Judgement(kind, plugin, claim, NOT_MEASURED, matching=len(matching), conditions=conditions)
    j.in_setting = len(in_setting)
    if not in_setting:
        where = "; ".join(str(c) for c in setting) or "no conditions"
        j.detail = f"no FINISHED run of {kind} {plugin!r} logs {claim.metric} with {where}"
        return j
    on_workload = lambda r: claim.workload is None or r.params.get("workload") == claim.workload  # noqa: E731
    comparable = [r for r in matching if on_workload(r)]
    j.comparable = len(comparable)
    any_comparable = any(on_workload(r) for r in in_setting)
    pool = comparable if any_comparable else matching
    if pool:
        best = _best(claim, pool)
        j.measured, j.run_id = float(best.metrics[claim.metric]), best.run_id
        verdict, reason = verdict_of(claim, j.measured)
        picked = {"higher": "highest", "lower": "lowest"}.get(claim.direction or "", "closest")
        reason = f"{picked} of {len(pool)} matching run(s): {reason}"
    else:
        candidates = [r for r in in_setting if on_workload(r)] if any_comparable else in_setting
        verdict = NOT_REPRODUCED
        missed = "; ".join(
            f"{c} (closest: {fmt_value(_closest(c, candidates))})" for c in bounds
        )
        reason = f"none of {len(candidates)} run(s) in the claim's setting meets {missed}"
    if any_comparable:
        j.verdict, j.detail = verdict, reason
    else:
        used = sorted({r.params.get("workload", "?") for r in in_setting})
        j.verdict, j.indicative = NOT_COMPARABLE, verdict
        j.detail = f"paper's workload {claim.workload}, runs used {', '.join(used)}; would be '{verdict}': {reason}"
    return j


def _closest(cond: Condition, runs: Sequence[RunLike]) -> float | None:
    """The value among ``runs`` nearest to satisfying ``cond`` (for saying how far off they were)."""
    values = [v for v in (_number(cond.lookup(r)) for r in runs) if v is not None]
    if not values:
        return None
    target = _number(cond.value)
    if target is None:
        return values[0]
    return min(values, key=lambda v: abs(v - target))


def fmt_value(v: float | None) -> str:
    return "none" if v is None else f"{v:.4g}"


def judge_runs(runs: Sequence[RunLike], claims_of=None, plugins: Iterable[str] | None = None) -> list[Judgement]:
    """Judge every claim of every plugin the runs used (or only ``plugins``).

    ``claims_of(kind, name)`` returns a plugin's claims; by default the installed
    plugins' specs (a plugin that is no longer installed contributes none).
    """
    if claims_of is None:
        claims_of = _installed_claims
    used = sorted({(k, r.params[k]) for r in runs for k in KINDS if r.params.get(k)})
    wanted = set(plugins) if plugins is not None else None
    out = []
    for kind, name in used:
        if wanted is not None and name not in wanted:
            continue
        for claim in claims_of(kind, name):
            out.append(judge(claim, kind, name, runs))
    return out


def _installed_claims(kind: str, name: str) -> tuple[Claim, ...]:
    from harness.host import get_host

    try:
        return tuple(get_host().info(kind, name).spec.claims)
    except Exception:  # not installed (any more) or broken: nothing to judge
        return ()
