"""A technique's result is computed once and reused across accelerators, exactly."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from harness import hookimpl
from harness.host import Host
from harness.record import Record
from harness.runner import run_experiment
from harness.specs import TechniqueSpec
from harness.technique_cache import NAMESPACE, cached_apply, technique_key

APPLIED: list[int] = []


@dataclass
class ScaleConfig:
    factor: float = 0.5
    fail: bool = False


class Scale:
    """Scales every weight and logs what it did: a technique with an observable apply."""

    def __init__(self, config):
        self.config = config

    def apply(self, subject, workload, ctx):
        APPLIED.append(1)
        if self.config.fail:
            raise RuntimeError("deliberate failure")
        for w in subject.weights().values():
            w *= self.config.factor
        ctx.log_metric("technique/factor", self.config.factor)
        ctx.log_series("technique/curve", [1.0, 0.5])
        ctx.log_table("scaled", [{"layer": n} for n in subject.weights()])
        ctx.set_tag("technique.note", "scaled")
        return subject


class ScalePlugin:
    @staticmethod
    @hookimpl
    def harness_techniques():
        yield TechniqueSpec(name="scale", summary="Scale the weights", config=ScaleConfig, factory=Scale,
                            needs={"subject:model"}, smoke_workload="digits_mlp")


@pytest.fixture
def host():
    return Host(extra=[("scale", ScalePlugin, "test-scale")])


def run(host, tmp_path, accelerator, cache=True, **technique):
    return run_experiment({"workload": "digits_mlp", "technique": "scale", "accelerator": accelerator},
                          {"workload": {"epochs": 1}, "technique": technique,
                           "accelerator": {"stream_length": 64} if accelerator == "ds_cim" else {}},
                          seed=0, cache_dir=tmp_path, host=host, technique_cache=cache)


def technique_part(rec: Record) -> dict:
    return {
        "metrics": {k: v for k, v in rec.metrics.items() if k.startswith("technique/")},
        "series": {k: v for k, v in rec.series.items() if k.startswith("technique/")},
        "table": rec.artifacts["tables/scaled.csv"],
        "tag": rec.tags["technique.note"],
    }


def test_a_second_accelerator_reuses_the_technique_result(host, tmp_path):
    APPLIED.clear()
    first = run(host, tmp_path, "exact")
    second = run(host, tmp_path, "ds_cim")
    assert len(APPLIED) == 1
    assert (first.tags["harness.technique_cache"], second.tags["harness.technique_cache"]) == ("miss", "hit")
    assert technique_part(first) == technique_part(second)
    assert first.metrics["eval/accuracy_exact"] == second.metrics["eval/accuracy_exact"]
    uncached = run(host, tmp_path / "other", "ds_cim", cache=False)
    assert len(APPLIED) == 2 and "harness.technique_cache" not in uncached.tags
    assert {k: v for k, v in uncached.metrics.items() if not k.startswith("perf/")} == {
        k: v for k, v in second.metrics.items() if not k.startswith("perf/")
    }


def test_a_different_technique_config_or_seed_is_a_different_entry(host, tmp_path):
    APPLIED.clear()
    run(host, tmp_path, "exact", factor=0.5)
    run(host, tmp_path, "exact", factor=0.25)
    assert len(APPLIED) == 2
    choices = {"workload": "w", "technique": "t"}
    params = {"workload": {"a": 1}, "technique": {"b": 2}}
    key = technique_key(choices, params, 0, {"technique": "code1"})
    assert key != technique_key(choices, params, 1, {"technique": "code1"})
    assert key != technique_key(choices, params, 0, {"technique": "code2"})  # edited plugin code
    assert key == technique_key(choices, params, 0, {"technique": "code1"})


def test_a_failed_technique_leaves_no_entry(host, tmp_path):
    APPLIED.clear()
    failed = run(host, tmp_path, "exact", fail=True)
    assert failed.status == "FAILED" and "deliberate failure" in failed.error
    assert not list((tmp_path / NAMESPACE).glob("*.pkl"))
    again = run(host, tmp_path, "exact", fail=True)
    assert again.status == "FAILED" and len(APPLIED) == 2


def test_concurrent_jobs_compute_one_entry_once(tmp_path):
    calls = []

    def apply():
        calls.append(1)
        time.sleep(0.3)  # long enough for the other thread to arrive and wait
        return np.arange(3)

    records = [Record(), Record()]
    results = [None, None]

    def job(i):
        results[i] = cached_apply(tmp_path, "samekey", records[i], apply)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True]
    assert all(np.array_equal(subject, np.arange(3)) for subject, _ in results)


def test_the_sweep_driver_submits_one_job_per_technique_result_first():
    from omegaconf import OmegaConf

    from harness.launcher.harness_hook import HarnessSweepHook
    from harness.launcher.hooks import Job

    jobs = []
    for i, (ratio, accel) in enumerate((r, a) for r in (10, 30, 100) for a in ("exact", "ds_cim")):
        cfg = OmegaConf.create({"seed": 0, "workload": {"epochs": 1}, "technique": {"ratio": ratio},
                                "accelerator": {}})
        job = Job(idx=i, overrides=[f"technique.ratio={ratio}", f"accelerator={accel}"], config=cfg)
        job.meta["choices"] = {"workload": "mnist_lenet5", "technique": "admm", "accelerator": accel}
        jobs.append(job)
    ordered = HarnessSweepHook().order(jobs)
    assert [j.idx for j in ordered] == [0, 2, 4, 1, 3, 5]
    assert [j.after.idx if j.after else None for j in ordered] == [None, None, None, 0, 2, 4]


def test_jobs_are_grouped_only_when_their_technique_result_is_cached():
    """technique_cache=false, or a technique that caches nothing (none), shares nothing
    between accelerators: no job is held back for another."""
    from omegaconf import OmegaConf

    from harness.launcher.harness_hook import HarnessSweepHook
    from harness.launcher.hooks import Job

    def jobs(technique: str, cache: bool) -> list:
        out = []
        for i, accel in enumerate(("exact", "ds_cim", "exact", "ds_cim")):
            cfg = OmegaConf.create({"seed": i // 2, "technique_cache": cache, "workload": {"epochs": 1},
                                    "technique": {"ratio": 10} if technique == "admm" else {}, "accelerator": {}})
            job = Job(idx=i, overrides=[f"seed={i // 2}", f"accelerator={accel}"], config=cfg)
            job.meta["choices"] = {"workload": "mnist_lenet5", "technique": technique, "accelerator": accel}
            out.append(job)
        return out

    cached = HarnessSweepHook().order(jobs("admm", True))
    assert [(j.idx, j.after.idx if j.after else None) for j in cached] == [(0, None), (2, None), (1, 0), (3, 2)]
    for technique, cache in (("admm", False), ("none", True)):
        ordered = HarnessSweepHook().order(jobs(technique, cache))
        assert [(j.idx, j.after) for j in ordered] == [(0, None), (1, None), (2, None), (3, None)], (technique, cache)
