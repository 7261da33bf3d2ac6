"""What MLflow's UI shows: run names, run descriptions, headline metrics, units (issue 11, part 4)."""

from __future__ import annotations

import dataclasses

import pytest

from harness.api import RunContext
from harness.app import label_single_run, run_name
from harness.host import get_host
from harness.launcher import summary
from harness.naming import describe_sweep, parse_overrides, sweep_names, varied_keys
from harness.optrace import Op, OpTrace
from harness.runner import run_experiment
from harness.specs import KINDS, AcceleratorSpec, SpecError, validate_spec
from harness_plugins.exact import INT8_MAC_PJ_45NM, ExactAccelerator, ExactConfig


def _job(idx, technique="admm", accelerator="ds_cim", workload="mnist_lenet5", seed=0, *overrides):
    choices = {"workload": workload, "technique": technique, "accelerator": accelerator}
    return idx, choices, seed, [f"workload={workload}", f"technique={technique}", f"accelerator={accelerator}",
                                *overrides, "hydra.launcher.resume=true"]


# -- run names ------------------------------------------------------------------------
def test_sweep_names_say_what_varied_with_short_keys():
    jobs = [
        _job(i, "admm", acc, "mnist_lenet5", 0, f"technique.ratio={r}")
        for i, (r, acc) in enumerate((r, a) for r in (5, 20) for a in ("exact", "ds_cim"))
    ]
    names = sweep_names(jobs)
    assert names == {
        0: "admm ratio=5 on exact s0", 1: "admm ratio=5 on ds_cim s0",
        2: "admm ratio=20 on exact s0", 3: "admm ratio=20 on ds_cim s0",
    }


def test_sweep_names_place_each_parameter_with_its_plugin_and_name_a_varying_workload():
    jobs = [
        _job(0, "none", "ds_cim", "dot_products", 1, "accelerator.stream_length=64", "workload.sparsity=0.5"),
        _job(1, "none", "ds_cim", "dot_products", 1, "accelerator.stream_length=256", "workload.sparsity=0.0"),
    ]
    assert sweep_names(jobs) == {
        0: "dot_products sparsity=0.5: none on ds_cim stream_length=64 s1",
        1: "dot_products sparsity=0.0: none on ds_cim stream_length=256 s1",
    }


def test_when_values_name_only_the_jobs_of_their_choice_and_colliding_short_keys_stay_long():
    jobs = [
        _job(0, "none", "exact", "digits_mlp", 0, "when.technique.admm.ratio=10"),
        _job(1, "admm", "exact", "digits_mlp", 0, "when.technique.admm.ratio=10"),
        _job(2, "admm", "exact", "digits_mlp", 0, "when.technique.admm.ratio=30"),
    ]
    assert sweep_names(jobs) == {0: "none on exact s0", 1: "admm ratio=10 on exact s0", 2: "admm ratio=30 on exact s0"}
    two = [_job(0, "admm", "ds_cim", "w", 0, "technique.bits=4", "accelerator.bits=4"),
           _job(1, "admm", "ds_cim", "w", 0, "technique.bits=8", "accelerator.bits=2")]
    assert sweep_names(two)[0] == "admm technique.bits=4 on ds_cim accelerator.bits=4 s0"


def test_names_are_unique_even_for_jobs_that_differ_in_nothing_shown():
    jobs = [_job(i, "none", "exact", "dot_products", 0) for i in range(3)]
    names = sweep_names(jobs)
    assert len(set(names.values())) == 3
    assert names[2] == "none on exact s0 #2"
    # Jobs with one config hash are one run (the twin is skipped): no number needed.
    assert sweep_names(jobs, {0: "h", 1: "h", 2: "h"}) == {i: "none on exact s0" for i in range(3)}
    assert sweep_names(jobs, {0: "h", 1: "h", 2: "g"})[0] == "none on exact s0 #0"


def test_overrides_are_parsed_without_hydra_keys_and_seed_is_a_suffix():
    parsed = parse_overrides(["+technique.ratio=20", "hydra.launcher.resume=false", "~foo", "seed=3",
                              "cache_dir=/tmp/c", "+experiment=codesign_lenet5", "tracking_uri=sqlite:///x.db"])
    assert parsed == {"technique.ratio": "20", "seed": "3"}
    assert varied_keys([{"a": "1", "b": "2"}, {"a": "1", "b": "3"}, {"a": "1"}]) == ["b"]
    jobs = [_job(i, "none", "exact", "dot_products", s, f"seed={s}") for i, s in enumerate((0, 1))]
    assert sweep_names(jobs) == {0: "none on exact s0", 1: "none on exact s1"}


# -- single runs: name and description -------------------------------------------------
def test_a_single_run_is_named_from_its_plugins_and_overrides_and_described(tmp_path):
    choices = {"workload": "dot_products", "technique": "none", "accelerator": "exact"}
    values = {"workload": {"count": 64, "columns": 8}, "technique": {}, "accelerator": {}}
    record = run_experiment(choices, values, seed=2, cache_dir=str(tmp_path))
    overrides = ["workload=dot_products", "workload.count=64", "workload.columns=8", "seed=2"]
    assert run_name(record) == "dot_products: none on exact s2"
    name = label_single_run(record, overrides)
    assert name == "dot_products count=64 columns=8: none on exact s2"
    note = record.tags["mlflow.note.content"]
    assert "`harness run workload=dot_products workload.count=64 workload.columns=8 seed=2`" in note
    assert "**dot_products**" in note and "**none**" in note and "**exact**" in note and "seed 2" in note
    assert record.config_hash in note and "`workload.count=64`" in note
    commit = record.tags["mlflow.source.git.commit"]
    assert commit in note
    # MLflow 3.17's run page shows the commit next to the source name only.
    assert record.tags["mlflow.source.name"] == "harness" and record.tags["mlflow.source.type"] == "LOCAL"


