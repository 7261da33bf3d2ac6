"""A new user's path: a sweep lands in MLflow, and `harness ui` serves it over REST."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import harness_env, mlflow_runs, run_harness


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_sweep_runs_are_served_by_harness_ui(workdir):
    result = run_harness(["run", "-m", "+experiment=quickstart", "workload.count=64"], workdir, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = [r for r in mlflow_runs(workdir / "mlflow.db", "quickstart") if "harness.config_hash" in r.data.tags]
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)

    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "harness", "ui", "--port", str(port)],
        cwd=workdir,
        env=harness_env(workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        deadline = time.time() + 90
        while True:
            try:
                experiments = _post(f"{base}/experiments/search", {"max_results": 100})
                break
            except OSError:
                assert ui.poll() is None, ui.stdout.read().decode()[-3000:]
                assert time.time() < deadline, "harness ui did not answer within 90 s"
                time.sleep(1)
        (exp,) = [e for e in experiments["experiments"] if e["name"] == "quickstart"]
        found = _post(f"{base}/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})
        finished = [
            r for r in found["runs"]
            if r["info"]["status"] == "FINISHED" and any(t["key"] == "harness.config_hash" for t in r["data"].get("tags", []))
        ]
        assert len(finished) == 4
        # It listens on loopback only.
        listeners = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout if os.path.exists("/usr/bin/ss") or os.path.exists("/bin/ss") else ""
        for line in listeners.splitlines():
            if f":{port} " in line:
                assert "127.0.0.1:" in line, line
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()
