"""Where LeNet-5 training time goes in harness.nn: CPU microseconds per step, per layer and kernel.

The same training as ``bench_lenet5_training.py`` (3,500 MNIST-5k images, batch 32,
SGD with momentum, 2 epochs after a short warm-up), with every layer's forward and
backward, every kernel of :mod:`harness.nn.kernels`, the forward GEMMs
(``layers.linear``), the optimizer step and the loss wrapped in timers. Times are
CPU seconds of this thread (``time.thread_time``), so other processes on a shared
machine inflate them much less than wall-clock time; a kernel's line is included in
its layer's (indented lines are parts). Kernel lines carry the channel count of
their operand (``im2col 1`` is conv1's, ``im2col 6`` conv2's). The timers cost about
a microsecond per call.

    .venv/bin/python benchmarks/profile_lenet5_training.py
    PYTHONPATH=/tmp/base .venv/bin/python benchmarks/profile_lenet5_training.py   # another tree

Nothing is written.
"""

from __future__ import annotations

import collections
import os
import sys
import time

if os.environ.get("PYTHONPATH"):  # another tree: the editable install's finder would shadow it
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in (getattr(f, "__module__", "") or "")]

import numpy as np  # noqa: E402

import harness  # noqa: E402
from harness.data import load_mnist5k  # noqa: E402
from harness.nn import TrainConfig, fit, lenet5  # noqa: E402
from harness.nn import kernels, layers, optim  # noqa: E402
from harness.nn import train as train_module  # noqa: E402

clock = time.thread_time
spent: dict[str, float] = collections.defaultdict(float)

KERNELS = ("im2col", "col2im", "maxpool_forward", "maxpool_backward", "relu_forward", "relu_backward",
           "add_bias", "column_sums")


def timed_method(cls, name: str) -> None:
    orig = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        t = clock()
        out = orig(self, *args, **kwargs)
        spent[f"{self.name}.{name}"] += clock() - t
        return out

    setattr(cls, name, wrapper)


def timed_function(module, name: str, label) -> None:
    if not hasattr(module, name):  # an older tree may not have this kernel
        return
    orig = getattr(module, name)

    def wrapper(*args, **kwargs):
        t = clock()
        out = orig(*args, **kwargs)
        spent[label(args)] += clock() - t
        return out

    setattr(module, name, wrapper)


def channels(kernel: str, args) -> str:
    shape = args[1] if kernel == "col2im" else getattr(args[0], "shape", ())
    return f"  {kernel} {shape[-1]}" if len(shape) else f"  {kernel}"


def main() -> None:
    data = load_mnist5k(seed=0)
    x, y = data.x_train, data.y_train
    model = lenet5(np.random.default_rng(0))
    cfg = dict(batch_size=32, lr=0.03, schedule="constant", weight_decay=5e-4)
    fit(model, (x[:128], y[:128]), None, TrainConfig(epochs=1, **cfg), seed=0)  # compile numba kernels
    for cls in {type(layer) for layer in model.stack}:
        timed_method(cls, "forward")
        timed_method(cls, "backward")
    timed_function(layers, "linear", lambda a: "  forward GEMM (linear)")
    for name in KERNELS:
        timed_function(kernels, name, lambda a, name=name: channels(name, a))
    timed_function(layers.np, "pad", lambda a: "  np.pad")
    timed_function(optim.SGD, "step", lambda a: "optimizer (SGD step)")
    timed_function(train_module, "softmax_cross_entropy", lambda a: "loss")

    epochs = 2
    start, cpu = time.perf_counter(), clock()
    fit(model, (x, y), None, TrainConfig(epochs=epochs, **cfg), seed=0)
    wall, cpu = time.perf_counter() - start, clock() - cpu
    steps = epochs * -(-len(x) // cfg["batch_size"])
    top = sum(v for k, v in spent.items() if not k.startswith("  "))
    spent["rest (fit loop: batching, masks, python)"] = cpu - top
    print(f"harness from {harness.__file__}")
    print(f"{steps} steps: {cpu / steps * 1e6:.0f} CPU us/step ({len(x) * epochs / cpu:.0f} samples per CPU second), "
          f"wall {wall:.2f} s")
    for key, value in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"{key:44s} {value / steps * 1e6:8.1f} us/step {100 * value / cpu:5.1f}%")


if __name__ == "__main__":
    main()
