"""Contract v2 of the numerics: per-op context, the per-weight offline step, run seeds,
epilogues, technique-set precision, the op trace v2, and v1 backends still running."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from harness.api import RunContext
from harness.data import Splits
from harness.host import Host
from harness.nn import ModelSubject, TrainConfig, lenet5, mlp
from harness.numerics import EXACT, ContractWarning, GemmCall, bind, weight_cache
from harness.optrace import Op, OpTrace, WeightValues
from harness.runner import run_experiment
from harness.specs import AcceleratorSpec
from harness_plugins.ds_cim import DsCimAccelerator, DsCimConfig
from harness_plugins.ds_cim.cost import MacroParams, cost_of_trace


def small_subject(model="mlp", n=60, seed=0) -> ModelSubject:
    rng = np.random.default_rng(seed)
    if model == "mlp":
        net = mlp([16, 12, 10, 4], rng)
        x = rng.standard_normal((n, 16)).astype(np.float32)
    else:
        net = lenet5(rng, num_classes=4)
        x = rng.standard_normal((n, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 4, n)
    data = Splits("toy", x, y, x[:20], y[:20], x, y, 4)
    return ModelSubject("toy", net, data, TrainConfig(epochs=1, batch_size=20))


class CountingBackend:
    """Exact products; counts the offline step and records every call."""

    name = "counting"

    def __init__(self):
        self.prepared = []
        self.calls = []

    def prepare_weight(self, b, call):
        self.prepared.append(call.op)
        return ("prepared", b.copy())

    def matmul(self, a, b, call):
        self.calls.append(call)
        if call.weight_stationary:
            assert call.prepared is not None and np.array_equal(call.prepared[1], b)
        return EXACT.matmul(a, b, call)


def weight_layers(subject) -> list[str]:
    return sorted(name[:-2] for name in subject.weights())


@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_offline_weight_step_runs_once_per_weight_tensor_for_a_whole_evaluation(model):
    subject = small_subject(model)
    backend = CountingBackend()
    bound = bind(backend, seed=1)
    # 60 test samples in batches of 500 would be one batch: force several batches and two evaluations.
    from harness.nn.train import predict

    for _ in range(2):
        predict(subject.model, subject.data.x_test, bound, quant_bits=8, batch_size=7)
    assert sorted(backend.prepared) == weight_layers(subject)
    stationary = [c for c in backend.calls if c.weight_stationary]
    assert len(stationary) == 2 * len(weight_layers(subject)) * 9  # ceil(60 / 7) batches per evaluation
    assert weight_cache(backend).prepared == len(weight_layers(subject))


def test_editing_a_weight_prepares_it_again():
    subject = small_subject()
    backend = CountingBackend()
    subject.evaluate(bind(backend))
    subject.weights()["fc1.W"][0, 0] += 1.0
    subject.evaluate(bind(backend))
    assert backend.prepared.count("fc1") == 2 and backend.prepared.count("fc2") == 1


def test_ds_cim_prepares_each_weight_once_per_evaluation():
    subject = small_subject("lenet")
    accel = DsCimAccelerator(DsCimConfig(stream_length=64))
    before = weight_cache(accel.numerics).prepared
    subject.evaluate(bind(accel.numerics, seed=3), quant_bits=8)
    assert weight_cache(accel.numerics).prepared - before == len(weight_layers(subject))
    subject.evaluate(bind(accel.numerics, seed=3), quant_bits=8)
    assert weight_cache(accel.numerics).prepared - before == len(weight_layers(subject))


def test_ds_cim_prepared_and_inline_weights_give_identical_results():
    rng = np.random.default_rng(0)
    a = rng.integers(-127, 128, (9, 40)).astype(np.int32)
    b = rng.integers(-127, 128, (40, 6)).astype(np.int32)
    backend = DsCimAccelerator(DsCimConfig(stream_length=128)).numerics
    call = GemmCall(op="fc", weight_stationary=True, a_bits=8, b_bits=8, seed=5)
    inline = backend.matmul(a, b, call)
    prepared = backend.matmul(a, b, dataclasses.replace(call, prepared=backend.prepare_weight(b, call)))
    assert np.array_equal(inline, prepared)


def test_calls_know_their_op_bits_and_role():
    subject = small_subject("lenet")
    backend = CountingBackend()
    subject.evaluate(bind(backend), quant_bits=6)
    ops = {c.op for c in backend.calls}
    assert ops == set(weight_layers(subject))
    for c in backend.calls:
        assert (c.role, c.phase, c.a_bits, c.b_bits, c.weight_stationary) == ("inference", "inference", 6, 6, True)


def test_seeds_derive_from_the_run_seed_and_the_op():
    seen = {}

    class Seeds(CountingBackend):
        def matmul(self, a, b, call):
            seen.setdefault(self.tag, {})[call.op] = call.seed
            return EXACT.matmul(a, b, call)

    subject = small_subject()
    for tag, seed in (("a", 1), ("b", 1), ("c", 2)):
        backend = Seeds()
        backend.tag = tag
        subject.evaluate(bind(backend, seed=seed))
    assert seen["a"] == seen["b"] and seen["a"] != seen["c"]
    assert len(set(seen["a"].values())) == len(seen["a"])  # one stream per op


def test_ds_cim_output_follows_the_run_seed():
    rng = np.random.default_rng(1)
    a = rng.integers(-127, 128, (8, 32)).astype(np.int32)
    b = rng.integers(-127, 128, (32, 4)).astype(np.int32)
    backend = DsCimAccelerator(DsCimConfig(stream_length=64)).numerics
    call = GemmCall(op="fc", weight_stationary=True, a_bits=8, b_bits=8)
    one, same, other = (bind(backend, seed=s).matmul(a, b, call) for s in (1, 1, 2))
    assert np.array_equal(one, same) and not np.array_equal(one, other)


class EarlyStopRelu:
    """An ADC that stops converting once an output is known negative after the bias:
    it returns a large negative value there, which the epilogue must make harmless."""

    name = "early_stop"

    def __init__(self):
        self.epilogues = {}

    def matmul(self, a, b, call):
        y = EXACT.matmul(a, b, call)
        self.epilogues[call.op] = call.epilogue
        if call.epilogue == "relu":
            offset = 0.0 if call.epilogue_offset is None else call.epilogue_offset
            y = np.where(y + offset <= 0, -1e6, y)
        return y


@pytest.mark.parametrize("quant_bits", [0, 8])
def test_relu_epilogue_lets_a_backend_stop_early_without_changing_results(quant_bits):
    subject = small_subject("lenet")
    for layer in subject.model.stack:  # non-zero biases, so the offset matters
        if "b" in layer.params:
            layer.params["b"][...] = np.linspace(-0.5, 0.5, layer.params["b"].size)
    backend = EarlyStopRelu()
    got = subject.logits(subject.data.x_test, bind(backend), quant_bits=quant_bits)
    want = subject.logits(subject.data.x_test, EXACT, quant_bits=quant_bits)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    relu_layers = {op for op, e in backend.epilogues.items() if e == "relu"}
    # lenet5: conv1 and conv2 are followed by BatchNorm-free ReLUs? Check against the model itself.
    stack = subject.model.stack
    expected = {l.name for l, nxt in zip(stack, stack[1:]) if getattr(l, "producer", False) and type(nxt).__name__ == "ReLU"}
    assert relu_layers == expected and expected


def test_technique_precision_reaches_evaluation_and_the_op_trace():
    subject = small_subject("lenet")
    subject.quant_bits = 8
    w = subject.weights()["fc1.W"]
    alpha = 0.01
    w[...] = alpha * np.clip(np.rint(w / alpha), -7, 7)
    subject.set_precision("fc1", weight_bits=4, weight_granularity="tensor", weight_scale=alpha)
    backend = CountingBackend()
    subject.evaluate(bind(backend))
    fc1 = [c for c in backend.calls if c.op == "fc1"]
    assert fc1 and all((c.a_bits, c.b_bits) == (8, 4) for c in fc1)
    trace = subject.op_trace()
    assert trace.op("fc1").weight_bits == 4 and trace.op("fc1").input_bits == 8
    assert trace.op("conv1").weight_bits == 8
    codes, scale = trace.weight_codes("fc1")
    assert np.array_equal(codes, np.rint(w / alpha).astype(np.int32)) and np.allclose(scale, alpha)
    assert trace.op("fc1").weight_bytes == w.size * 4 / 8
    with pytest.raises(KeyError, match="no weight layer 'fc9'"):
        subject.set_precision("fc9", weight_bits=4)


def test_a_cost_model_reads_weight_values_from_the_trace():
    """A bit-sparsity cost model: non-zero bits of the weights' 8-bit codes, per op."""
    subject = small_subject()
    subject.quant_bits = 8

    def nonzero_bits(trace: OpTrace) -> dict[str, int]:
        out = {}
        for op in trace:
            if op.has_weights:
                codes, _ = trace.weight_codes(op.name)
                out[op.name] = int(sum(bin(abs(int(c))).count("1") for c in codes.ravel()))
        return out

    trace = subject.op_trace()
    got = nonzero_bits(trace)
    from harness.numerics.quant import quantize_symmetric

    want = {}
    for name, w in subject.weights().items():
        codes, _ = quantize_symmetric(w, 8, axis=0)
        want[name[:-2]] = int(sum(bin(abs(int(c))).count("1") for c in codes.ravel()))
    assert got == want and all(v > 0 for v in got.values())
    np.testing.assert_array_equal(trace.weight_values("fc1"), subject.weights()["fc1.W"])


