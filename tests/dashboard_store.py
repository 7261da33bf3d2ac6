"""A small sweep written into a tmp MLflow store through the harness's own tracker.

The records look like those a ``ds_cim_accuracy`` sweep writes (same params, metric
names, tags and parent run), with made-up numbers, so dashboard tests run in a
second instead of training LeNet-5.
"""

from __future__ import annotations

from pathlib import Path

from harness.record import Record

ACCURACY = {("ds_cim1", 64): 0.898, ("ds_cim1", 128): 0.962, ("ds_cim1", 256): 0.976,
            ("ds_cim2", 64): 0.10, ("ds_cim2", 128): 0.11, ("ds_cim2", 256): 0.09}
SWEEP_ID = "0123456789abcdef"


def write_ds_cim_sweep(root: Path, experiment: str = "ds_cim_accuracy", failed: bool = True) -> tuple[str, str]:
    """``(tracking_uri, parent_run_id)`` of a 6-run sweep (plus one FAILED run)."""
    from harness.tracking import MlflowTracker

    uri = f"sqlite:///{root / 'mlflow.db'}"
    _experiment_in(root, uri, experiment)
    tracker = MlflowTracker(uri, experiment)
    parent = tracker.create_run("sweep-01234567", tags={
        "harness.sweep_id": SWEEP_ID, "harness.sweep_parent": "true",
        "harness.sweep_overrides": "+experiment=ds_cim_accuracy"})
    jobs = sorted(ACCURACY.items())
    if failed:
        jobs.append((("ds_cim1", 512), None))
    for (variant, length), acc in jobs:
        r = Record(start_ms=1_000 + length, end_ms=2_000 + length)
        r.params.update({"workload": "mnist_lenet5", "technique": "none", "accelerator": "ds_cim", "seed": "0",
                         "workload.quant_bits": "8", "accelerator.variant": variant,
                         "accelerator.stream_length": str(length), "accelerator.scheme": "exclusive"})
        r.tags.update({"harness.sweep_id": SWEEP_ID, "harness.config_hash": f"{variant}{length}"})
        if acc is None:
            r.status, r.error = "FAILED", "simulated failure"
        else:
            r.metrics.update({"eval/accuracy": acc, "eval/accuracy_exact": 0.983,
                              "accelerator/energy_pj": 2e4 * length / 64, "accelerator/tops_per_w": 3000.0 + length,
                              "accelerator/peak_tops_per_w": 3566.1 if variant == "ds_cim2" else 1800.0})
            r.series["train/loss"] = [(e, 2.0 / (e + 1)) for e in range(5)]
        tracker.write(r, f"{variant}-L{length}", parent_run_id=parent)
    tracker.client.set_terminated(parent, "FINISHED")
    return uri, parent


def _experiment_in(root: Path, uri: str, name: str) -> None:
    """Create ``name`` with its artifacts under ``root`` (MLflow's default is ./mlruns of the cwd)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=(root / "artifacts").as_uri())
