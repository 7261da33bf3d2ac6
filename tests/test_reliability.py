"""Issue 12: clean errors, the store first, nothing computed lost, no hangs.

Every case runs ``harness`` as a user would (a subprocess) and checks: a non-zero exit,
one or two lines naming the input, no traceback without ``--verbose``, bounded time, and
no RUNNING run or Ray session left behind.

A read-only store as root: root writes through file modes (CAP_DAC_OVERRIDE), so the
harness subprocesses of the read-only cases drop that capability from their bounding set
(:func:`_as_plain_user`) and the modes apply to them as to any user.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import harness_env, mlflow_runs, run_harness


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _errors(result) -> list[str]:
    """stderr lines that are not Hydra's or MLflow's log lines."""
    return [
        line for line in result.stderr.splitlines()
        if line.strip() and not line.startswith("[20") and " INFO " not in line and not line.startswith("20")
    ]


def _clean(result, *needles: str, max_lines: int = 2) -> str:
    lines = _errors(result)
    text = "\n".join(lines)
    assert result.returncode not in (0, None), result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert 1 <= len(lines) <= max_lines, text
    for needle in needles:
        assert needle in text, text
    return text


def _no_running_runs(db: Path, experiment: str = "harness") -> None:
    if db.exists():
        assert not [r for r in mlflow_runs(db, experiment) if r.info.status == "RUNNING"]


_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _PR_CAPBSET_DROP = 1, 2, 24


def _as_plain_user():
    """preexec_fn: as root, drop the capabilities that ignore file modes."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _plain(args, cwd, env, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, preexec_fn=_as_plain_user,
    )


# --------------------------------------------------------------------------- the command line


def test_no_arguments_prints_usage_and_exits_2(workdir):
    result = run_harness([], workdir)
    assert result.returncode == 2 and "usage: harness" in result.stderr and not result.stdout


def test_disabling_an_unknown_plugin_warns_with_the_valid_names(workdir):
    result = run_harness(["plugins"], workdir, harness_env(workdir, HARNESS_DISABLE_PLUGINS="nope_plugin"))
    assert result.returncode == 0
    (line,) = [x for x in result.stderr.splitlines() if "nope_plugin" in x]
    assert "not an installed plugin" in line and "valid names:" in line and "dot_products" in line


@pytest.mark.parametrize(
    "args, needles",
    [
        (["+workload.bogus=1"], ["bogus"]),
        (["seed=-1"], ["seed=-1", "valid is an integer >= 0"]),
        (["workload.count=99999999999999999999"], ["workload.count=99999999999999999999", "<= 67108864"]),
        (["workload.count="], ["workload.count="]),
        (["-m", "seed=range(0)"], ["seed=range(0)", "no values"]),
    ],
    ids=["unknown-key-with-plus", "negative-seed", "huge-integer", "empty-value", "empty-sweep-range"],
)
def test_user_errors_are_one_or_two_lines_naming_the_input(workdir, args, needles):
    result = run_harness(["run", *args], workdir)
    _clean(result, *needles)
    _no_running_runs(workdir / "mlflow.db")


def test_verbose_and_hydra_full_error_show_the_traceback(workdir):
    result = run_harness(["run", "--verbose", "seed=-1"], workdir)
    assert result.returncode == 2 and "Traceback" in result.stderr and "harness: seed=-1" in result.stderr
    result = run_harness(["run", "seed=-1"], workdir, harness_env(workdir, HYDRA_FULL_ERROR="1"))
    assert result.returncode == 2 and "Traceback" in result.stderr


# --------------------------------------------------------------------------- the store first


@pytest.mark.parametrize("case", ["corrupt", "read-only", "unknown-scheme", "server-down"])
def test_a_bad_store_fails_in_seconds_naming_it(workdir, case):
    env = harness_env(workdir)
    db = workdir / "mlflow.db"
    if case == "corrupt":
        db.write_bytes(b"this is not a database\n" * 10)
        needles = [str(db), "not an SQLite database", "move it aside"]
    elif case == "read-only":
        store = workdir / "store"
        store.mkdir()
        assert run_harness(["run", "workload.count=64"], workdir, harness_env(workdir, MLFLOW_TRACKING_URI=f"sqlite:///{store}/mlflow.db")).returncode == 0
        (store / "mlflow.db").chmod(0o444)
        store.chmod(0o555)
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
        needles = [str(store / "mlflow.db"), "read-only", "writable"]
    elif case == "unknown-scheme":
        env["MLFLOW_TRACKING_URI"] = "garbage"
        needles = ["'garbage'", "MLFLOW_TRACKING_URI", "unknown URI scheme"]
    else:
        port = _closed_port()
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
        needles = [f"127.0.0.1:{port}", "no MLflow server answers", "mlflow server"]
    started = time.monotonic()
    try:
        result = _plain(["run", "workload.count=64"], workdir, env, timeout=120)
    finally:
        for path in (workdir / "store", workdir / "store" / "mlflow.db"):
            if path.exists():
                path.chmod(0o755 if path.is_dir() else 0o644)
    elapsed = time.monotonic() - started
    _clean(result, *needles, max_lines=1)
    assert elapsed < 60, f"took {elapsed:.0f} s"  # MLflow alone: ~107 s for a read-only store
    if case != "read-only":  # (its first, good run may have made the cache)
        assert not (workdir / ".harness_cache").exists(), "nothing may run before the store is checked"