def test_op_trace_v2_kinds_bytes_and_phases():
    gemm = Op("fc", m=2, k=3, n=4, weight_bits=4, input_bits=8)
    assert (gemm.weight_bytes, gemm.input_bytes, gemm.output_bytes) == (6.0, 6.0, 32.0)
    attn = Op("qk", m=5, k=4, n=5, count=2, kind="attention", input_bits=8)
    assert attn.weights == 0 and attn.input_bytes == (5 * 4 + 4 * 5) * 2
    decode = Op("decode", m=1, k=128, n=4096, count=32, kind="decode_attention", kv_cache_bytes=1 << 20)
    assert decode.macs == 128 * 4096 * 32 and decode.bytes >= 1 << 20
    ew = Op("gelu", kind="elementwise", elements=100)
    assert ew.macs == 0 and ew.flops == 100 and ew.input_bytes == 400
    trace = OpTrace((gemm, attn, decode, ew))
    assert trace.summary()["trace/bytes"] == pytest.approx(sum(o.bytes for o in trace))
    assert {r["phase"] for r in trace.rows()} == {"inference"}
    assert all(not isinstance(v, np.ndarray) for r in trace.rows() for v in r.values())  # a plain table
    with pytest.raises(ValueError, match="phase"):
        Op("x", m=1, k=1, n=1, phase="sideways")
    with pytest.raises(ValueError, match="kind"):
        Op("x", m=1, k=1, n=1, kind="conv")
    with pytest.raises(KeyError, match="no weight values"):
        trace.weight_values("fc")


