"""Two sets of runs, metric by metric: what got better, what got worse, what is noise.

``harness compare`` (:mod:`harness.compare_cli`) reads two sets of runs (two sweeps,
two experiments, or the same sweep run at two git commits) and hands them here as
:class:`~harness.tracking_read.RunView` lists; this module is plain Python.

* **Matching.** Runs are grouped by their config hash *without the seed* (tag
  ``harness.config_hash_noseed``, or computed from the params for runs recorded
  before it existed): the runs of one config that differ only in their seed are
  its repeats. Configs are matched across the two sets by that hash.
* **Ratio.** ``after / before`` of the medians over the seeds.
* **Verdict.** ``unchanged`` when the medians are within ``factor`` of each other
  (``asv compare --factor``); beyond it, ``noise`` when both sides have two or more
  seeds and their ranges (min..max) overlap; otherwise ``better`` or ``worse`` by the
  metric's direction, or ``changed`` for a metric with none. With one seed on a
  side there is no noise estimate: the factor alone decides, and the verdict says
  ``(1 seed)``. When nothing changed, the ranges of n and m seeds fall apart in
  2 / C(n+m, n) of cases (0.8% at 5 seeds each), so a flag needs both the factor
  and the separation.
* **Direction** comes from the metric's name (units are in the names, see the
  README), by the first rule of :data:`DIRECTION_RULES` that matches its last part;
  ``--higher GLOB`` / ``--lower GLOB`` add or override. A metric with no direction
  is shown but never a regression.

A ``worse`` verdict is a regression: the command exits 1.
"""

from __future__ import annotations

import fnmatch
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from harness.tracking import NOSEED_TAG, seedless_config_hash

__all__ = [
    "DIRECTION_RULES",
    "Config",
    "Row",
    "compare",
    "direction",
    "format_table",
    "group_runs",
    "judge",
]

HIGHER, LOWER = "higher", "lower"

#: ``(regex on the metric name's last part, direction)``, first match wins.
DIRECTION_RULES: tuple[tuple[str, str], ...] = (
    (r"drop_points$", LOWER),  # technique/accuracy_drop_points: a loss of accuracy
    (r"_per_(cpu_)?(s|second|ms|us|w|mm2|j)$", HIGHER),  # rates and efficiencies
    (r"(^|_)(speedup|throughput|accuracy|sqnr_db|compression_ratio|tops)(_|$)", HIGHER),
    (r"(^|_)(s|seconds|ms|us|ns|time|pj|nj|uj|j|energy|latency)$", LOWER),  # times and energies
    (r"(^|_)(rmse|nmse|mse|loss|error|diff)(_|$)", LOWER),
)


def direction(metric: str, higher: Sequence[str] = (), lower: Sequence[str] = ()) -> str | None:
    """``"higher"``, ``"lower"`` (is better) or ``None`` for ``metric``.

    ``higher`` / ``lower`` are globs on the full name (``perf/*_s``) that win over the rules.
    """
    for pattern in lower:
        if fnmatch.fnmatchcase(metric, pattern):
            return LOWER
    for pattern in higher:
        if fnmatch.fnmatchcase(metric, pattern):
            return HIGHER
    last = metric.rsplit("/", 1)[-1]
    for rule, which in DIRECTION_RULES:
        if re.search(rule, last):
            return which
    return None


@dataclass
class Config:
    """The runs of one config (all seeds) in one set."""

    key: str  # config hash without the seed
    label: str
    seeds: list[str] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)  # metric -> one value per run


_SEED_SUFFIX = re.compile(r"\s+s\d+(\s+#\d+)?$")


def _label(run) -> str:
    """A run's name without its seed (``kernel=col2im none on exact s3`` -> ``... exact``)."""
    return _SEED_SUFFIX.sub("", run.name or "") or run.run_id[:8]


def group_runs(runs: Iterable) -> dict[str, Config]:
    """``{config hash without seed: Config}`` of FINISHED runs (sweep parents left out)."""
    out: dict[str, Config] = {}
    for run in runs:
        if run.status != "FINISHED" or run.tags.get("harness.sweep_parent") == "true":
            continue
        key = run.tags.get(NOSEED_TAG) or seedless_config_hash(run.params)
        config = out.setdefault(key, Config(key, _label(run)))
        config.seeds.append(run.params.get("seed", run.tags.get("harness.seed", "?")))
        for metric, value in run.metrics.items():
            config.values.setdefault(metric, []).append(float(value))
    return out


@dataclass
class Row:
    config: str
    metric: str
    before: float
    after: float
    ratio: float | None
    n_before: int
    n_after: int
    verdict: str
    direction: str | None


def _spread(a: float, b: float) -> float:
    """max/min of the magnitudes (inf when one is 0 or the signs differ)."""
    if a == b:
        return 1.0
    if a == 0 or b == 0 or (a < 0) != (b < 0):
        return math.inf
    a, b = abs(a), abs(b)
    return max(a, b) / min(a, b)


def judge(before: Sequence[float], after: Sequence[float], factor: float, which: str | None) -> tuple[float, float, str]:
    """``(median before, median after, verdict)`` (see the module docstring)."""
    mb, ma = statistics.median(before), statistics.median(after)
    if _spread(mb, ma) <= factor:
        return mb, ma, "unchanged"
    one_seed = min(len(before), len(after)) < 2
    if not one_seed and max(min(before), min(after)) <= min(max(before), max(after)):
        return mb, ma, "noise"
    if which is None:
        verdict = "changed"
    else:
        verdict = "better" if (ma > mb) == (which == HIGHER) else "worse"
    return mb, ma, verdict + (" (1 seed)" if one_seed else "")


def compare(
    before: Mapping[str, Config],
    after: Mapping[str, Config],
    factor: float = 1.1,
    metrics: Sequence[str] = (),
    higher: Sequence[str] = (),
    lower: Sequence[str] = (),
) -> list[Row]:
    """One row per metric of each config both sets have (``metrics``: globs to keep)."""
    rows = []
    for key in sorted(set(before) & set(after), key=lambda k: (before[k].label, k)):
        b, a = before[key], after[key]
        for metric in sorted(set(b.values) & set(a.values)):
            if metrics and not any(fnmatch.fnmatchcase(metric, g) for g in metrics):
                continue
            which = direction(metric, higher, lower)
            mb, ma, verdict = judge(b.values[metric], a.values[metric], factor, which)
            ratio = ma / mb if mb else None
            rows.append(Row(b.label, metric, mb, ma, ratio, len(b.values[metric]), len(a.values[metric]), verdict, which))
    return rows


def _num(x: float) -> str:
    return f"{x:.4g}"


def format_table(rows: Sequence[Row], only_changed: bool = False) -> str:
    """A plain-text table: config, metric, before, after, ratio, seeds, verdict."""
    shown = [r for r in rows if not only_changed or r.verdict != "unchanged"]
    header = ("config", "metric", "before", "after", "ratio", "seeds", "verdict")
    cells = [
        (
            r.config,
            r.metric + ("" if r.direction else " (?)"),
            _num(r.before),
            _num(r.after),
            f"{r.ratio:.3g}x" if r.ratio is not None else "-",
            f"{r.n_before}/{r.n_after}",
            r.verdict,
        )
        for r in shown
    ]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]
    right = {2, 3, 4, 5}

    def line(values):
        return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out)
