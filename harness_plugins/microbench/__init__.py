"""``microbench``: timings of the harness's own kernels, as ordinary runs.

The performance suite runs as harness experiments (``harness run -m
+experiment=perf``), so its figures land in MLflow with their config hash, git
commit and seed, and ``harness compare`` judges two commits or two sweeps of them
like any other metric.

One run times one kernel (``kernel=``) of :mod:`harness.nn.kernels` (a numba loop)
next to its plain numpy twin, on operands drawn from the run's seed: the seed is
the repeat index. Each is called once to warm up (numba compiles on first use),
then ``calls`` times; the median per call is logged.

Times are **CPU seconds of the calling thread** (``time.thread_time``), not wall
time: the kernels are single-threaded, and on a shared machine the CPU time of a
call barely moves when other processes load it, while its wall time swings 2x.

Metrics (directions follow ``harness compare``'s naming convention):

* ``perf/cpu_s``: median CPU seconds of one kernel call (lower is better);
* ``perf/items_per_cpu_s``: elements the kernel produces or consumes per CPU second
  (higher is better);
* ``perf/reference_cpu_s`` and ``perf/speedup`` (reference / kernel, higher is better);
* ``numerics/max_abs_diff``: kernel against reference on the same operands (0: they agree).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from harness import hookimpl
from harness.optrace import Op, OpTrace
from harness.specs import WorkloadSpec
from harness.validation import valid, validate_config


def _col2im_case(rng: np.random.Generator, batch: int):
    # LeNet-5's second convolution, backward: 14x14x6 input, 5x5 kernel, stride 1.
    shape, kh, kw, stride = (batch, 14, 14, 6), 5, 5, 1
    cols = rng.standard_normal((batch * 10 * 10, kh * kw * 6)).astype(np.float32)
    return (cols, shape, kh, kw, stride), cols.size


def _maxpool_forward_case(rng: np.random.Generator, batch: int):
    # LeNet-5's first pooling: 28x28x6, 2x2 windows, stride 2.
    x = rng.standard_normal((batch, 28, 28, 6)).astype(np.float32)
    return (x, 2, 2), x.size


def _maxpool_backward_case(rng: np.random.Generator, batch: int):
    from harness.nn import kernels

    x = rng.standard_normal((batch, 28, 28, 6)).astype(np.float32)
    _, arg = kernels.maxpool_forward_reference(x, 2, 2)
    dy = rng.standard_normal(arg.shape).astype(np.float32)
    return (dy, arg, x.shape, 2, 2), dy.size


def _first(result: Any) -> np.ndarray:
    return np.asarray(result[0] if isinstance(result, tuple) else result)


#: kernel name -> (operands from (rng, batch), kernel, reference). The kernels are looked
#: up on the module at call time, so what is timed is whatever the code of the run defines.
KERNELS: dict[str, tuple[Callable, Callable, Callable]] = {
    "col2im": (
        _col2im_case,
        lambda *a: _kernels().col2im(*a),
        lambda *a: _kernels().col2im_reference(*a),
    ),
    "maxpool_forward": (
        _maxpool_forward_case,
        lambda *a: _kernels().maxpool_forward(*a),
        lambda *a: _kernels().maxpool_forward_reference(*a),
    ),
    "maxpool_backward": (
        _maxpool_backward_case,
        lambda *a: _kernels().maxpool_backward(*a),
        lambda *a: _kernels().maxpool_backward_reference(*a),
    ),
}


def _kernels():
    from harness.nn import kernels

    return kernels


@dataclass
class MicrobenchConfig:
    """Which kernel, on how many images per call, timed over how many calls."""

    kernel: str = field(default="col2im", metadata=valid(one_of=tuple(KERNELS)))
    batch: int = field(default=64, metadata=valid(ge=1, le=4096, why="images per call"))
    calls: int = field(default=25, metadata=valid(ge=1, le=10000))
    #: Calls of the numpy reference (it is timed for ``perf/speedup``); 0 skips timing it.
    reference_calls: int = field(default=5, metadata=valid(ge=0, le=10000))


@dataclass
class KernelTiming:
    """The subject: the operands and both outputs (for the agreement check)."""

    kernel: str
    items: int
    output: np.ndarray
    reference: np.ndarray


def _median_cpu_s(fn: Callable, args: tuple, calls: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(calls):
        start = time.thread_time()
        result = fn(*args)
        times.append(time.thread_time() - start)
    return float(np.median(times)), result


class Microbench:
    def __init__(self, config: MicrobenchConfig):
        validate_config(config, "workload", "microbench")
        self.config = config

    def build(self, ctx) -> KernelTiming:
        c = self.config
        make, kernel, reference = KERNELS[c.kernel]
        args, items = make(np.random.default_rng(ctx.child_seed("microbench", c.kernel)), c.batch)
        output = _first(kernel(*args))  # warm-up: numba compiles (or loads its cache) here
        ref = _first(reference(*args))
        cpu_s, _ = _median_cpu_s(kernel, args, c.calls)
        ctx.log_metric("perf/cpu_s", cpu_s)
        ctx.log_metric("perf/items_per_cpu_s", items / cpu_s if cpu_s > 0 else 0.0)
        if c.reference_calls:
            ref_s, _ = _median_cpu_s(reference, args, c.reference_calls)
            ctx.log_metric("perf/reference_cpu_s", ref_s)
            ctx.log_metric("perf/speedup", ref_s / cpu_s if cpu_s > 0 else 0.0)
        return KernelTiming(c.kernel, items, output, ref)

    def evaluate(self, subject: KernelTiming, backend, ctx) -> dict[str, float]:
        diff = np.abs(subject.output.astype(np.float64) - subject.reference.astype(np.float64))
        return {"numerics/max_abs_diff": float(diff.max()) if diff.size else 0.0}

    def op_trace(self, subject: KernelTiming) -> OpTrace:
        return OpTrace((Op(subject.kernel, kind="elementwise", elements=subject.items),))


@hookimpl
def harness_workloads():
    yield WorkloadSpec(
        name="microbench",
        summary="Timings of the harness's numba kernels next to their numpy twins (the perf suite)",
        config=MicrobenchConfig,
        factory=Microbench,
        smoke={"batch": 2, "calls": 2, "reference_calls": 1},
        headline=("perf/cpu_s", "perf/speedup"),
    )
