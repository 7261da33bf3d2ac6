"""Claims v2: one verdict per claim, judged on every run of a sweep that matches it."""

from __future__ import annotations

import pytest

from harness.claims import (
    NOT_COMPARABLE,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REPRODUCED,
    SMALLER_EFFECT,
    claim_problems,
    judge,
    judge_runs,
    parse_condition,
)
from harness.specs import Claim, PaperRef, SpecError, TechniqueSpec, validate_spec
from harness.tracking_read import RunView

RATIO_246 = Claim("technique/compression_ratio", 246.0, "x", "LeNet-5, no accuracy loss", workload="mnist_lenet5",
                  when={"method": "progressive_admm"}, at={"technique/accuracy_drop_points": "<= 0"},
                  direction="higher", baseline=1.0, tolerance=0.05)
TOPS_256 = Claim("accelerator/tops_per_w", 3566.0, "TOPS/W", "macro", when={"stream_length": 256},
                 direction="higher", tolerance=0.01)


def run(i, metrics, status="FINISHED", workload="mnist_lenet5", **params):
    p = {"workload": workload, "technique": "admm", "accelerator": "ds_cim"}
    p.update({k.replace("__", "."): str(v) for k, v in params.items()})
    return RunView(f"r{i}", f"run{i}", "e", status, params=p, metrics=dict(metrics))


def admm_run(i, ratio, drop, **kw):
    return run(i, {"technique/compression_ratio": ratio, "technique/accuracy_drop_points": drop},
               technique__method=kw.pop("method", "progressive_admm"), **kw)


def test_best_ratio_among_runs_meeting_the_accuracy_bound_is_judged():
    runs = [
        admm_run(1, 400.0, 0.8),  # higher ratio, but loses accuracy: excluded by `at`
        admm_run(2, 240.0, 0.0),  # within 5% of 246: the best that meets the bound
        admm_run(3, 30.0, -0.2),
        admm_run(4, 500.0, -1.0, method="magnitude"),  # another method: excluded by `when`
        admm_run(5, 900.0, -1.0, status="FAILED"),
    ]
    j = judge(RATIO_246, "technique", "admm", runs)
    assert (j.verdict, j.measured, j.run_id, j.matching) == (REPRODUCED, 240.0, "r2", 2)


def test_a_smaller_ratio_without_loss_is_same_direction_smaller_effect():
    j = judge(RATIO_246, "technique", "admm", [admm_run(1, 100.0, -0.1), admm_run(2, 30.0, 0.0)])
    assert (j.verdict, j.measured) == (SMALLER_EFFECT, 100.0)


def test_no_effect_or_missing_the_bound_is_not_reproduced_and_no_run_in_the_setting_is_not_measured():
    assert judge(RATIO_246, "technique", "admm", [admm_run(1, 1.0, 0.0)]).verdict == NOT_REPRODUCED
    # Every run lost accuracy: "246x at no loss" was tried and not reached.
    j = judge(RATIO_246, "technique", "admm", [admm_run(1, 300.0, 0.5), admm_run(2, 30.0, 0.2)])
    assert j.verdict == NOT_REPRODUCED and j.measured is None and j.in_setting == 2
    assert "technique/accuracy_drop_points <= 0.0 (closest: 0.2)" in j.detail
    # No run of the claim's method at all: nothing to judge.
    j = judge(RATIO_246, "technique", "admm", [admm_run(1, 300.0, 0.0, method="magnitude")])
    assert j.verdict == NOT_MEASURED and j.measured is None and "technique.method == progressive_admm" in j.detail


def test_a_different_workload_is_not_comparable_but_keeps_the_indicative_verdict():
    runs = [admm_run(1, 250.0, 0.0, workload="digits_mlp")]
    j = judge(RATIO_246, "technique", "admm", runs)
    assert j.verdict == NOT_COMPARABLE and j.indicative == REPRODUCED and j.measured == 250.0
    assert "digits_mlp" in j.detail
    # A comparable run, when there is one, decides, even if a non-comparable one is better.
    runs.append(admm_run(2, 50.0, 0.0))
    j = judge(RATIO_246, "technique", "admm", runs)
    assert (j.verdict, j.measured, j.comparable) == (SMALLER_EFFECT, 50.0, 1)


