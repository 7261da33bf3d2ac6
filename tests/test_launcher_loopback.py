"""Everything the harness starts listens on loopback only: the private Ray of a sweep,
``harness ui`` and the MLflow server the tests start.

Listening sockets are read from /proc (no `ss` needed): every LISTEN socket owned
by a process of the sweep's session must be bound to 127.0.0.1 or ::ffff:127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import harness_env

LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _listening_inodes() -> dict[str, str]:
    """{socket inode: local address hex} of LISTEN TCP sockets."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                found[fields[9]] = fields[1].split(":")[0]
    return found


def _listening_ports_of(pids: list[int]) -> set[int]:
    """TCP ports the processes ``pids`` listen on."""
    ports = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                ports[fields[9]] = int(fields[1].split(":")[1], 16)
    found = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in ports:
                    found.add(ports[target[8:-1]])
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            pass
    return found


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def _listeners_of(pids: list[int]) -> list[tuple[int, str]]:
    inodes = _listening_inodes()
    out = []
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inode = target[8:-1]
                    if inode in inodes:
                        out.append((pid, inodes[inode]))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            pass
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_local_sweep_ray_listens_on_loopback_only(workdir):
    sweep = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "-m", "workload.count=30000", "workload.length=512", "seed=0,1,2,3"],
        cwd=workdir, env=harness_env(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        listeners: list[tuple[int, str]] = []
        deadline = time.time() + 120
        # Wait until Ray's servers (gcs_server, raylet, workers) are up and listening.
        while time.time() < deadline and sweep.poll() is None:
            listeners = _listeners_of(_session_pids(sweep.pid))
            if len({pid for pid, _ in listeners}) >= 3:
                break
            time.sleep(0.5)
        assert len({pid for pid, _ in listeners}) >= 3, "the sweep's Ray never came up"
        exposed = [(pid, addr) for pid, addr in listeners if addr not in LOOPBACK]
        assert not exposed, f"Ray processes listen beyond loopback: {exposed}"
        assert sweep.wait(timeout=300) == 0, sweep.stdout.read().decode()[-3000:]
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()


def _wait_for_listeners(pid: int, count: int, proc: subprocess.Popen, timeout: float = 120) -> list[tuple[int, str]]:
    listeners: list[tuple[int, str]] = []
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        listeners = _listeners_of(_session_pids(pid))
        if len(listeners) >= count:
            return listeners
        time.sleep(0.5)
    return listeners


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_harness_ui_listens_on_loopback_only(workdir):
    from mlflow_server import free_port

    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "harness", "ui", "--port", str(port)], cwd=workdir, env=harness_env(workdir),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        listeners = _wait_for_listeners(ui.pid, 1, ui)
        assert listeners, f"harness ui never listened: {ui.poll()}"
        assert port in _listening_ports_of(_session_pids(ui.pid))
        exposed = [(pid, addr) for pid, addr in listeners if addr not in LOOPBACK]
        assert not exposed, f"harness ui listens beyond loopback: {exposed}"
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_the_tests_mlflow_server_listens_on_loopback_only(tmp_path):
    from mlflow_server import MlflowServer

    with MlflowServer(tmp_path / "server") as server:
        listeners = _listeners_of(_session_pids(server.proc.pid))
        assert listeners, "the server answered /health but no listening socket was found"
        assert server.port in _listening_ports_of(_session_pids(server.proc.pid))
        exposed = [(pid, addr) for pid, addr in listeners if addr not in LOOPBACK]
        assert not exposed, f"mlflow server listens beyond loopback: {exposed}"
    assert not server.pids()