def test_a_sweep_checks_the_store_before_ray_starts(workdir, tmp_path):
    (workdir / "mlflow.db").write_bytes(b"garbage")
    ray_dir = tmp_path / "ray"
    result = run_harness(["run", "-m", "seed=0,1", "workload.count=64", f"hydra.launcher.temp_dir={ray_dir}"], workdir)
    _clean(result, str(workdir / "mlflow.db"), "not an SQLite database", max_lines=1)
    assert not ray_dir.exists(), "Ray was started although the store is unusable"


# --------------------------------------------------------------------------- nothing computed is lost


def test_a_record_the_store_refuses_after_the_run_is_kept_and_written_by_the_next_run(workdir):
    """Acceptance: the store's folder and file become read-only while the run trains
    (after the store check, once the model's cache lock exists); the record is kept
    under .harness_cache/pending_records and the next ``harness run`` writes it."""
    store = workdir / "store"
    store.mkdir()
    env = harness_env(workdir, MLFLOW_TRACKING_URI=f"sqlite:///{store}/mlflow.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "workload=digits_mlp"], cwd=workdir, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_plain_user,
    )
    try:
        deadline = time.monotonic() + 240
        while not glob.glob(str(workdir / ".harness_cache" / "**" / "*.lock"), recursive=True):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.05)
        (store / "mlflow.db").chmod(0o444)  # training now: the store turns read-only
        store.chmod(0o555)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        store.chmod(0o755)
        (store / "mlflow.db").chmod(0o644)
    assert proc.returncode == 1, out[-2000:] + err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    (pending,) = list((workdir / ".harness_cache" / "pending_records").glob("*.pkl"))
    assert str(pending) in err and "harness flush" in err
    assert mlflow_runs(store / "mlflow.db") == [], "nothing may be half-written"
    kept = pickle.loads(pending.read_bytes()).record
    assert kept.status == "FINISHED" and "eval/accuracy" in kept.metrics

    # The store works again: the next run writes the kept record first.
    result = run_harness(["run", "workload.count=64"], workdir, env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote pending record" in result.stderr and not pending.exists()
    runs = {r.data.tags.get("harness.workload"): r for r in mlflow_runs(store / "mlflow.db")}
    run = runs["digits_mlp"]
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) == set(kept.metrics) | set(kept.series)  # every metric, every curve
    assert {k: run.data.metrics[k] for k in kept.metrics} == pytest.approx(kept.metrics)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    for name, points in kept.series.items():
        assert len(client.get_metric_history(run.info.run_id, name)) == len(points)
    assert {k: str(v) for k, v in kept.params.items()} == run.data.params
    _no_running_runs(store / "mlflow.db")


def test_flush_writes_pending_records_once(workdir):
    from harness.record import FINISHED, Record
    from harness.store import PendingRecord, flush_pending, keep_pending

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    record = Record(status=FINISHED, start_ms=1, end_ms=2)
    record.metrics["m"] = 1.5
    record.params["seed"] = "0"
    record.tags["harness.config_hash"] = "abc"
    path = keep_pending(workdir / "cache", PendingRecord(record, "kept", uri, "harness", error="store down"))
    assert path.parent == workdir / "cache" / "pending_records" and path.name.startswith("abc-")
    assert not list(path.parent.glob(".pending-*")), "written atomically, no temporary file left"
    copy = path.read_bytes()
    result = run_harness(["flush", "--cache-dir", "cache"], workdir)
    assert result.returncode == 0 and "1 pending record(s) written" in result.stdout, result.stdout + result.stderr
    path.write_bytes(copy)  # as if a flush died after writing but before removing the file
    assert flush_pending(workdir / "cache") == (1, 0)
    (run,) = mlflow_runs(workdir / "mlflow.db")
    assert run.info.status == "FINISHED" and run.data.metrics == {"m": 1.5}


# --------------------------------------------------------------------------- no hangs


