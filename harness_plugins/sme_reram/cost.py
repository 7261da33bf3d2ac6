"""Crossbar counts and action counts of the squeezed bit-sliced mapping (per op trace).

Every weighted GEMM of the trace is orchestrated and mapped exactly as the
numerics map it (:mod:`.mapping`), from the trace's weights: the integer codes
the op ran with when it ran at <= 8 bits, else its float weights quantized like
``prepare_weight`` does. An op whose trace carries no weights (``dot_products``)
uses the mapping the numerics built for that op during the evaluation, or, never
seen, is counted as dense on both sides (``ops_unmapped``).

Action counts per inference of one sample:

* ADC conversions: every column of every allocated crossbar, once per input bit
  and input vector (``input_bits x m x count``); the dense baseline converts
  every column of its tiles the same way.
* crossbar activations: allocated crossbars x input bits x input vectors.

Energy is action counts x per-action energies (``adc_energy_pj``,
``crossbar_read_pj``) [inferred: ISAAC's 8-bit ADC and 128x128 array figures,
not the SME paper's, which reports crossbar counts]; it is not calibrated to a
paper figure and is meant for comparisons inside a sweep.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict, defaultdict

import numpy as np

from harness_plugins.sme_reram.mapping import (LayerMap, dense_crossbars, dense_planes, digit_planes, map_layer,
                                               orchestrate, quantize_weights)

__all__ = ["cost_of_trace", "layer_map", "weight_codes_of"]


def weight_codes_of(trace, op, granularity: str) -> np.ndarray:
    """The integer codes op ``op`` multiplies: its own at <= 8 bits, else quantized to 8."""
    if 1 <= op.weight_bits <= 8:
        codes, _ = trace.weight_codes(op.name)
        return np.asarray(codes, dtype=np.int64)
    return quantize_weights(trace.weight_values(op.name), 8, granularity)[0]


#: Recent mappings by (codes, mapping fields): the numerics map a layer in
#: ``prepare_weight`` and the cost model maps the same codes again from the trace.
_MAPS: OrderedDict = OrderedDict()
_MAPS_KEPT = 8


def layer_map(codes: np.ndarray, cfg) -> tuple[LayerMap, np.ndarray, np.ndarray]:
    """Orchestrate codes and map them: ``(mapping, rounded codes, digit planes)``, all read-only."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    fields = (cfg.k, cfg.rounding, cfg.plane_window, cfg.crossbar_size, cfg.sign_scheme, cfg.squeeze_threshold)
    key = (codes.shape, hashlib.blake2b(codes.tobytes(), digest_size=16).digest(), fields)
    if key in _MAPS:
        _MAPS.move_to_end(key)
        return _MAPS[key]
    block = (cfg.crossbar_size, max(1, cfg.crossbar_size // dense_planes(cfg.sign_scheme)[1]))
    rounded, digits = orchestrate(codes, cfg.k, cfg.rounding, window=cfg.plane_window, block=block)
    planes, weights = digit_planes(rounded, cfg.sign_scheme, digits)
    result = map_layer(planes, weights, cfg.sign_scheme, cfg.crossbar_size, cfg.squeeze_threshold), rounded, planes
    for array in result[1:]:
        array.flags.writeable = False
    _MAPS[key] = result
    while len(_MAPS) > _MAPS_KEPT:
        _MAPS.popitem(last=False)
    return result


def cost_of_trace(cfg, trace, seen: dict | None = None) -> tuple[dict[str, float], list[dict]]:
    """``(metrics, tile table rows)`` of ``trace`` on the configured SME (see the module docstring)."""
    seen = seen or {}
    x = cfg.crossbar_size
    totals = defaultdict(float)
    per_plane = defaultdict(float)
    zeros, cells = defaultdict(float), defaultdict(float)
    rows: list[dict] = []
    err_num = err_den = 0.0
    digits_on = weights_total = 0.0
    for op in trace:
        if op.kind != "gemm" or not op.has_weights:
            continue
        vectors = op.m * op.count
        dense = dense_crossbars(op.k, op.n, x, cfg.sign_scheme)
        matrices, per_output = dense_planes(cfg.sign_scheme)
        dense_conversions = matrices * math.ceil(op.k / x) * per_output * op.n * cfg.input_bits * vectors
        totals["crossbars_dense"] += dense
        totals["crossbars_twos_complement"] += dense_crossbars(op.k, op.n, x, "twos_complement")
        totals["adc_conversions_dense"] += dense_conversions
        totals["activations_dense"] += dense * cfg.input_bits * vectors
        lm, planes = None, None
        if trace.has_weight_values() and op.name in trace.weights_by_op:
            codes = weight_codes_of(trace, op, cfg.weight_granularity)
            lm, rounded, planes = layer_map(codes, cfg)
            err_num += float(np.sum((rounded - codes) ** 2))
            err_den += float(np.sum(codes.astype(np.float64) ** 2))
        elif op.name in seen:
            lm = seen[op.name]
        if lm is None:
            totals["ops_unmapped"] += 1
            totals["crossbars"] += dense
            totals["tile_crossbars"] += dense
            totals["adc_conversions"] += dense_conversions
            totals["activations"] += dense * cfg.input_bits * vectors
            continue
        for key, value in lm.counts().items():
            if key != "crossbars_dense":
                totals[key] += value
        totals[f"layer/{op.name}/crossbars"] = lm.count
        totals[f"layer/{op.name}/crossbars_dense"] = dense
        totals[f"layer/{op.name}/crossbar_reduction"] = dense / max(lm.count, 1)
        for xb in lm.crossbars:
            for p in xb.planes:  # a shared crossbar counts for each plane by its share of the columns
                per_plane[p] += float(np.count_nonzero(xb.col_plane == p)) / len(xb.col_plane)
            totals["adc_conversions"] += len(xb.col_out) * cfg.input_bits * vectors
            totals["activations"] += cfg.input_bits * vectors
        if planes is not None:
            for p in range(planes.shape[0]):
                zeros[p] += float(np.count_nonzero(planes[p] == 0))
                cells[p] += float(planes[p].size)
            digits_on += float(np.count_nonzero(planes))
            weights_total += float(planes[0].size)
        for tile in lm.tiles:
            rows.append({"layer": op.name, **tile})

    index_crossbars = math.ceil(totals["index_bits"] / (x * x)) if cfg.index_in_crossbars else 0
    crossbars = totals["crossbars"] + index_crossbars
    metrics = {
        "crossbars": crossbars,
        "crossbars_dense": totals["crossbars_dense"],
        "crossbar_reduction": totals["crossbars_dense"] / crossbars if crossbars else 1.0,
        "crossbars_twos_complement": totals["crossbars_twos_complement"],
        "crossbar_reduction_vs_twos_complement": (totals["crossbars_twos_complement"] / crossbars
                                                  if crossbars else 1.0),
        "tile_crossbars": totals["tile_crossbars"],
        "spare_crossbars": totals["spare_crossbars"],
        "index_crossbars": float(index_crossbars),
        "tiles": totals["tiles"],
        "tiles_kept": totals["tiles_kept"],
        "tiles_squeezed": totals["tiles_squeezed"],
        "tiles_empty": totals["tiles_empty"],
        "spare_rows": totals["spare_rows"],
        "index_bits": totals["index_bits"],
        "ops_unmapped": totals["ops_unmapped"],
        "adc_conversions": totals["adc_conversions"],
        "adc_conversions_dense": totals["adc_conversions_dense"],
        "adc_reduction": (totals["adc_conversions_dense"] / totals["adc_conversions"]
                          if totals["adc_conversions"] else 1.0),
        "energy_pj": totals["adc_conversions"] * cfg.adc_energy_pj + totals["activations"] * cfg.crossbar_read_pj,
        "energy_dense_pj": (totals["adc_conversions_dense"] * cfg.adc_energy_pj
                            + totals["activations_dense"] * cfg.crossbar_read_pj),
    }
    if err_den:
        metrics["orchestration_rel_error"] = math.sqrt(err_num / err_den)
    if weights_total:
        metrics["nonzero_digits_per_weight"] = digits_on / weights_total
    for p in sorted(cells):
        metrics[f"plane{p}/zero_fraction"] = zeros[p] / cells[p]
    for p in sorted(per_plane):
        metrics[f"plane{p}/crossbars"] = per_plane[p]
    metrics.update({k: v for k, v in totals.items() if k.startswith("layer/")})
    return {f"accelerator/{k}": float(v) for k, v in metrics.items()}, rows