def test_technique_bit_widths_reach_ds_cim_cost():
    p = DsCimAccelerator(DsCimConfig()).macro()
    values = WeightValues(np.ones((150, 16), np.float32))
    eight = OpTrace((Op("conv", m=100, k=150, n=16, weight_bits=8, input_bits=8),), {"conv": values})
    four = OpTrace((Op("conv", m=100, k=150, n=16, weight_bits=4, input_bits=8),), {"conv": values})
    floats = OpTrace((Op("conv", m=100, k=150, n=16),))
    e8, e4, ef = (cost_of_trace(p, t)["energy_pj"] for t in (eight, four, floats))
    assert e4 < e8 and ef == e8  # float ops are quantized to int8 by the numerics: charged at 8 bits
    assert cost_of_trace(p, four)["cycles"] == cost_of_trace(p, eight)["cycles"]  # same stream length
    assert MacroParams.for_op(p, eight.op("conv")) is p


def test_admm_bit_widths_reach_the_trace_and_ds_cim_cost(tmp_path):
    """The acceptance run, scaled down: admm quantization at 4 vs 8 bits on ds_cim."""
    records = {}
    for bits in (4, 8):
        records[bits] = run_experiment(
            {"workload": "digits_mlp", "technique": "admm", "accelerator": "ds_cim"},
            {"workload": {"epochs": 2, "quant_bits": 8},
             "technique": {"ratio": 1.0, "stages": 1, "admm_updates": 1, "retrain_epochs": 1, "quant_bits": bits,
                           "quant_updates": 2, "quant_retrain_epochs": 1},
             "accelerator": {"stream_length": 64}},
            seed=0, cache_dir=tmp_path,
        )
    for bits, rec in records.items():
        assert rec.status == "FINISHED", rec.error
        table = rec.artifacts["tables/op_trace.csv"].decode().splitlines()
        header = table[0].split(",")
        wbits = {row.split(",")[0]: row.split(",")[header.index("weight_bits")] for row in table[1:]}
        assert set(wbits.values()) == {str(bits)}, wbits
    assert records[4].metrics["accelerator/energy_pj"] < records[8].metrics["accelerator/energy_pj"]