@pytest.mark.parametrize(
    "measured, verdict",
    [(3566.0, REPRODUCED), (3540.0, REPRODUCED), (3520.0, NOT_REPRODUCED), (9000.0, REPRODUCED)],
)
def test_tops_per_w_at_l256_uses_only_l256_runs_and_the_declared_tolerance(measured, verdict):
    runs = [run(1, {"accelerator/tops_per_w": 5000.0}, accelerator__stream_length=64),
            run(2, {"accelerator/tops_per_w": measured}, accelerator__stream_length=256)]
    j = judge(TOPS_256, "accelerator", "ds_cim", runs)
    assert (j.verdict, j.measured, j.matching) == (verdict, measured, 1)


def test_lower_is_better_and_undirected_claims():
    rmse = Claim("numerics/rmse", 0.74, "%", "MAC error", direction="lower", tolerance=0.1)
    runs = [run(1, {"numerics/rmse": 0.9}), run(2, {"numerics/rmse": 0.82})]
    assert judge(rmse, "accelerator", "ds_cim", runs).verdict == NOT_REPRODUCED  # 0.82 > 0.74 * 1.1
    runs.append(run(3, {"numerics/rmse": 0.5}))
    j = judge(rmse, "accelerator", "ds_cim", runs)
    assert (j.verdict, j.measured) == (REPRODUCED, 0.5)
    exact = Claim("numerics/rmse", 1.0, "%", "x", tolerance=0.1)  # no direction: the value itself
    j = judge(exact, "accelerator", "ds_cim", [run(1, {"numerics/rmse": 0.5}), run(2, {"numerics/rmse": 1.2})])
    assert (j.verdict, j.measured) == (NOT_REPRODUCED, 1.2)  # closest is 1.2, 20% off


def test_claims_of_plugins_the_runs_did_not_use_are_not_judged():
    runs = [admm_run(1, 250.0, 0.0)]
    claims = {("technique", "admm"): (RATIO_246,), ("accelerator", "ds_cim"): (TOPS_256,)}
    out = judge_runs(runs, lambda kind, name: claims.get((kind, name), ()))
    assert {(j.plugin, j.verdict) for j in out} == {("admm", REPRODUCED), ("ds_cim", NOT_MEASURED)}
    assert judge_runs(runs, lambda k, n: claims.get((k, n), ()), plugins=["ds_cim"])[0].plugin == "ds_cim"


def test_conditions_parse_and_bad_ones_name_what_is_valid():
    assert str(parse_condition("technique/accuracy_drop_points", "<= 0")) == "technique/accuracy_drop_points <= 0.0"
    assert parse_condition("accelerator.variant", "!= ds_cim2").test("ds_cim1")
    assert parse_condition("accelerator.stream_length", 256).test("256")
    assert not parse_condition("eval/accuracy", "> 0.5").test(None)
    with pytest.raises(ValueError, match="compares with a non-number"):
        parse_condition("eval/accuracy", "> high")
    with pytest.raises(ValueError, match="operators"):
        parse_condition("eval/accuracy", [1, 2])


def test_bad_v2_fields_are_rejected_when_the_plugin_loads():
    bad = Claim("technique/compression_ratio", 2.0, "x", "e", direction="up", tolerance=-1, baseline=1.0,
                at={"eval/accuracy": "> lots"})
    problems = " ".join(claim_problems(bad))
    assert "direction 'up'" in problems and "tolerance -1" in problems and "non-number" in problems
    assert claim_problems(Claim("a/b", 1.0, "x", "e", baseline=1.0)) == ["claim 'a/b' (e): baseline needs a direction ('higher' or 'lower')"]
    from harness_plugins.none import Identity, NoneConfig

    spec = TechniqueSpec(name="t", summary="s", config=NoneConfig, factory=Identity,
                         paper=PaperRef("t", "a", "v", 2020), claims=(bad,))
    with pytest.raises(SpecError, match="direction 'up'"):
        validate_spec(spec)


def test_builtin_claims_are_judgeable():
    from harness_plugins.admm import CLAIMS as ADMM
    from harness_plugins.ds_cim import CLAIMS as DS_CIM

    for claim in ADMM + DS_CIM:
        assert claim_problems(claim) == [] and claim.direction in ("higher", "lower")
    assert dict(ADMM[0].at) == {"technique/accuracy_drop_points": "<= 0"} and ADMM[0].baseline == 1.0
