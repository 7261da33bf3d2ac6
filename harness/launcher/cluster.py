"""Ray's lifecycle for one launch: a private local Ray, or a cluster joined by address.

The private Ray listens on 127.0.0.1 only, starts only Ray's minimal dashboard
head (``include_dashboard=False``: no UI), no autoscaler monitor and no log monitor
unless ``log_to_driver`` (:func:`_lean_head`), sends no usage stats and writes no auth
token into the home folder; its session folder is a
fresh temporary folder removed at the end. ``address="local"`` makes sure a
``RAY_ADDRESS`` or a cluster recorded by ``ray start`` is never joined by
accident. Joining a cluster passes no ``num_cpus``/``object_store_memory`` (Ray
refuses them then) and leaves the cluster running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from typing import Iterator, Optional

from harness.launcher.config import HarnessRayLauncherConf

__all__ = ["LOCAL_RAY_ENV", "Cluster", "ClusterUnreachable"]


class ClusterUnreachable(ConnectionError):
    """``hydra.launcher.address`` does not answer; the message names it and what to do."""

#: Environment of a private local Ray (see shared/STACK.md): loopback-only
#: listeners, no token under the home folder, no usage reporting.
LOCAL_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def _force_loopback() -> None:
    """Make a local Ray bind 127.0.0.1 even if ray was imported before our env was set.

    ``ray_constants.ENABLE_RAY_CLUSTER`` is what the env variable sets at import
    time; tests/test_launcher_loopback.py checks the listeners, so a Ray upgrade
    that moves it fails loudly instead of silently listening on all interfaces.
    """
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


@contextlib.contextmanager
def _lean_head(log_monitor: bool) -> Iterator[None]:
    """While ``ray.init`` starts a private head: leave out two processes it never uses.

    * the autoscaler monitor: a private one-node Ray never scales;
    * the log monitor, unless ``log_to_driver``: it only forwards the workers' output
      to the driver.

    ``ray start`` has switches for both (``--no-monitor``, ``--include-log-monitor``);
    ``ray.init`` has none, so the two ``RayParams`` fields it leaves unset are set
    here. Measured with Ray 2.60 on 2 cores: ``ray.shutdown`` 1.37 s -> 0.10 s (the
    monitor alone took ~1 s to stop), and ~1.1 s less CPU competing with the
    start. The fields are private API: tests/test_launcher.py checks that the
    processes are absent, so a Ray upgrade that renames them fails loudly.
    """
    from ray._private import parameter

    original = parameter.RayParams.__init__

    def init(self, *args, **kwargs):
        kwargs.setdefault("no_monitor", True)
        kwargs.setdefault("include_log_monitor", log_monitor)
        original(self, *args, **kwargs)

    parameter.RayParams.__init__ = init
    try:
        yield
    finally:
        parameter.RayParams.__init__ = original


#: What Ray adds below the temp root for its longest unix socket path.
_RAY_SOCKET_TAIL = "/harness-ray-xxxxxxxx/session_2026-12-01_17-49-43_914989_4194304/sockets/plasma_store"


def _short_temp_root() -> str:
    """The system temp folder, unless too long for Ray's unix sockets (107 bytes)."""
    root = tempfile.gettempdir()
    return root if len(root) + len(_RAY_SOCKET_TAIL) <= 107 else "/tmp"


def _remove_tree(path: str, patience: float = 5.0) -> None:
    """Remove Ray's session folder; its exiting processes may still write logs into it."""
    deadline = time.monotonic() + patience
    while True:
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(0.3)
        if not os.path.exists(path) or time.monotonic() > deadline:
            return


#: The cluster this process joined by address and stays connected to: a sweeper
#: that launches several batches reuses the connection, and with it Ray's warm
#: worker processes (Ray's workers belong to one driver connection).
_joined = {"address": None}