# The tutorial's accelerator as it was written for contract v1: matmul(a, b).
class TruncNumericsV1:
    name = "trunc_mac"

    def __init__(self, drop_bits: int):
        self.step = 2**drop_bits

    def _codes(self, x):
        if np.issubdtype(x.dtype, np.integer):
            return x.astype(np.int64), 1.0
        scale = float(np.abs(x).max()) / 127 or 1.0
        return np.clip(np.rint(x / scale), -127, 127).astype(np.int64), scale

    def matmul(self, a, b):
        qa, sa = self._codes(a)
        qb, sb = self._codes(b)
        products = qa[:, :, None] * qb[None, :, :]
        acc = (np.trunc(products / self.step) * self.step).sum(axis=1)
        if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
            return acc.astype(np.float64)
        return (acc * sa * sb).astype(np.float32)


@dataclasses.dataclass
class TruncMacConfig:
    drop_bits: int = 4


class TruncMacV1:
    def __init__(self, config):
        self.numerics = TruncNumericsV1(config.drop_bits)

    def cost(self, trace, ctx):
        return {"energy_pj": trace.macs * 0.25}


class TruncMacPlugin:
    @staticmethod
    def harness_accelerators():
        yield AcceleratorSpec(name="trunc_mac", summary="v1 tutorial accelerator", config=TruncMacConfig,
                              factory=TruncMacV1)


def test_a_v1_backend_is_accepted_with_a_warning_naming_the_change(tmp_path):
    from harness import hookimpl

    TruncMacPlugin.harness_accelerators = hookimpl(TruncMacPlugin.harness_accelerators)
    host = Host(extra=[("trunc_mac", TruncMacPlugin, "harness-trunc-mac")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = run_experiment({"workload": "dot_products", "technique": "none", "accelerator": "trunc_mac"},
                             {"workload": {"count": 32, "length": 16, "columns": 4, "bits": 8}},
                             seed=0, cache_dir=tmp_path, host=host)
    assert rec.status == "FINISHED", rec.error
    assert rec.tags["numerics.contract"] == "v1" and rec.metrics["numerics/rmse"] > 0
    messages = [str(w.message) for w in caught if issubclass(w.category, ContractWarning)]
    assert any("trunc_mac" in m and "matmul(self, a, b, call)" in m for m in messages), messages


def test_the_runner_binds_the_numerics_to_the_run_seed(tmp_path):
    recs = [run_experiment({"workload": "dot_products", "technique": "none", "accelerator": "ds_cim"},
                           {"workload": {"count": 32, "length": 64, "columns": 4, "bits": 8},
                            "accelerator": {"stream_length": 64}}, seed=s, cache_dir=tmp_path) for s in (0, 0, 1)]
    assert all(r.tags["numerics.contract"] == "v2" for r in recs)
    rmse = [r.metrics["numerics/rmse"] for r in recs]
    assert rmse[0] == rmse[1] and rmse[0] != rmse[2]
