"""A sweep's summary: the printed table and the parent run's ``sweep_summary.{md,json}``.

Plain formatting over rows (one per job); the hook gathers them and the tracker
stores them, so nothing here touches MLflow or Ray.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

__all__ = ["Row", "command_line", "headline_summary", "key_metrics", "markdown", "text", "to_json", "user_overrides"]

SKIPPED = "SKIPPED"


@dataclass
class Row:
    """One job of the sweep."""

    idx: int
    overrides: List[str]
    status: str = ""  # FINISHED, FAILED or SKIPPED once known
    run_id: str = ""
    note: str = ""
    config_hash: str = ""
    metrics: Dict[str, float] = field(default_factory=dict)


def user_overrides(overrides: Sequence[str]) -> List[str]:
    """Overrides without ``hydra.*`` ones, as Hydra shows them."""
    return [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]


def command_line(task_overrides: Sequence[str], hydra_overrides: Sequence[str]) -> str:
    """The sweep's command line as typed, swept arguments included."""
    args = [*task_overrides, *(o for o in hydra_overrides if not o.startswith("hydra.mode="))]
    return " ".join(["harness", "run", "-m", *(shlex.quote(str(a)) for a in args)])


def _common(rows: Sequence[Row]) -> List[str]:
    lists = [user_overrides(r.overrides) for r in rows]
    return [o for o in lists[0] if all(o in other for other in lists[1:])] if lists else []


def _own(row: Row, common: Sequence[str]) -> str:
    return " ".join(o for o in user_overrides(row.overrides) if o not in common) or "-"


def key_metrics(rows: Sequence[Row], chosen: Sequence[str] = (), headline: Sequence[str] = ()) -> List[str]:
    """``chosen``; else the ``headline`` metrics the plugins declare (those some job
    logged, in the order given), then other metrics that differ between jobs, up
    to four in all (without headline metrics: four, varying ones first)."""
    if chosen:
        return list(chosen)
    logged = {name for row in rows for name in row.metrics}
    keys = [h for i, h in enumerate(headline) if h in logged and h not in headline[:i]]
    values: Dict[str, set] = {}
    for row in rows:
        for name, value in row.metrics.items():
            if name in keys or name.endswith(("_exact", "_se")) or name.startswith("trace/"):
                continue
            values.setdefault(name, set()).add(value)
    others = sorted(values, key=lambda n: (len(values[n]) < 2, n))
    if keys:  # after the headline, only metrics that vary
        others = [n for n in others if len(values[n]) > 1]
    return keys + others[: max(4 - len(keys), 2 if not keys else 0)]


def headline_summary(rows: Sequence[Row], headline: Sequence[str]) -> Dict[str, float]:
    """``METRIC/max``, ``METRIC/min`` and ``METRIC/mean`` of each headline metric over
    the jobs that finished (now or in an earlier run of the sweep): the parent run's metrics."""
    out: Dict[str, float] = {}
    done = [r for r in rows if r.status in ("FINISHED", SKIPPED) and r.run_id]
    seen = set()
    for name in headline:
        if name in seen:
            continue
        seen.add(name)
        vals = [float(r.metrics[name]) for r in done if name in r.metrics]
        if vals:
            out.update({f"{name}/max": max(vals), f"{name}/min": min(vals), f"{name}/mean": sum(vals) / len(vals)})
    return out


def counts(rows: Sequence[Row]) -> Dict[str, int]:
    return {s: sum(1 for r in rows if r.status == s) for s in ("FINISHED", "FAILED", SKIPPED)}


def to_json(rows: Sequence[Row]) -> str:
    common = _common(rows)
    return json.dumps(
        [
            {
                "job": r.idx,
                "overrides": " ".join(user_overrides(r.overrides)),
                "job_overrides": _own(r, common),
                "status": r.status or "NOT RUN",
                "note": r.note,
                "run_id": r.run_id,
                "config_hash": r.config_hash,
                "metrics": r.metrics,
            }
            for r in rows
        ],
        indent=2,
        default=str,
    )


def markdown(
    rows: Sequence[Row], sweep_id: str, command: str, keys: Sequence[str], stats: Dict[str, float] | None = None
) -> str:
    """The parent run's ``sweep_summary.md``: the command, the headline metrics'
    ``stats`` (:func:`headline_summary`), then one row per job."""
    common = _common(rows)
    header = ["job", "overrides", "status", "run_id", *keys]
    lines = [f"Sweep {sweep_id}: `{command}`", ""]
    if stats:
        names = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in stats))
        lines += ["| headline metric | max | min | mean |", "|---|---|---|---|"]
        for n in names:
            lines.append(f"| {n} | " + " | ".join(f"{stats[f'{n}/{s}']:.6g}" for s in ("max", "min", "mean")) + " |")
        lines.append("")
    if common:
        lines += [f"Common to every job: `{' '.join(common)}`", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r.idx), _own(r, common), r.status or "NOT RUN", r.run_id or "-"]
        cells += [f"{r.metrics[k]:.6g}" if k in r.metrics else "" for k in keys]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def text(rows: Sequence[Row], keys: Sequence[str], timings: Dict[str, float], where: str) -> str:
    """The table printed at the end of a sweep, then one line of counts."""
    common = _common(rows)
    own = [_own(r, common) for r in rows]
    width = max([len(o) for o in own] + [9])
    lines = [f"Sweep over: {' '.join(common)}"] if common else []
    lines.append(f"{'#':>4}  {'overrides':<{width}}  {'status':<8}  {'run id':<32}  " + "  ".join(f"{k:>16}" for k in keys))
    for r, ov in zip(rows, own):
        vals = "  ".join(f"{r.metrics[k]:>16.6g}" if k in r.metrics else " " * 16 for k in keys)
        lines.append(f"{r.idx:>4}  {ov:<{width}}  {r.status or 'NOT RUN':<8}  {r.run_id or '-':<32}  {vals}".rstrip())
        if r.note and (r.status == "FAILED" or r.note.startswith("same config")):
            lines.append(f"      {r.note}")
    c = counts(rows)
    lines.append(
        f"Sweep {len(rows)} jobs: {c['FINISHED']} finished, {c['FAILED']} failed, {c[SKIPPED]} skipped "
        f"(Ray start-up {timings.get('ray_startup_s', 0):.1f} s, jobs {timings.get('jobs_wall_s', 0):.1f} s); {where}"
    )
    return "\n".join(lines)