class Cluster:
    """Where a launch runs its jobs: :meth:`start` connects, :meth:`stop` undoes it.

    A private Ray is stopped at the end of every launch; a joined cluster stays
    connected until the process exits or a launch asks for another address.
    """

    def __init__(self, opts: HarnessRayLauncherConf):
        self.opts = opts
        self.ray = None
        self.started_here = False  # we called ray.init (so we call ray.shutdown)
        self.address = ""
        self._made_temp: Optional[str] = None
        self.kept = ""  # keep_ray: "started" or "reused"
        self.env: dict = {}  # the jobs' environment, for a (re)start of the private Ray
        self.node_env: Optional[dict] = None  # the environment the node's workers have

    @property
    def local(self) -> bool:
        return self.opts.address is None

    def _target(self) -> Optional[tuple[str, int]]:
        """``(host, port)`` that must answer for ``address`` to be joined, if known."""
        address = str(self.opts.address).strip()
        if address == "auto":  # as Ray resolves it: RAY_ADDRESS, `ray start`'s record, a local GCS process
            from ray._private.services import canonicalize_bootstrap_address

            try:
                address = canonicalize_bootstrap_address("auto") or ""
            except ConnectionError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no running Ray instance"
                raise ClusterUnreachable(
                    f"hydra.launcher.address=auto: {first}; start one (ray start --head) or give HOST:PORT"
                ) from None
            if not address:
                return None
        if address.startswith("ray://"):
            address = address[len("ray://"):]
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ClusterUnreachable(
                f"hydra.launcher.address={self.opts.address}: not HOST:PORT, ray://HOST:PORT or auto"
            )
        return host.strip("[]"), int(port)

    def preflight(self) -> None:
        """Joining a cluster: wait at most ``connect_timeout_s`` for its address to accept
        a TCP connection, else raise :class:`ClusterUnreachable` (before the store is
        touched or Ray is imported). A private Ray needs nothing."""
        if self.local:
            return
        target = self._target()
        if target is None:
            return
        import socket

        timeout = float(self.opts.connect_timeout_s)
        deadline = time.monotonic() + timeout
        reason = "timed out"
        while True:
            left = deadline - time.monotonic()
            try:
                with socket.create_connection(target, timeout=max(0.1, min(left, 5.0))):
                    return
            except OSError as exc:
                reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
            if time.monotonic() + 0.5 >= deadline:
                break
            time.sleep(0.5)
        raise ClusterUnreachable(
            f"hydra.launcher.address={self.opts.address}: nothing answers at {target[0]}:{target[1]} "
            f"({reason}; waited {timeout:g} s, hydra.launcher.connect_timeout_s); start the cluster "
            "(ray start --head) or fix the address; without an address the sweep runs on a private local Ray"
        )

    def start(self, env: Optional[dict] = None):
        """Connect (starting a private Ray if no address) and return the ray module.

        ``env``: the jobs' environment. A private Ray started here gets it in its own
        environment, so the worker processes it starts with the node serve the jobs
        as they are (``node_env``), instead of new ones started per runtime_env.
        """
        if env is not None:
            self.env = dict(env)
        if self.local:
            # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when first imported.
            os.environ.update(LOCAL_RAY_ENV)
        import ray

        self.ray = ray
        if ray.is_initialized() and _joined["address"] is not None and _joined["address"] != self.opts.address:
            ray.shutdown()  # joined elsewhere by an earlier launch
            _joined["address"] = None
        if not ray.is_initialized():
            if self.local:
                self._start_private(ray)
                self.started_here = True
            else:
                self.preflight()
                try:
                    ray.init(address=self.opts.address, log_to_driver=self.opts.log_to_driver, logging_level=logging.WARNING)
                except ConnectionError as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise ClusterUnreachable(f"hydra.launcher.address={self.opts.address}: {first}") from exc
                _joined["address"] = self.opts.address
        try:
            self.address = ray.get_runtime_context().gcs_address
        except Exception:  # Ray Client connections do not expose it
            self.address = str(self.opts.address)
        return ray

    def _start_private(self, ray) -> None:
        _force_loopback()
        if self.opts.keep_ray:
            self._join_kept(ray)
            return
        temp_dir = self.opts.temp_dir or tempfile.mkdtemp(prefix="harness-ray-", dir=_short_temp_root())
        self._made_temp = None if self.opts.temp_dir else temp_dir
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # inherited by the raylet and the workers it starts
        try:
            with _lean_head(log_monitor=self.opts.log_to_driver):
                ray.init(
                    address="local",
                    num_cpus=self.opts.num_cpus or os.cpu_count() or 1,
                    object_store_memory=self.opts.object_store_memory,
                    include_dashboard=False,
                    _temp_dir=temp_dir,
                    log_to_driver=self.opts.log_to_driver,
                    logging_level=logging.WARNING,
                )
            self.node_env = dict(self.env)
        except BaseException:
            self.stop()
            raise
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _join_kept(self, ray) -> None:
        """``keep_ray``: join the private Ray an earlier sweep left running, or start one
        that outlives this sweep (:mod:`harness.launcher.kept_ray`)."""
        from harness.launcher import kept_ray

        info = kept_ray.running()
        if info is None:
            kept_ray.stop()  # a stale record (or a dead head's session folder)
            info = kept_ray.start(
                self.opts.num_cpus or os.cpu_count() or 1, self.opts.object_store_memory, LOCAL_RAY_ENV,
                _short_temp_root(),
            )
            self.kept = "started"
        else:
            self.kept = "reused"
        ray.init(address=info["address"], log_to_driver=self.opts.log_to_driver, logging_level=logging.WARNING)

    def node_alive(self) -> bool:
        """False once the private Ray's raylet process has exited (always True when
        joined to a cluster: there a node's death is Ray's to handle, by retries)."""
        if not (self.local and self.started_here) or self.kept:
            return True  # a kept Ray's raylet is not this process's child: Ray reports its loss
        try:
            from ray._private import ray_constants
            from ray._private.worker import _global_node

            infos = _global_node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, [])
        except Exception:  # a Ray upgrade moved these: tests/test_reliability.py fails loudly
            return True
        return all(info.process.poll() is None for info in infos)

    def restart(self):
        """The private Ray after its node died: shut down what is left, start afresh."""
        self.stop()
        return self.start()

    def capacity(self) -> int:
        """Jobs that can run at once with ``cpus_per_job`` each."""
        cpus = float(self.ray.cluster_resources().get("CPU", 0.0))
        return max(1, int(cpus // self.opts.cpus_per_job))

    def stop(self) -> None:
        if self.ray is not None and self.started_here:
            self.ray.shutdown()
            self.started_here = False
        self.node_env = None
        if self._made_temp:
            _remove_tree(self._made_temp)
            self._made_temp = None
