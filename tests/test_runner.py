"""One experiment: composition, seeding, provenance tags, artifacts, claims."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import pytest

from conftest import mlflow_runs, run_harness
from harness.api import RunContext
from harness.host import PluginInfo
from harness.runner import compare_claims, experiment_identity, run_experiment
from harness.specs import AcceleratorSpec, Claim, PaperRef
from harness.validation import ConfigError

CHOICES = {"workload": "dot_products", "technique": "none", "accelerator": "exact"}


def _run(seed=0, **workload):
    values = {"workload": {"count": 64, "columns": 8, "sparsity": 0.5, **workload}, "technique": {}, "accelerator": {}}
    return run_experiment(CHOICES, values, seed=seed, cache_dir="/tmp/unused-cache")


def test_same_config_and_seed_give_identical_metrics():
    a, b = _run(seed=3), _run(seed=3)
    assert a.status == b.status == "FINISHED"
    assert a.metrics == b.metrics and a.series == b.series
    assert a.config_hash == b.config_hash


def test_seed_changes_the_data_and_the_hash():
    a, b = _run(seed=0), _run(seed=1)
    assert a.config_hash != b.config_hash
    assert a.metrics["trace/nonzero_macs"] != b.metrics["trace/nonzero_macs"]


def test_record_carries_params_tags_and_artifacts():
    record = _run()
    assert record.params["workload"] == "dot_products" and record.params["workload.sparsity"] == "0.5"
    assert record.params["seed"] == "0"
    tags = record.tags
    for key in ("harness.config_hash", "mlflow.source.git.commit", "harness.git_dirty", "harness.host", "harness.seed"):
        assert tags[key]
    assert tags["harness.accelerator.distribution"].startswith("accel-harness ")
    rows = list(csv.DictReader(io.StringIO(record.artifacts["tables/op_trace.csv"].decode())))
    assert rows[0]["name"] == "dot_products" and int(rows[0]["k"]) == 128
    # The exact accelerator's numerics are the reference: eval and eval_exact agree.
    assert record.metrics["numerics/rmse"] == record.metrics["numerics/rmse_exact"] == 0.0


def test_bad_plugin_config_value_is_refused_before_the_run_with_the_reason():
    with pytest.raises(ConfigError) as caught:
        _run(distribution="bogus")
    message = str(caught.value)
    assert message.startswith("workload 'dot_products': ")
    assert "workload.distribution='bogus': valid are uniform, gaussian, relu" in message


def test_every_bad_value_of_every_plugin_and_the_seed_is_listed_at_once():
    values = {"workload": {"count": 0, "sparsity": float("nan")}, "technique": {},
              "accelerator": {"stream_length": 10**12, "clock_mhz": float("inf")}}
    with pytest.raises(ConfigError) as caught:
        experiment_identity({**CHOICES, "accelerator": "ds_cim"}, values, seed=-1)
    keys = [p.key for p in caught.value.problems]
    assert keys == ["seed", "workload.count", "workload.sparsity", "accelerator.stream_length", "accelerator.clock_mhz"]
    message = str(caught.value)
    assert "seed=-1: valid is an integer >= 0" in message
    assert "accelerator 'ds_cim': accelerator.stream_length=1000000000000: valid is an integer >= 1 and <= 65536" in message
    assert "accelerator.clock_mhz=inf" in message and "\n" not in message


def test_unknown_plugin_config_key_is_a_config_error():
    with pytest.raises(ConfigError, match="workload 'dot_products': bad config .*bogus"):
        experiment_identity(CHOICES, {"workload": {"bogus": 1}})


@dataclass
class _Cfg:
    variant: str = "a"


def test_claims_are_compared_where_the_metric_matches():
    paper = PaperRef("A paper", "Someone", "Venue", 2025, "2501.00001")
    spec = AcceleratorSpec(
        name="claimy",
        summary="has claims",
        config=_Cfg,
        factory=lambda c: c,
        paper=paper,
        claims=(
            Claim("accelerator/tops_per_w", 100.0, "TOPS/W", "macro", when={"variant": "a"}),
            Claim("accelerator/tops_per_w", 50.0, "TOPS/W", "macro", when={"variant": "b"}),
            Claim("eval/accuracy", 0.9, "fraction", "ResNet18 CIFAR-10", workload="resnet18_cifar10"),
            Claim("numerics/rmse", 1.0, "% FS", "MC"),
        ),
    )
    info = PluginInfo(spec, "claimy", "dist", "1.0")
    rows = compare_claims([info], {"accelerator": _Cfg()}, "mnist_lenet5", {"accelerator/tops_per_w": 80.0, "eval/accuracy": 0.95})
    by_metric = {r["metric"]: r for r in rows}
    assert len(rows) == 3  # the variant-b claim does not apply
    assert by_metric["accelerator/tops_per_w"]["ratio"] == pytest.approx(0.8)
    assert by_metric["accelerator/tops_per_w"]["status"] == "comparable"
    assert "different workload" in by_metric["eval/accuracy"]["status"]
    assert by_metric["numerics/rmse"]["status"] == "not measured"


def test_context_rejects_unprefixed_or_non_numeric_metrics(tmp_path):
    ctx = RunContext(0, tmp_path)
    with pytest.raises(ValueError, match="stage prefix"):
        ctx.log_metric("accuracy", 1.0)
    with pytest.raises(ValueError, match="must be a number"):
        ctx.log_metric("eval/accuracy", "high")
    assert ctx.child_seed("a") == RunContext(0, tmp_path).child_seed("a") != ctx.child_seed("b")


def test_two_cli_runs_log_identical_metrics(workdir):
    for _ in range(2):
        result = run_harness(["run", "workload.count=64", "workload.sparsity=0.3", "seed=7"], workdir)
        assert result.returncode == 0, result.stderr
    first, second = mlflow_runs(workdir / "mlflow.db")
    assert first.info.status == second.info.status == "FINISHED"
    assert first.data.metrics == second.data.metrics
    assert first.data.tags["harness.config_hash"] == second.data.tags["harness.config_hash"]


@pytest.mark.parametrize("cache_arg", [None, "cache_dir=elsewhere"])
def test_a_single_run_caches_numba_kernels_under_cache_dir_not_next_to_the_source(workdir, cache_arg):
    """Where a sweep's workers cache them (``<cache_dir>/numba``), so the two compile once
    between them; numba's default would write into the installed (or cloned) package."""
    from pathlib import Path

    import harness
    from conftest import harness_env

    package = Path(harness.__file__).parent
    before = set(package.rglob("*.nbi"))
    env = harness_env(workdir)
    env.pop("NUMBA_CACHE_DIR", None)
    args = ["run", "workload=digits_mlp", "workload.epochs=1", "workload.hidden=16", *([cache_arg] if cache_arg else [])]
    result = run_harness(args, workdir, env=env)
    assert result.returncode == 0, result.stderr
    cache_dir = workdir / ("elsewhere" if cache_arg else ".harness_cache")
    assert list((cache_dir / "numba").rglob("*.nbi")), "no numba index under <cache_dir>/numba"
    assert set(package.rglob("*.nbi")) == before