def test_a_sweep_parent_is_described():
    note = describe_sweep("harness run -m technique.ratio=5,20", 4, ["technique.ratio"], "abcd", "f00", "true")
    assert "`harness run -m technique.ratio=5,20`" in note and "4 jobs" in note and "`technique.ratio`" in note
    assert "`f00` (with uncommitted changes)" in note


# -- headline metrics ---------------------------------------------------------------------
def _row(idx, status="FINISHED", **metrics):
    return summary.Row(idx, [], status=status, run_id=f"r{idx}", metrics={k.replace("__", "/"): v for k, v in metrics.items()})


def test_summary_leads_with_the_headline_metrics_then_varying_ones():
    rows = [
        _row(0, accelerator__energy_per_mac_pj=0.1, accelerator__cycles=5, eval__accuracy=0.9, technique__compression_ratio=5),
        _row(1, accelerator__energy_per_mac_pj=0.2, accelerator__cycles=5, eval__accuracy=0.8, technique__compression_ratio=20),
    ]
    keys = summary.key_metrics(rows, (), ["eval/accuracy", "technique/compression_ratio", "eval/not_logged"])
    assert keys == ["eval/accuracy", "technique/compression_ratio", "accelerator/energy_per_mac_pj"]
    assert summary.key_metrics(rows, ("accelerator/cycles",), ["eval/accuracy"]) == ["accelerator/cycles"]
    # Without a headline: as before, varying metrics first, alphabetically.
    assert summary.key_metrics(rows)[:2] == ["accelerator/energy_per_mac_pj", "eval/accuracy"]


def test_parent_metrics_summarize_headline_metrics_over_finished_jobs_and_lead_the_markdown():
    rows = [_row(0, eval__accuracy=0.9), _row(1, eval__accuracy=0.7), _row(2, "FAILED", eval__accuracy=0.1),
            _row(3, summary.SKIPPED, eval__accuracy=0.8)]
    stats = summary.headline_summary(rows, ["eval/accuracy", "eval/accuracy", "accelerator/energy_pj"])
    assert stats == {"eval/accuracy/max": 0.9, "eval/accuracy/min": 0.7, "eval/accuracy/mean": pytest.approx(0.8)}
    md = summary.markdown(rows, "abc", "harness run -m x=1,2", ["eval/accuracy"], stats)
    assert md.index("| eval/accuracy | 0.9 | 0.7 | 0.8 |") < md.index("| job |")


def test_builtin_plugins_declare_headline_metrics_and_bad_names_are_refused():
    host = get_host()
    expected = {
        ("workload", "mnist_lenet5"): ("eval/accuracy", "eval/accuracy_exact"),
        ("workload", "digits_mlp"): ("eval/accuracy", "eval/accuracy_exact"),
        ("workload", "dot_products"): ("numerics/rmse",),
        ("technique", "admm"): ("technique/compression_ratio", "technique/accuracy_drop_points"),
        ("accelerator", "ds_cim"): ("accelerator/energy_pj", "accelerator/tops_per_w"),
        ("accelerator", "exact"): ("accelerator/energy_pj", "accelerator/macs"),
    }
    for (kind, name), headline in expected.items():
        assert host.info(kind, name).spec.headline == headline
    spec = host.info("accelerator", "exact").spec
    assert dataclasses.replace(spec, headline=["accelerator/macs"]).headline == ("accelerator/macs",)
    with pytest.raises(SpecError, match="headline metric 'energy' must be 'stage/name'"):
        validate_spec(dataclasses.replace(spec, headline=("energy",)))
    assert isinstance(spec, AcceleratorSpec) and set(KINDS) == {"workload", "technique", "accelerator"}


# -- exact's cost ---------------------------------------------------------------------------
def test_exact_prices_its_macs_at_a_stated_nominal_energy_per_mac(tmp_path):
    trace = OpTrace((Op("mvm", m=10, k=100, n=10, weight_bits=8, input_bits=8, weight_density=0.5),))
    ctx = RunContext(seed=0, cache_dir=tmp_path)
    cost = ExactAccelerator(ExactConfig()).cost(trace, ctx)
    assert INT8_MAC_PJ_45NM == 0.23 and ExactConfig().energy_per_mac_pj == 0.23
    assert cost["accelerator/macs"] == 10_000
    assert cost["accelerator/energy_pj"] == pytest.approx(10_000 * 0.23)
    assert cost["accelerator/tops_per_w"] == pytest.approx(2 / 0.23)
    skipping = ExactAccelerator(ExactConfig(energy_per_mac_pj=1.0, skip_zeros=True)).cost(trace, ctx)
    assert skipping["accelerator/energy_pj"] == pytest.approx(cost["accelerator/nonzero_macs"])
    assert "Horowitz" in __import__("harness_plugins.exact", fromlist=["x"]).__doc__
