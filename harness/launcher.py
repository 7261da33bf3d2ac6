"""Hydra launcher that runs a multirun's jobs as Ray tasks, on this machine or a cluster.

Selected with ``hydra/launcher=ray`` (the default of ``harness run -m``); the thin
registration lives in ``hydra_plugins/harness_ray_launcher`` because Hydra only
instantiates launchers from that namespace. Options (``hydra.launcher.NAME=...``)
are the fields of :class:`RayLauncherConf`.

Design: the driver is the single writer
---------------------------------------
A worker runs :func:`harness.app.record_for` on the job's composed config and
*returns* the :class:`~harness.record.Record`; it never talks to MLflow. The
driver (the process that ran ``harness run -m``) writes every record, one at a
time, under one parent run per sweep. That makes "every job recorded exactly
once" true across machines without any shared filesystem or lock:

* Ray retries a task whose worker process or node died (``max_retries``); a
  retried task may have *executed* twice, but only one return value ever reaches
  the driver, and only the driver writes. A job that still cannot finish becomes
  one FAILED run saying so.
* A plugin that raises is already turned into a FAILED record (with
  ``traceback.txt``) by the runner, so one bad job never stops the others.
* Resume: before launching, the driver composes each job's config and computes
  its config hash (:func:`harness.app.config_hash_of`, the same code the runner
  uses). Jobs whose hash already has a FINISHED run in the experiment are
  skipped (``resume=true``, the default). If the driver itself is killed, the
  jobs it had not written yet have no FINISHED run, so rerunning the same command
  runs exactly those. A run the killed driver left half-written (RUNNING) under
  the sweep's parent is marked KILLED on resume, so it never looks complete.
* A driver stopped by Ctrl-C marks the parent KILLED; rerunning resumes.
* The parent run is identified by ``harness.sweep_id``, a hash of the sorted job
  config hashes: the same set of jobs is the same sweep however it was spelled
  on the command line. A resumed sweep reuses its parent (so one sweep keeps one
  parent with all its children); ``resume=false`` starts a new parent, because a
  forced rerun is a new instance of the sweep.

Side effects other than the record (files a plugin caches under ``cache_dir``)
may happen twice when a task is retried: plugins must write caches atomically,
as they already must for parallel jobs.

Local vs cluster
----------------
Without ``address`` the launcher starts a private Ray instance for the sweep:
loopback only, no dashboard, no usage stats, no auth token in the home folder,
session files in a fresh temporary folder that is removed afterwards, and it
shuts it down at the end. With ``address=auto`` (the cluster ``ray start``
recorded in Ray's temp folder, or ``RAY_ADDRESS``), ``HOST:PORT`` or
``ray://HOST:PORT`` it joins an existing cluster and leaves it running.

Each job gets ``cpus_per_job`` CPUs, and its numba/OpenMP thread counts follow
them (``NUMBA_NUM_THREADS``/``OMP_NUM_THREADS`` in the task's runtime env), so
parallel jobs do not oversubscribe the cores. ``NUMBA_CACHE_DIR`` points at
``numba_cache_dir`` so kernels compiled with ``cache=True`` are compiled once per
machine, not once per worker process; a worker that runs several jobs keeps its
kernels in memory as well.

Nothing here imports ray or mlflow at module level: Hydra imports this module
whenever it scans plugins, including for ``harness run --help``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

__all__ = ["Progress", "RayLauncherConf", "RayLauncherImpl", "SweepFailed", "sweep_id_of"]

log = logging.getLogger("harness.launcher")

#: Environment of a private local Ray instance (see shared/STACK.md): loopback-only
#: listeners, no token written under the home folder, no usage reporting.
LOCAL_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}

_SKIPPED = "SKIPPED"


def _force_loopback() -> None:
    """Make a local Ray bind 127.0.0.1 even if ray was imported before our env was set.

    ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` is what the env variable sets
    at import time, and Ray consults it when it picks the node address; a test
    (``tests/test_launcher_loopback.py``) checks the listeners, so a Ray upgrade
    that moves it fails loudly instead of silently listening on all interfaces.
    """
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


@dataclass
class RayLauncherConf:
    """Options of ``hydra/launcher=ray`` (set with ``hydra.launcher.NAME=VALUE``)."""

    _target_: str = "hydra_plugins.harness_ray_launcher.ray_launcher.RayLauncher"
    #: None: start a private Ray on this machine for the sweep. ``auto``: join the
    #: cluster ``ray start`` started (or ``RAY_ADDRESS``). ``HOST:PORT`` or
    #: ``ray://HOST:PORT``: join that cluster.
    address: Optional[str] = None
    #: CPUs each job reserves; its numba/OpenMP threads follow.
    cpus_per_job: float = 1.0
    #: At most this many jobs in flight (None: as many as the cluster's CPUs allow).
    max_concurrent: Optional[int] = None
    #: Times a job is retried after its worker process or node died.
    max_retries: int = 2
    #: Skip jobs whose config hash already has a FINISHED run in the experiment.
    resume: bool = True
    #: Local Ray only: CPUs of the private instance (None: all cores).
    num_cpus: Optional[int] = None
    #: Local Ray only: object store size in bytes (records are small).
    object_store_memory: Optional[int] = 256 * 1024 * 1024
    #: Local Ray only: session folder (None: a fresh temporary folder, removed at the end).
    temp_dir: Optional[str] = None
    #: Where workers cache compiled numba kernels (NUMBA_CACHE_DIR). Relative paths are
    #: relative to the working folder (the driver's, for a local Ray).
    numba_cache_dir: str = "${cache_dir}/numba"
    #: Extra environment variables for the jobs.
    env_vars: Dict[str, str] = field(default_factory=dict)
    #: Metrics shown in the printed summary and the parent's summary table
    #: (empty: up to four of the jobs' metrics, chosen automatically).
    summary_metrics: List[str] = field(default_factory=list)
    #: Show workers' stdout/stderr on the driver (off: keeps the progress line clean;
    #: failures are in each run's traceback.txt).
    log_to_driver: bool = False
    #: Live progress line (plain lines when stdout is not a terminal).
    progress: bool = True


def sweep_id_of(config_hashes: Sequence[str]) -> str:
    """A sweep's identity: the set of its jobs' config hashes (order and spelling free)."""
    blob = ",".join(sorted(set(config_hashes)))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """One live line on a terminal; plain lines (on each change, at most every
    ``interval`` s otherwise) when the output is a file or CI log."""

    def __init__(self, total: int, skipped: int, stream=None, enabled: bool = True, interval: float = 10.0):
        self.total, self.skipped = total, skipped
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self.start = time.monotonic()
        self.done = self.failed = self.running = 0
        self._last_line = ""
        self._last_print = 0.0

    def line(self) -> str:
        todo = self.total - self.skipped
        elapsed = time.monotonic() - self.start
        finished = self.done + self.failed
        if finished and finished < todo:
            left = f"~{_fmt_duration(elapsed / finished * (todo - finished))} left"
        elif finished >= todo:
            left = "0:00 left"
        else:
            left = "? left"
        extra = f", {self.skipped} skipped" if self.skipped else ""
        return (
            f"[ray] {finished}/{todo} done ({self.done} finished, {self.failed} failed{extra}), "
            f"{self.running} running | {_fmt_duration(elapsed)} elapsed, {left}"
        )

    def update(self, done: int, failed: int, running: int, force: bool = False) -> None:
        changed = (done, failed, running) != (self.done, self.failed, self.running)
        self.done, self.failed, self.running = done, failed, running
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if changed or force or now - self._last_print >= 1.0:
                line = self.line()
                pad = max(0, len(self._last_line) - len(line))
                self.stream.write("\r" + line + " " * pad)
                self.stream.flush()
                self._last_line, self._last_print = line, now
        elif changed or force or now - self._last_print >= self.interval:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_print = now

    def close(self) -> None:
        if self.enabled and self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()


class SweepFailed(SystemExit):
    """Ends ``harness run -m`` with status 1 once some job FAILED.

    Hydra's sweeper raises the first failed job's return value after all jobs
    ran; by then the summary has said what failed and where the tracebacks are,
    so this exits quietly instead of printing Hydra's own stack.
    """


@dataclass
class _Job:
    """One job of the sweep, as the driver sees it."""

    idx: int
    overrides: List[str]
    sweep_config: DictConfig  # composed, with the hydra node
    task_cfg: Dict[str, Any]  # resolved, hydra node removed: what the task function would get
    choices: Dict[str, str]
    config_hash: str = ""
    status: str = ""  # FINISHED, FAILED or SKIPPED once known
    run_id: str = ""
    note: str = ""
    metrics: Dict[str, float] = field(default_factory=dict)
    attempts_hint: int = 0


def _remote_run_job(task_cfg: Dict[str, Any], choices: Dict[str, str]):
    """What a Ray worker runs: one experiment, returned as a record (never written here)."""
    from harness.app import record_for

    return record_for(OmegaConf.create(task_cfg), dict(choices))


class RayLauncherImpl:
    """The launcher's logic; ``hydra_plugins.harness_ray_launcher`` wraps it as a Hydra plugin."""

    def __init__(self, **options: Any) -> None:
        known = {f for f in RayLauncherConf.__dataclass_fields__ if f != "_target_"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"hydra.launcher=ray: unknown option(s) {unknown}; valid: {sorted(known)}")
        self.opts = RayLauncherConf(**options)
        self._check_options()
        self.config: Optional[DictConfig] = None
        self.hydra_context = None
        self.task_function = None
        #: Timings of the last launch (seconds), also written as tags of the parent run.
        self.timings: Dict[str, float] = {}
        #: Where the last launch ran its jobs (tags of the parent run).
        self.cluster: Dict[str, str] = {}

    def _check_options(self) -> None:
        o = self.opts
        if not o.cpus_per_job or o.cpus_per_job <= 0:
            raise ValueError(f"hydra.launcher.cpus_per_job={o.cpus_per_job}: must be > 0 (for example 1 or 0.5)")
        if o.max_concurrent is not None and o.max_concurrent < 1:
            raise ValueError(f"hydra.launcher.max_concurrent={o.max_concurrent}: must be >= 1, or null for no cap")
        if o.max_retries < 0:
            raise ValueError(f"hydra.launcher.max_retries={o.max_retries}: must be >= 0")
        if o.address is not None and str(o.address).strip() == "":
            o.address = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        _reuse_validation_compositions(hydra_context.config_loader)

    # -- composing ----------------------------------------------------------
    def _compose(self, overrides: Sequence[str], idx: int) -> _Job:
        from hydra.core.hydra_config import HydraConfig

        from harness.specs import KINDS

        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        # Interpolations such as ${hydra:job.num} or ${now:...} resolve here, on the
        # driver, so workers receive plain values and need no Hydra state.
        HydraConfig.instance().set_config(sweep_config)
        # Key by key rather than a deep copy without the hydra node: composing is the
        # driver's main per-job cost, and copying the config doubled it.
        task_cfg = {}
        for key in sweep_config:
            if key != "hydra":
                value = sweep_config[key]
                task_cfg[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        runtime_choices = sweep_config.hydra.runtime.choices
        choices = {kind: str(runtime_choices[kind]) for kind in KINDS}
        return _Job(idx=idx, overrides=list(overrides), sweep_config=sweep_config, task_cfg=task_cfg, choices=choices)

    def _numba_cache_dir(self, local: bool) -> str:
        path = os.path.expanduser(str(self.opts.numba_cache_dir))
        # A local Ray's workers share the driver's working folder; on a cluster a
        # relative path is taken relative to each worker's.
        return str(Path(path).resolve()) if local else path

    # -- Ray ------------------------------------------------------------------
    def _start_ray(self):
        address = self.opts.address
        if address is None:
            # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when ray is first
            # imported; set after the import, Ray listens on every interface.
            for key, value in LOCAL_RAY_ENV.items():
                os.environ[key] = value
        import ray

        if ray.is_initialized():
            return ray, False, None
        if address is None:
            _force_loopback()
            temp_dir = self.opts.temp_dir or tempfile.mkdtemp(prefix="harness-ray-", dir=_short_temp_root())
            made_temp = None if self.opts.temp_dir else temp_dir
            try:
                # address="local" ignores RAY_ADDRESS and any cluster recorded by
                # `ray start`: this instance is private to the sweep.
                ray.init(
                    address="local",
                    num_cpus=self.opts.num_cpus or os.cpu_count() or 1,
                    object_store_memory=self.opts.object_store_memory,
                    include_dashboard=False,
                    _temp_dir=temp_dir,
                    log_to_driver=self.opts.log_to_driver,
                    logging_level=logging.WARNING,
                )
            except BaseException:
                if made_temp:
                    shutil.rmtree(made_temp, ignore_errors=True)
                raise
            return ray, True, made_temp
        # Joining an existing cluster: Ray refuses num_cpus/object_store_memory then.
        ray.init(address=address, log_to_driver=self.opts.log_to_driver, logging_level=logging.WARNING)
        return ray, True, None

    def _capacity(self, ray) -> int:
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        return max(1, int(cpus // self.opts.cpus_per_job))

    # -- the launch -------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
        from hydra.errors import CompactHydraException

        from harness.app import config_hash_of
        from harness.host import PluginError
        from harness.specs import CapabilityError
        from harness.tracking import MlflowTracker

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        t_start = time.monotonic()
        self.timings, self.cluster = {}, {}

        jobs = [self._compose(ov, initial_job_idx + i) for i, ov in enumerate(job_overrides)]
        destinations = {(str(j.task_cfg.get("tracking_uri") or ""), str(j.task_cfg["experiment_name"])) for j in jobs}
        if len(destinations) > 1:
            names = ", ".join(sorted(f"{e!r} at {u or 'default'}" for u, e in destinations))
            raise ValueError(
                f"hydra/launcher=ray: the jobs of one sweep must go to one MLflow experiment; got {names}. "
                "Run one sweep per experiment (tracking_uri / experiment_name)."
            )
        tracking_uri, experiment_name = destinations.pop()

        # Identity of every job, on the driver, before anything runs.
        first_of: Dict[str, _Job] = {}
        for job in jobs:
            try:
                job.config_hash = config_hash_of(OmegaConf.create(job.task_cfg), job.choices)
            except (CapabilityError, PluginError) as exc:  # plugins that cannot run together, or a broken
                # one: refuse the whole sweep here, before Ray starts, in one line (no traceback).
                raise CompactHydraException(f"harness: job #{job.idx} ({' '.join(job.overrides)}): {exc}") from exc
            except Exception as exc:  # a config the plugin rejects: the worker reports it
                job.note = f"config hash not computable: {exc}"
                continue
            if job.config_hash in first_of:
                job.status, job.note = _SKIPPED, f"same config as job #{first_of[job.config_hash].idx}"
            else:
                first_of[job.config_hash] = job
        sweep_id = sweep_id_of([j.config_hash for j in jobs if j.config_hash])

        t_hashed = time.monotonic()
        tracker = MlflowTracker(tracking_uri or None, experiment_name)
        if self.opts.resume:
            finished = tracker.finished_runs([j.config_hash for j in jobs if j.config_hash])
            for job in jobs:
                if not job.status and job.config_hash in finished:
                    job.status, job.run_id, job.note = _SKIPPED, finished[job.config_hash], "finished earlier"
        parent_id, reused = self._parent_run(tracker, sweep_id, jobs)
        todo = [j for j in jobs if not j.status]
        skipped = len(jobs) - len(todo)
        t_composed = time.monotonic()

        log.info(
            "Sweep %s: %d jobs, %d to run, %d skipped; parent run %s%s in experiment %r",
            sweep_id[:8], len(jobs), len(todo), skipped, parent_id, " (resumed)" if reused else "", experiment_name,
        )
        ray_mod = stop = made_temp = None
        t_ray = t_jobs_done = t_composed
        progress = Progress(len(jobs), skipped, enabled=self.opts.progress)
        try:
            if todo:
                ray_mod, stop, made_temp = self._start_ray()
                t_ray = time.monotonic()
                try:
                    self.cluster = {"ray_address": ray_mod.get_runtime_context().gcs_address}
                except Exception:  # Ray Client connections do not expose it
                    self.cluster = {"ray_address": str(self.opts.address)}
                self.cluster["ray_started_here"] = str(self.opts.address is None).lower()
                progress.start = t_ray
                self._run(ray_mod, todo, tracker, parent_id, sweep_id, progress)
                t_jobs_done = time.monotonic()
        except BaseException:
            # Ctrl-C or a driver error: the parent must not stay RUNNING. The
            # jobs already written stay; rerunning the command resumes the sweep.
            try:
                tracker.client.set_terminated(parent_id, status="KILLED")
            except Exception:
                pass
            raise
        finally:
            progress.close()
            if ray_mod is not None and stop:
                ray_mod.shutdown()
            if made_temp:
                _remove_tree(made_temp)
        t_end = time.monotonic()
        self.timings = {
            "compose_s": t_hashed - t_start,
            "tracking_setup_s": t_composed - t_hashed,
            "ray_startup_s": t_ray - t_composed,
            # From Ray ready to the last record written; Ray's shutdown is a fixed
            # per-sweep cost like its start-up, timed on its own.
            "jobs_wall_s": max(t_jobs_done, t_ray) - t_ray,
            "ray_shutdown_s": t_end - max(t_jobs_done, t_ray),
            "total_s": t_end - t_start,
        }
        self._fill_skipped_metrics(tracker, jobs)
        counts = {s: sum(1 for j in jobs if j.status == s) for s in ("FINISHED", "FAILED", _SKIPPED)}
        self._close_parent(tracker, parent_id, sweep_id, jobs, counts)
        print(self._summary_text(jobs, counts, parent_id, tracker), flush=True)
        # The preset's dashboard (`dashboard:`), filed with the parent; a failure only warns.
        from harness.dashboard import render_after_sweep

        dashboard = str(jobs[0].task_cfg.get("dashboard") or "") if jobs else ""
        render_after_sweep(tracker.tracking_uri, experiment_name, sweep_id, dashboard)

        failed_msg = None
        if counts["FAILED"]:
            bad = [j for j in jobs if j.status == "FAILED"]
            failed_msg = (
                f"{counts['FAILED']} of {len(jobs)} jobs FAILED (jobs "
                f"{', '.join('#' + str(j.idx) for j in bad)}); each FAILED run has traceback.txt in its "
                f"artifacts; the parent run {parent_id} has the sweep summary"
            )
        if failed_msg:
            print(f"harness: {failed_msg}", file=sys.stderr, flush=True)
        results = []
        for job in jobs:
            ret = JobReturn(
                overrides=list(filter_overrides(job.overrides)),
                cfg=OmegaConf.create(job.task_cfg),
                hydra_cfg=job.sweep_config,
                working_dir=os.getcwd(),
                task_name=str(job.sweep_config.hydra.job.name),
            )
            if job.status == "FAILED":
                ret.status = JobStatus.FAILED
                ret.return_value = SweepFailed(1)
            else:
                ret.status = JobStatus.COMPLETED
                ret.return_value = job.run_id
            results.append(ret)
        return results

    def _run(self, ray, todo: List[_Job], tracker, parent_id: str, sweep_id: str, progress: Progress) -> None:
        from harness.app import run_name

        remote = ray.remote(_remote_run_job)
        threads = str(max(1, int(self.opts.cpus_per_job)))
        env = {
            "NUMBA_NUM_THREADS": threads,
            "OMP_NUM_THREADS": threads,
            "NUMBA_CACHE_DIR": self._numba_cache_dir(local=self.opts.address is None),
            **{str(k): str(v) for k, v in (self.opts.env_vars or {}).items()},
        }
        options = dict(
            num_cpus=self.opts.cpus_per_job,
            max_retries=self.opts.max_retries,
            retry_exceptions=False,  # plugin errors are FAILED records, not retried
            runtime_env={"env_vars": env},
        )
        queue = list(todo)
        in_flight: Dict[Any, _Job] = {}
        done = failed = 0
        capacity = self._capacity(ray)
        checked = time.monotonic()

        def cap() -> int:
            if self.opts.max_concurrent:
                return self.opts.max_concurrent
            # One job queued per free slot keeps workers busy while the driver writes.
            return 2 * capacity

        def running() -> int:
            # Jobs beyond the cluster's slots wait in Ray's queue: not running yet.
            return min(len(in_flight), capacity, self.opts.max_concurrent or capacity)

        while queue or in_flight:
            while queue and len(in_flight) < cap():
                job = queue.pop(0)
                ref = remote.options(**options).remote(job.task_cfg, job.choices)
                in_flight[ref] = job
            progress.update(done, failed, running())
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            if not ready:
                if time.monotonic() - checked > 5.0:
                    capacity, checked = self._capacity(ray), time.monotonic()
                continue
            # Take everything already done, refill the queue first, then write.
            ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0)
            finished_jobs = [(ref, in_flight.pop(ref)) for ref in ready]
            while queue and len(in_flight) < cap():
                job = queue.pop(0)
                in_flight[remote.options(**options).remote(job.task_cfg, job.choices)] = job
            for ref, job in finished_jobs:
                record = self._result(ray, ref, job)
                record.tags.update(
                    {
                        "harness.sweep_id": sweep_id,
                        "harness.job_num": str(job.idx),
                        "harness.job_overrides": " ".join(job.overrides),
                        "harness.launcher": "ray",
                    }
                )
                name = run_name(record) if "workload" in record.params else f"job-{job.idx}"
                job.run_id = tracker.write(record, name, parent_run_id=parent_id)
                job.status = record.status
                job.note = record.error or ""
                job.metrics = dict(record.metrics)
                if record.status == "FAILED":
                    failed += 1
                else:
                    done += 1
            progress.update(done, failed, running(), force=True)

    def _result(self, ray, ref, job: _Job):
        """The job's record, or a FAILED record saying why there is none."""
        from ray.exceptions import RayTaskError

        from harness.record import FAILED, Record

        try:
            return ray.get(ref)
        except RayTaskError as exc:  # the job raised outside the runner's own error handling
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            error = f"job setup: {type(cause).__name__}: {cause}"
            tb = str(exc)
        except Exception as exc:  # worker process or node died more than max_retries times
            error = (
                f"worker lost: {type(exc).__name__} after {self.opts.max_retries} retries "
                f"(hydra.launcher.max_retries): {str(exc).splitlines()[0] if str(exc) else ''}"
            )
            tb = "".join(traceback.format_exception(exc))
        now = int(time.time() * 1000)
        record = Record(status=FAILED, error=error, start_ms=now, end_ms=now)
        record.params.update({"seed": str(job.task_cfg.get("seed", "")), **job.choices})
        if job.config_hash:
            record.tags["harness.config_hash"] = job.config_hash
        record.artifacts["traceback.txt"] = tb.encode()
        record.artifacts["config.yaml"] = OmegaConf.to_yaml(OmegaConf.create(job.task_cfg)).encode()
        return record

    # -- the parent run -----------------------------------------------------------
    def _parent_run(self, tracker, sweep_id: str, jobs: List[_Job]) -> tuple[str, bool]:
        client = tracker.client
        if self.opts.resume:
            found = client.search_runs(
                [tracker.experiment_id],
                filter_string=f"tags.`harness.sweep_id` = '{sweep_id}' and tags.`harness.sweep_parent` = 'true'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if found:
                parent_id = found[0].info.run_id
                client.update_run(parent_id, status="RUNNING")
                # Children a killed driver left half-written must not look complete.
                stale = client.search_runs(
                    [tracker.experiment_id],
                    filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'",
                    max_results=1000,
                )
                for run in stale:
                    client.set_terminated(run.info.run_id, status="KILLED")
                return parent_id, True
        overrides = " ".join(str(o) for o in (OmegaConf.select(self.config, "hydra.overrides.task") or []))
        tags = {
            "harness.sweep_id": sweep_id,
            "harness.sweep_parent": "true",
            "harness.sweep_overrides": overrides,
            "harness.sweep_jobs": str(len(jobs)),
            "harness.launcher": "ray",
            "mlflow.note.content": f"Sweep of {len(jobs)} jobs: harness run -m {overrides}".strip(),
        }
        return tracker.create_run(f"sweep-{sweep_id[:8]}", tags=tags), False

    def _fill_skipped_metrics(self, tracker, jobs: List[_Job]) -> None:
        for job in jobs:
            if job.status == _SKIPPED and job.run_id and not job.metrics:
                try:
                    job.metrics = dict(tracker.client.get_run(job.run_id).data.metrics)
                except Exception:  # the summary is informative; never fail a sweep over it
                    pass

    def _key_metrics(self, jobs: List[_Job]) -> List[str]:
        if self.opts.summary_metrics:
            return list(self.opts.summary_metrics)
        # Metrics that differ between jobs say most about a sweep; then the common ones.
        values: Dict[str, set] = {}
        for job in jobs:
            for name, value in job.metrics.items():
                if name.endswith(("_exact", "_se")) or name.startswith("trace/"):
                    continue
                values.setdefault(name, set()).add(value)
        return sorted(values, key=lambda n: (len(values[n]) < 2, n))[:4]

    @staticmethod
    def _common_overrides(jobs: List[_Job]) -> List[str]:
        lists = [filter_overrides_list(j.overrides) for j in jobs]
        return [o for o in lists[0] if all(o in other for other in lists[1:])] if lists else []

    def _job_overrides(self, job: _Job, common: List[str]) -> str:
        return " ".join(o for o in filter_overrides_list(job.overrides) if o not in common) or "-"

    def _rows(self, jobs: List[_Job]) -> List[Dict[str, Any]]:
        common = self._common_overrides(jobs)
        return [
            {
                "job": job.idx,
                "overrides": " ".join(filter_overrides_list(job.overrides)),
                "job_overrides": self._job_overrides(job, common),
                "status": job.status or "NOT RUN",
                "note": job.note,
                "run_id": job.run_id,
                "config_hash": job.config_hash,
                "metrics": job.metrics,
            }
            for job in jobs
        ]

    def _close_parent(self, tracker, parent_id: str, sweep_id: str, jobs: List[_Job], counts: Dict[str, int]) -> None:
        import json

        client = tracker.client
        rows = self._rows(jobs)
        keys = self._key_metrics(jobs)
        header = ["job", "overrides", "status", "run_id", *keys]
        common = " ".join(self._common_overrides(jobs))
        lines = [f"Sweep {sweep_id}: `harness run -m {common}`".rstrip(), ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [str(row["job"]), row["job_overrides"], row["status"], row["run_id"] or "-"]
            cells += [f"{row['metrics'][k]:.6g}" if k in row["metrics"] else "" for k in keys]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        with tempfile.TemporaryDirectory(prefix="harness-sweep-") as tmp:
            Path(tmp, "sweep_summary.json").write_text(json.dumps(rows, indent=2, default=str))
            Path(tmp, "sweep_summary.md").write_text("\n".join(lines) + "\n")
            client.log_artifacts(parent_id, tmp)
        from mlflow.entities import RunTag

        tags = {
            "harness.sweep.finished": counts["FINISHED"],
            "harness.sweep.failed": counts["FAILED"],
            "harness.sweep.skipped": counts[_SKIPPED],
            **{f"harness.sweep.{k}": f"{v:.3f}" for k, v in self.timings.items()},
            **{f"harness.sweep.{k}": v for k, v in self.cluster.items()},
        }
        client.log_batch(parent_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        client.set_terminated(parent_id, status="FAILED" if counts["FAILED"] else "FINISHED")

    def _summary_text(self, jobs: List[_Job], counts: Dict[str, int], parent_id: str, tracker) -> str:
        keys = self._key_metrics(jobs)
        common = self._common_overrides(jobs)
        ovs = [self._job_overrides(j, common) for j in jobs]
        width = max([len(o) for o in ovs] + [9])
        lines = []
        if common:
            lines.append(f"Sweep over: {' '.join(common)}")
        lines.append(
            f"{'#':>4}  {'overrides':<{width}}  {'status':<8}  {'run id':<32}  " + "  ".join(f"{k:>16}" for k in keys)
        )
        for job, ov in zip(jobs, ovs):
            vals = "  ".join(f"{job.metrics[k]:>16.6g}" if k in job.metrics else " " * 16 for k in keys)
            status = job.status or "NOT RUN"
            lines.append(f"{job.idx:>4}  {ov:<{width}}  {status:<8}  {job.run_id or '-':<32}  {vals}".rstrip())
            if job.note and (job.status == "FAILED" or job.note.startswith("same config")):
                lines.append(f"      {job.note}")
        t = self.timings
        lines.append(
            f"Sweep {len(jobs)} jobs: {counts['FINISHED']} finished, {counts['FAILED']} failed, "
            f"{counts[_SKIPPED]} skipped (Ray start-up {t.get('ray_startup_s', 0):.1f} s, jobs "
            f"{t.get('jobs_wall_s', 0):.1f} s); parent run {parent_id} in experiment "
            f"{tracker.experiment_name!r} at {tracker.tracking_uri}"
        )
        return "\n".join(lines)


def _reuse_validation_compositions(loader) -> None:
    """Let the launcher reuse the configs Hydra's sweeper composed to validate the batch.

    Hydra's sweeper composes every job of a batch to fail early on a bad override
    (``Sweeper.validate_batch_is_legal``: "This repeat work the launcher will do"),
    then hands the same override lists to the launcher, which composes them again.
    Composing is the driver's main per-job cost (~50 ms here, mostly deep copies),
    so the first composition of an override list against a master config is kept
    and handed out once, to the second request; validation only checks that the
    config composes, it never changes it. Anything else composes as before.
    """
    original = loader.load_sweep_config
    if getattr(original, "_harness_reuse", False):
        return
    kept: dict = {}

    def load_sweep_config(master_config, sweep_overrides):
        key = (id(master_config), tuple(sweep_overrides))
        if key in kept:
            return kept.pop(key)
        composed = original(master_config=master_config, sweep_overrides=list(sweep_overrides))
        kept[key] = composed
        return composed

    load_sweep_config._harness_reuse = True
    loader.load_sweep_config = load_sweep_config


def _short_temp_root() -> str:
    """The system temp folder, unless it is too long for Ray's unix sockets.

    Ray puts sockets at ``<temp>/session_<date>_<pid>/sockets/plasma_store`` and a
    unix socket path may not exceed 107 bytes; a long TMPDIR (pytest's, CI's) would
    make ``ray.init`` fail, so fall back to /tmp then.
    """
    root = tempfile.gettempdir()
    return root if len(root) <= 32 else "/tmp"


def _remove_tree(path: str, patience: float = 5.0) -> None:
    """Remove Ray's session folder; its exiting processes may still write logs into it."""
    deadline = time.monotonic() + patience
    while True:
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(0.3)
        if not os.path.exists(path) or time.monotonic() > deadline:
            return


def filter_overrides_list(overrides: Sequence[str]) -> List[str]:
    """Overrides without ``hydra.*`` ones, as Hydra shows them."""
    return [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