def test_curves_are_plotted_as_png():
    from harness.plots import curves_png
    from harness.record import Record

    assert curves_png(Record()) is None
    png = curves_png(Record(series={"train/loss": [(0, 2.0), (1, 1.0)], "train/val_accuracy": [(0, 0.5), (1, 0.9)]}))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_stage_curves_share_a_panel_and_none_is_left_out():
    from harness.plots import curve_panels

    names = [f"technique/stage{s}/{m}" for s in range(3) for m in ("loss", "val_accuracy", "rho", "accuracy", "residual")]
    names += ["train/loss", "train/val_accuracy", "eval/fold1/acc_2"]
    panels = curve_panels(names)
    assert panels["technique/*/loss"] == [("stage0", "technique/stage0/loss"), ("stage1", "technique/stage1/loss"),
                                          ("stage2", "technique/stage2/loss")]
    assert panels["train/loss"] == [("", "train/loss")]
    assert panels["eval/fold1/acc_2"] == [("", "eval/fold1/acc_2")]  # two numbered segments: its own panel
    assert len(panels) == 5 + 3 and sorted(n for lines in panels.values() for _, n in lines) == sorted(names)


@dataclass
class _PauseConfig:
    seconds: float = 0.4
    busy: bool = False


class _Pause:
    """Spends ``seconds`` computing (``busy``) or asleep, as a job waiting on another's result does."""

    def __init__(self, config):
        self.config = config

    def apply(self, subject, workload, ctx):
        import time

        end = time.perf_counter() + self.config.seconds
        while time.perf_counter() < end:
            if not self.config.busy:
                time.sleep(max(0.0, end - time.perf_counter()))
        return subject


def test_a_run_records_its_cpu_time_next_to_its_wall_time_so_waiting_shows(tmp_path):
    from harness import hookimpl
    from harness.host import Host
    from harness.specs import TechniqueSpec

    class PausePlugin:
        @staticmethod
        @hookimpl
        def harness_techniques():
            yield TechniqueSpec(name="pause", summary="Pause", config=_PauseConfig, factory=_Pause)

    host = Host(extra=[("pause", PausePlugin, "test-pause")])
    seconds = {}
    for busy in (False, True):
        record = run_experiment({**CHOICES, "technique": "pause"},
                                {"workload": {"count": 64, "columns": 8}, "technique": {"busy": busy}, "accelerator": {}},
                                seed=0, cache_dir=tmp_path, host=host, technique_cache=False)
        assert record.status == "FINISHED", record.error
        seconds[busy] = float(record.tags["harness.duration_s"]), float(record.tags["harness.cpu_s"])
    (wall_asleep, cpu_asleep), (wall_busy, cpu_busy) = seconds[False], seconds[True]
    assert wall_asleep >= 0.4 and wall_busy >= 0.4, seconds  # both pauses ran
    assert cpu_asleep < wall_asleep - 0.3, seconds  # the 0.4 s asleep cost no CPU
    assert cpu_busy - cpu_asleep > 0.3, seconds  # the 0.4 s spent computing did
