"""A private Ray that outlives its sweep: ``hydra.launcher.keep_ray=true``.

Ray's start-up (3-7 s here, more under load) dominates short sweeps. With
``keep_ray`` the launcher starts the private Ray as its own process group
(``ray start --head --block``, on 127.0.0.1 only, with the same settings as the
in-process private Ray), leaves it running after the sweep, and records it in
``<temp dir>/harness-ray-<uid>.json`` (its GCS address, the process group id, its
session folder). A later sweep with ``keep_ray=true`` joins it if that process
is still alive and its address answers, and otherwise starts a new one.
``harness ray-stop`` stops it by its process group id (never ``ray stop``, which is
machine-wide) and removes its session folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

__all__ = ["group_alive", "record_path", "running", "start", "stop"]

#: Seconds a new head gets to answer on its GCS port.
START_TIMEOUT_S = 90.0


def record_path() -> Path:
    """Where the kept Ray of this user is recorded."""
    return Path(tempfile.gettempdir()) / f"harness-ray-{os.getuid()}.json"


def _read() -> Optional[dict]:
    try:
        return json.loads(record_path().read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process reuses the id
        return False
    return True


def _answers(address: str, timeout: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def running() -> Optional[dict]:
    """The kept Ray's record if its process group leader lives and its address answers."""
    info = _read()
    if not info or not _alive(int(info.get("pid", 0) or 0)):
        return None
    return info if _answers(str(info.get("address", ""))) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(num_cpus: int, object_store_memory: Optional[int], env: dict, temp_root: str) -> dict:
    """Start a head on 127.0.0.1 in its own process group, record it, return the record."""
    temp_dir = tempfile.mkdtemp(prefix="harness-ray-kept-", dir=temp_root)
    port = _free_port()
    ray_cli = Path(sys.executable).parent / "ray"
    cmd = [str(ray_cli)] if ray_cli.exists() else [sys.executable, "-m", "ray.scripts.scripts"]
    cmd += [
        "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={num_cpus}",
        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
        "--no-monitor",  # no autoscaler: a one-node private Ray never scales (see cluster._lean_head)
    ]
    if object_store_memory:
        cmd.append(f"--object-store-memory={int(object_store_memory)}")
    log = open(os.path.join(temp_dir, "head.log"), "wb")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **env},
        start_new_session=True,  # its own process group: stopped by id, survives this process
    )
    log.close()
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(address, timeout=1.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill_group(proc.pid)
            tail = Path(temp_dir, "head.log").read_text(errors="replace")[-1500:]
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise RuntimeError(f"hydra.launcher.keep_ray: the Ray head did not start on {address}:\n{tail}")
        time.sleep(0.3)
    info = {"address": address, "pid": proc.pid, "temp_dir": temp_dir, "num_cpus": num_cpus, "started": time.time()}
    tmp = record_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, record_path())
    return info


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs (zombies do not count: the kept Ray's
    processes outlive the sweep that started them, and their new parent may be slow to
    reap them)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: any member, zombie or not
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _kill_group(pgid: int, patience: float = 3.0) -> None:
    """SIGTERM the group, SIGKILL what is left after ``patience`` seconds, and return once
    it is gone. (Measured with Ray 2.60: after SIGTERM, `ray start --block` left its
    raylet, GCS, monitor and runtime-env agent running until the SIGKILL 15 s later,
    so a longer wait only made `harness ray-stop` take 15 s.)"""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    # SIGKILL is delivered, not yet done: return once the group is gone, so a caller
    # (and `harness ray-stop`, which exits right after) never leaves it running.
    deadline = time.monotonic() + 10.0
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


def stop() -> Optional[dict]:
    """Stop the kept Ray (its process group), remove its session folder and record;
    the record stopped, or None if there was none."""
    info = _read()
    if not info:
        return None
    pid = int(info.get("pid", 0) or 0)
    if pid > 0 and _alive(pid):
        _kill_group(pid)
    shutil.rmtree(str(info.get("temp_dir", "")), ignore_errors=True) if info.get("temp_dir") else None
    record_path().unlink(missing_ok=True)
    return info
