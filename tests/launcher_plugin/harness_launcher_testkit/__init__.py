"""``spin``: a test/benchmark-only workload for the Ray launcher.

Not a built-in plugin: it is registered through the dist-info folder next to it,
which is put on ``PYTHONPATH`` only by the launcher tests and benchmark (so other
test suites never see it). A job can

* leave a marker file ``<marker_dir>/<seed>-<pid>`` holding the Ray node id when it
  starts, so a test can tell which node runs it and kill that node mid-job;
* ``sleep`` seconds, to be slow without using CPU;
* spin a numba kernel for ``iterations`` million steps: fixed CPU work (about
  1.5 ns a step here), the same on every launcher, for efficiency measurements;
* ``fail=true``: raise in ``build``, like a broken plugin;
* ``incompatible=true``: refuse the combination when its config is built
  (:class:`~harness.specs.CapabilityError`), like plugins that cannot work together.

``nap`` is a test-only technique whose result is cached (``cache_result``): it
sleeps ``seconds`` and returns the subject unchanged, so a sweep over accelerators
shows when a job waits for another's technique result.

Metrics say how the kernel was obtained in this job (``spin/kernel_source``:
0 already compiled in this worker process, 1 loaded from the NUMBA_CACHE_DIR
disk cache, 2 compiled) and what its first call cost (``spin/kernel_first_call_s``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numba
import numpy as np

from harness import hookimpl
from harness.optrace import Op, OpTrace
from harness.specs import CapabilityError, TechniqueSpec, WorkloadSpec


@numba.njit(cache=True)
def lcg_spin(steps: int, state: int) -> int:
    # xorshift steps depend on each other and are not affine, so LLVM can neither
    # vectorize nor fold them (it does fold an LCG): a fixed amount of CPU work.
    x = np.int64(state) | np.int64(1)
    for _ in range(steps):
        x ^= x << np.int64(13)
        x ^= x >> np.int64(7)
        x ^= x << np.int64(17)
    return x


@dataclass
class SpinConfig:
    """How slow and how busy the job is."""

    iterations: float = 0.0  # millions of kernel steps
    sleep: float = 0.0
    marker_dir: str = ""
    fail: bool = False
    incompatible: bool = False
    exit_on_seed: int = -1  # the job of this seed ends its worker process (os._exit)

    def __post_init__(self):
        if self.incompatible:
            raise CapabilityError("spin (incompatible=true) cannot run on this accelerator: it needs a capability none provides")


@dataclass
class Spun:
    value: int
    kernel_source: int
    first_call_s: float
    cpu_s: float


class Spin:
    def __init__(self, config: SpinConfig):
        if config.iterations < 0 or config.sleep < 0:
            raise ValueError(f"spin: iterations={config.iterations} and sleep={config.sleep} must be >= 0")
        self.config = config

    def build(self, ctx) -> Spun:
        c = self.config
        if c.marker_dir:
            os.makedirs(c.marker_dir, exist_ok=True)
            ray = sys.modules.get("ray")
            node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else ""
            with open(os.path.join(c.marker_dir, f"{ctx.seed}-{os.getpid()}"), "w") as f:
                f.write(node)
        if c.fail:
            raise RuntimeError("spin: failing on purpose (fail=true)")
        if ctx.seed == c.exit_on_seed:
            os._exit(1)
        cpu0 = time.process_time()
        in_memory = bool(lcg_spin.signatures)
        hits = lcg_spin.stats.cache_hits.copy() if hasattr(lcg_spin.stats.cache_hits, "copy") else dict(lcg_spin.stats.cache_hits)
        t0 = time.perf_counter()
        lcg_spin(1, ctx.seed + 1)
        first_call = time.perf_counter() - t0
        if in_memory:
            source = 0
        else:
            source = 1 if sum(lcg_spin.stats.cache_hits.values()) > sum(hits.values()) else 2
        if c.sleep:
            time.sleep(c.sleep)
        value = int(lcg_spin(int(c.iterations * 1_000_000), ctx.seed + 1))
        return Spun(value=value, kernel_source=source, first_call_s=first_call, cpu_s=time.process_time() - cpu0)

    def evaluate(self, subject: Spun, backend, ctx) -> dict[str, float]:
        return {
            "spin/checksum": float(subject.value % 1_000_003),
            "spin/kernel_source": float(subject.kernel_source),
            "spin/kernel_first_call_s": subject.first_call_s,
            "spin/cpu_s": subject.cpu_s,
            # The thread count numba got in this worker (the launcher sets it per job).
            "spin/numba_threads": float(numba.config.NUMBA_NUM_THREADS),
        }

    def op_trace(self, subject: Spun) -> OpTrace:
        return OpTrace((Op("spin", m=1, k=1, n=1),))


@hookimpl
def harness_workloads():
    yield WorkloadSpec(
        name="spin",
        summary="Test-only: fixed CPU work in a numba kernel, optional sleep, marker files, failure",
        config=SpinConfig,
        factory=Spin,
    )


@dataclass
class NapConfig:
    """How long the technique takes."""

    seconds: float = 1.0


class Nap:
    def __init__(self, config: NapConfig):
        self.config = config

    def apply(self, subject, workload, ctx):
        time.sleep(self.config.seconds)
        return subject


@hookimpl
def harness_techniques():
    yield TechniqueSpec(name="nap", summary="Test-only: sleep, then leave the subject as it is (result cached)",
                        config=NapConfig, factory=Nap, smoke_workload="spin")
