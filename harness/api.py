"""What the objects built by plugin factories provide, and the context they log to.

One experiment composes a workload, a technique and an accelerator (see the
README and ``docs/plugin_guide.md``). The runner drives them in this order::

    subject = workload.build(ctx)                      # e.g. train or load a base model
    subject = technique.apply(subject, workload, ctx)  # compress it, or train it differently
    numerics = bind(accelerator.numerics or EXACT, seed)  # per-op seeds, cached weight preparation
    quality = workload.evaluate(subject, numerics, ctx)
    observed = numerics.observe()                        # optional: what the numerics measured themselves
    exact   = workload.evaluate(subject, bind(EXACT, seed), ctx)  # same subject, reference numerics
    trace   = workload.op_trace(subject)
    cost    = accelerator.cost(trace, ctx)

The *subject* is whatever the workload builds: a trained model with its data, a
set of GEMM operands, a serving trace. The host never looks inside it; a
technique checks that it got a subject it understands and raises
:class:`IncompatibleError` otherwise, so a sweep over incompatible pairs fails
with a message naming both instead of an AttributeError.

Plugins log through :class:`RunContext` only. They never import the tracker, the
launcher or the CLI: the context accumulates a :class:`~harness.record.Record`
that the runner hands to tracking, which is what lets a Ray job return its record
to the driver and lets the same plugin run under any launcher.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from harness.numerics.backend import MatmulBackend
from harness.optrace import OpTrace
from harness.record import Record

__all__ = [
    "Accelerator",
    "IncompatibleError",
    "RunContext",
    "Technique",
    "Workload",
]

log = logging.getLogger("harness")


class IncompatibleError(TypeError):
    """A technique or accelerator cannot handle the subject it was given."""


@runtime_checkable
class Workload(Protocol):
    """Built by a :class:`~harness.specs.WorkloadSpec` factory."""

    def build(self, ctx: "RunContext") -> Any:
        """Return the subject (for example a trained base model and its data)."""

    def evaluate(self, subject: Any, backend: MatmulBackend, ctx: "RunContext") -> dict[str, float]:
        """Task quality of ``subject`` with every GEMM through ``backend``.

        Call ``backend.matmul(a, b, GemmCall(op=..., ...))`` for every GEMM (see
        :mod:`harness.numerics.backend`); the backend arrives bound to the run.

        Keys without a ``/`` are filed under ``eval/`` (``accuracy`` becomes
        ``eval/accuracy``); keys with one are used as given (``numerics/rmse``).
        The runner calls this once with the accelerator's numerics and once with
        the exact backend, whose results get the suffix ``_exact``.
        """

    def op_trace(self, subject: Any) -> OpTrace:
        """The ops of one inference of one sample (a serving workload: one decode
        iteration of its batch): shapes, densities, bit widths, memory traffic, and
        weight values where the workload has them."""


@runtime_checkable
class Technique(Protocol):
    """Built by a :class:`~harness.specs.TechniqueSpec` factory."""

    def apply(self, subject: Any, workload: Workload, ctx: "RunContext") -> Any:
        """Return the transformed subject (the input may be reused)."""


@runtime_checkable
class Accelerator(Protocol):
    """Built by an :class:`~harness.specs.AcceleratorSpec` factory.

    ``numerics`` is a matmul backend, or ``None`` for a pure cost model (the
    workload is then evaluated with exact numerics only).
    """

    numerics: MatmulBackend | None

    def cost(self, trace: OpTrace, ctx: "RunContext") -> dict[str, float]:
        """Cost of running ``trace``; keys are filed under ``accelerator/``."""


def _check_metric(name: str, value: Any) -> float:
    if "/" not in name:
        raise ValueError(f"metric {name!r} needs a stage prefix such as 'technique/{name}'")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r} must be a number, got {value!r}") from None
    return number


class RunContext:
    """Everything a plugin may use while a run is under way.

    ``seed`` and ``rng`` make the run reproducible: plugins draw all randomness
    from ``rng`` (or from seeds derived with :meth:`child_seed`). ``cache_dir``
    is where plugins keep things worth reusing across runs (trained base models),
    keyed by what produced them. Metrics must carry a stage prefix
    (``technique/``, ``eval/``, ``numerics/``, ``accelerator/``, ``train/``);
    metrics under ``perf/`` are wall-clock measurements and are the only ones
    exempt from "same config and seed, same metrics".
    """

    def __init__(self, seed: int, cache_dir: str | os.PathLike, record: Record | None = None):
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.cache_dir = Path(cache_dir)
        self.record = record if record is not None else Record()

    # -- randomness ---------------------------------------------------------
    def child_seed(self, *keys: Any) -> int:
        """A seed derived from the run seed and ``keys``, stable across processes."""
        entropy = [self.seed] + [int.from_bytes(str(k).encode(), "little") % (2**63) for k in keys]
        return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)

    # -- metrics ------------------------------------------------------------
    def log_metric(self, name: str, value: float) -> None:
        """Record a final scalar (a later call with the same name replaces it)."""
        self.record.metrics[name] = _check_metric(name, value)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.log_metric(name, value)

    def log_series(self, name: str, values: Iterable[float], steps: Sequence[int] | None = None) -> None:
        """Record a curve (for example per-epoch loss); steps default to 0, 1, ..."""
        values = [_check_metric(name, v) for v in values]
        steps = list(range(len(values))) if steps is None else [int(s) for s in steps]
        if len(steps) != len(values):
            raise ValueError(f"series {name!r}: {len(steps)} steps for {len(values)} values")
        self.record.series[name] = list(zip(steps, values))

    def append_series(self, name: str, value: float, step: int | None = None) -> None:
        """Add one point to a curve, as training goes."""
        series = self.record.series.setdefault(name, [])
        series.append((len(series) if step is None else int(step), _check_metric(name, value)))

    # -- artifacts ----------------------------------------------------------
    def log_artifact(self, path: str, data: bytes | str) -> None:
        """File ``data`` under the run's artifacts at ``path`` (e.g. ``tables/x.csv``)."""
        self.record.artifacts[path] = data.encode() if isinstance(data, str) else bytes(data)

    def log_json(self, path: str, obj: Any) -> None:
        self.log_artifact(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default))

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """A table as ``tables/<name>.csv`` (columns in first-seen order)."""
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        self.log_artifact(f"tables/{name}.csv", buffer.getvalue())

    def log_figure(self, name: str, figure: Any) -> None:
        """A matplotlib figure as ``plots/<name>.png`` (closed afterwards)."""
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(figure)
        self.log_artifact(f"plots/{name}.png", buffer.getvalue())

    def set_tag(self, key: str, value: Any) -> None:
        self.record.tags[key] = str(value)

    # -- progress -----------------------------------------------------------
    def progress(self, message: str) -> None:
        """A line of progress for long steps (goes to the job's log)."""
        log.info(message)


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