def test_ctrl_c_stops_a_single_run_within_seconds_and_records_it_killed(workdir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "workload=mnist_lenet5"], cwd=workdir, env=harness_env(workdir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not glob.glob(str(workdir / ".harness_cache" / "**" / "*.lock"), recursive=True):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert elapsed < 15, f"took {elapsed:.1f} s to stop"
    assert "Traceback" not in err and "interrupted" in err and "recorded as KILLED" in err, err[-2000:]
    _no_running_runs(workdir / "mlflow.db")
    (run,) = mlflow_runs(workdir / "mlflow.db")  # the interrupted run, KILLED, never mistaken for complete
    assert run.info.status == "KILLED" and run.data.params["workload"] == "mnist_lenet5"
    assert run.data.tags["harness.failed_stage"] == "workload 'mnist_lenet5' build"  # it was training


def test_an_unreachable_cluster_fails_in_bounded_time(workdir, tmp_path):
    port = _closed_port()
    ray_dir = tmp_path / "ray"
    started = time.monotonic()
    result = run_harness(
        ["run", "-m", "seed=0,1", "workload.count=64", f"hydra.launcher.address=127.0.0.1:{port}",
         "hydra.launcher.connect_timeout_s=2", f"hydra.launcher.temp_dir={ray_dir}"],
        workdir, timeout=120,
    )
    elapsed = time.monotonic() - started
    _clean(result, f"hydra.launcher.address=127.0.0.1:{port}", "nothing answers", "connect_timeout_s", max_lines=1)
    assert elapsed < 60
    assert not (workdir / "mlflow.db").exists(), "no parent run is created for a sweep that cannot start"
    assert not ray_dir.exists()


def test_ui_refuses_a_port_it_cannot_use(workdir):
    result = run_harness(["ui", "--port", "99999"], workdir, timeout=30)
    assert result.returncode == 2 and "--port 99999" in result.stderr and "1-65535" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_harness(["ui", "--port", str(port)], workdir, timeout=30)
    assert result.returncode == 2 and f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr
    assert time.monotonic() - started < 10


def test_ui_prints_a_runs_link_per_experiment(workdir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    ids = {name: client.create_experiment(name) for name in ("alpha", "beta")}
    port = _closed_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "harness", "ui", "--port", str(port)], cwd=workdir, env=harness_env(workdir),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 120
        while len([x for x in lines if "#/experiments/" in x]) < 3 and time.monotonic() < deadline:
            line = ui.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
    for name, exp_id in ids.items():
        link = f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
        assert f"{name}: {link}" in lines, lines


def test_a_sqlite_stores_artifacts_go_beside_it_not_under_the_working_folder(tmp_path, monkeypatch):
    """MLflow puts a new experiment's artifacts under ``./mlruns`` of whichever process
    creates it; the harness puts them beside the sqlite file, wherever it runs from."""
    from harness.record import Record
    from harness.tracking import MlflowTracker

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = tmp_path / "store"
    store.mkdir()
    tracker = MlflowTracker(f"sqlite:///{store / 'mlflow.db'}", "artifacts_here")
    record = Record(start_ms=1000, end_ms=2000)
    record.params["seed"] = "0"
    record.artifacts["config.yaml"] = b"a: 1\n"
    run_id = tracker.write(record, "r")
    written = list((store / "mlruns").rglob("config.yaml"))
    assert [p.read_bytes() for p in written] == [b"a: 1\n"] and run_id in str(written[0])
    assert not (elsewhere / "mlruns").exists()


def test_only_the_interrupts_own_noise_is_hidden_at_exit():
    """After Ctrl-C, an unraisable exception is hidden only if the interrupt caused it: the
    ignored KeyboardInterrupt, or llvmlite's finalizer on a compiler object Ctrl-C left
    half-built (seen when the signal lands in a numba compile). Anything else is shown."""
    from types import SimpleNamespace

    from llvmlite.binding.ffi import ObjectRef

    from harness.cli import _interrupt_noise

    half_built = SimpleNamespace(exc_value=AttributeError("'PassBuilder' object has no attribute '_as_parameter_'"),
                                 object=ObjectRef.__del__)
    assert _interrupt_noise(SimpleNamespace(exc_value=KeyboardInterrupt(), object=None), interrupted=False)
    assert _interrupt_noise(half_built, interrupted=True)
    assert not _interrupt_noise(half_built, interrupted=False)  # without Ctrl-C it is a real bug: shown
    assert not _interrupt_noise(SimpleNamespace(exc_value=AttributeError("x"), object=test_an_unreachable_cluster_fails_in_bounded_time),
                                interrupted=True)
    assert not _interrupt_noise(SimpleNamespace(exc_value=ValueError("x"), object=ObjectRef.__del__), interrupted=True)
