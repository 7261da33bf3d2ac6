"""The driver loop: compose each job, let the hook look, run the rest on Ray, collect.

Jobs are composed on the driver (as Hydra's own Ray launcher does), so a hook
sees every job's config before anything starts and workers need no config
files. Results are collected with ``ray.wait`` as they finish, never with one
``ray.get`` over the list, which raises on the first failure and drops the rest.
A job whose worker process or node died more than ``max_retries`` times, or whose
task raised outside ``run_job``, comes back as a FAILED ``JobReturn`` saying so.

A private Ray's raylet can die under the sweep (killed, out of memory, or with its
dashboard agent, which shares its fate). Ray's core worker then ends the driver
process within seconds, so the driver watches the raylet itself, and on its death
shuts Ray down, starts a fresh one and resubmits the jobs that were in flight
(at most ``max_restarts`` times). Results already handled are kept: the hook
recorded them, so every job is recorded once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf, open_dict

from harness.launcher.cluster import Cluster
from harness.launcher.compose import SweepComposer
from harness.launcher.hooks import Job
from harness.launcher.progress import Progress

__all__ = ["JobLost", "LocalNodeDied", "launch"]

log = logging.getLogger("harness.launcher")


class JobLost(RuntimeError):
    """A job produced no result: its worker died too often, or Ray could not run it."""


class LocalNodeDied(RuntimeError):
    """The private Ray's raylet died mid-sweep (raised when no restart is left)."""


def _compose(composer, overrides: Sequence[str], idx: int) -> Job:
    config = composer.compose(list(overrides))
    with open_dict(config):
        config.hydra.job.id = f"{config.hydra.job.name}_{idx}"
        config.hydra.job.num = idx
    return Job(idx=idx, overrides=list(overrides), config=config)


def _job_dir(job: Job) -> str:
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(job.config)
    sweep = job.config.hydra.sweep
    return os.path.abspath(os.path.join(str(sweep.dir), str(sweep.subdir)))


def _return_without_run(job: Job, status, value: Any):
    """A ``JobReturn`` for a job that did not run (skipped) or produced nothing (lost)."""
    from hydra.core.utils import JobReturn

    ret = JobReturn(
        overrides=list(OmegaConf.to_container(job.config.hydra.overrides.task)),
        cfg=job.task_config(),
        hydra_cfg=job.config,
        working_dir=_job_dir(job),
        task_name=str(job.config.hydra.job.name),
        status=status,
        _return_value=value,
    )
    return ret


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[Any]:
    """Run one batch of jobs; returns their ``JobReturn``s in order."""
    from hydra.core.utils import JobStatus, configure_log, filter_overrides, setup_globals

    setup_globals()
    config, opts, hook = launcher.config, launcher.opts, launcher.hook
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    t_start = time.monotonic()
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info(f"harness_ray launcher: {len(job_overrides)} jobs, sweep output dir: {sweep_dir}")

    composer = SweepComposer(launcher.hydra_context.config_loader, config)
    jobs = [_compose(composer, ov, initial_job_idx + i) for i, ov in enumerate(job_overrides)]
    for job in jobs:
        log.info(f"\t#{job.idx} : {' '.join(filter_overrides(job.overrides))}")
    cluster = Cluster(opts)
    cluster.preflight()  # a cluster address that does not answer fails here, bounded, before the hook writes
    if hook is not None:
        hook.before_launch(jobs)
    t_composed = t_ray = t_ready = t_done = time.monotonic()
    # The hook's slow set-up (the harness: import MLflow, open the store, find finished
    # jobs) runs on a thread while this thread starts Ray: both take seconds, mostly
    # waiting on other processes. When the hook expects nothing to be left to run (a
    # finished sweep again), Ray waits for its answer and is started only if needed.
    early = any(not j.skipped for j in jobs) and (hook is None or hook.likely_to_run(jobs))
    preparing = _Background(hook.prepare, jobs) if hook is not None else None
    prepared = preparing is None
    progress: Optional[Progress] = None
    where: Dict[str, str] = {}
    ray_startup = prepare_wait = 0.0
    try:
        ray = None
        if early:
            ray = cluster.start(job_env(launcher, cluster.local))
            t_ray = time.monotonic()
            ray_startup = t_ray - t_composed
        if preparing is not None:
            preparing.join()
            prepared = True
        t_ready = time.monotonic()
        prepare_wait = t_ready - (t_ray if early else t_composed)
        todo = [job for job in jobs if not job.skipped]
        if hook is not None:
            todo = hook.order(todo)
        if todo and ray is None:  # the hook's guess was wrong: start Ray now
            ray = cluster.start(job_env(launcher, cluster.local))
            t_ray = time.monotonic()
            ray_startup, t_ready = t_ray - t_ready, t_ray
        progress = Progress(len(jobs), len(jobs) - len(todo), enabled=opts.progress)
        if todo:
            where.update(ray_address=cluster.address, ray_started_here=str(cluster.local).lower())
            if cluster.kept:
                where["ray_kept"] = cluster.kept
            progress.start = t_ready
            restarts = 0
            stats = {"ray_tasks": 0, "started_early": 0}
            while True:
                try:
                    _run(launcher, ray, cluster, todo, progress, stats)
                    break
                except _NodeLost as lost:
                    todo = [job for job in todo if job.result is None]
                    if restarts >= opts.max_restarts:
                        raise LocalNodeDied(
                            f"the local Ray node died {restarts + 1} times ({lost}); {len(todo)} jobs not run; "
                            "rerun the same command to run them (finished jobs are skipped), "
                            "or raise hydra.launcher.max_restarts"
                        ) from None
                    restarts += 1
                    for job in lost.in_flight:
                        job.meta["node_restarts"] = job.meta.get("node_restarts", 0) + 1
                    progress.message(
                        f"harness: the local Ray node died ({lost}); restarting Ray "
                        f"({restarts} of hydra.launcher.max_restarts={opts.max_restarts}) and resubmitting "
                        f"{len(lost.in_flight)} running and {len(todo) - len(lost.in_flight)} queued jobs"
                    )
                    ray = cluster.restart()
                    where["ray_address"] = cluster.address
                    where["ray_restarts"] = str(restarts)
            t_done = time.monotonic()
            where["ray_tasks"] = str(stats["ray_tasks"])
            where["jobs_started_early"] = str(stats["started_early"])  # held-back jobs sent to idle slots
    except BaseException as exc:
        if not prepared:  # Ray failed or Ctrl-C while the hook prepared: let it finish first
            prepared = preparing.wait() is None
        if hook is not None and prepared:  # a failed prepare is reported by its own error
            try:
                hook.on_abort(exc)
            except Exception:  # the original error matters more
                log.exception("sweep hook failed while aborting")
        raise
    finally:
        if progress is not None:
            progress.close()
        cluster.stop()
    t_end = time.monotonic()
    for job in jobs:
        if job.skipped:
            job.result = _return_without_run(job, JobStatus.COMPLETED, job.skip_value)
    timings = {
        "compose_s": t_composed - t_start,
        "ray_startup_s": ray_startup,
        # The hook's preparation still running once Ray was up (all of it when Ray waited for it).
        "prepare_wait_s": prepare_wait,
        # From Ray and the hook ready to the last result handled; shutdown is timed on its own.
        "jobs_wall_s": max(t_done, t_ready) - t_ready,
        "ray_shutdown_s": t_end - max(t_done, t_ready),
        "total_s": t_end - t_start,
    }
    if hook is not None:
        hook.after_launch(jobs, timings, where)
    return [job.result for job in jobs]


class _Background:
    """``fn(*args)`` on a thread; :meth:`join` re-raises its error in the caller."""

    def __init__(self, fn, *args):
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name="harness-sweep-prepare", daemon=True)
        self._thread.start()

    def _run(self, fn, args) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # handed to the launching thread
            self.error = exc

    def wait(self) -> Optional[BaseException]:
        """Wait for it to end (a Ctrl-C while waiting is remembered, then raised); its error or None."""
        interrupted = None
        while self._thread.is_alive():
            try:
                self._thread.join()
            except KeyboardInterrupt as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted
        return self.error

    def join(self) -> None:
        error = self.wait()
        if error is not None:
            raise error


def job_env(launcher, local: bool) -> Dict[str, str]:
    """The jobs' environment: threads per job, the hook's variables, ``env_vars``."""
    opts, hook = launcher.opts, launcher.hook
    threads = str(max(1, int(opts.cpus_per_job)))
    env = {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, **(hook.job_env() if hook is not None else {})}
    if opts.numba_cache_dir:
        path = os.path.expanduser(str(opts.numba_cache_dir))
        # A private Ray's workers share this machine; on a cluster a relative path
        # is taken relative to each worker's working folder.
        env["NUMBA_CACHE_DIR"] = str(Path(path).resolve()) if local else path
    env.update({str(k): str(v) for k, v in (opts.env_vars or {}).items()})
    return env


class _NodeLost(Exception):
    """The private Ray's raylet died; ``in_flight`` are the jobs it took with it."""

    def __init__(self, reason: str, in_flight: List[Job]):
        super().__init__(reason)
        self.in_flight = in_flight


#: Jobs are batched (several per Ray task) when the median job so far took less than this.
SHORT_JOB_S = 0.05
#: A batch is sized to take about this long.
BATCH_TARGET_S = 0.2


def batch_size(durations: List[float], queued: int, capacity: int, max_jobs: int) -> int:
    """Jobs for the next Ray task: 1 until a slot's worth of jobs has finished, then
    enough short jobs to fill ~``BATCH_TARGET_S``, while keeping every slot fed."""
    if max_jobs <= 1 or len(durations) < capacity:
        return 1
    median = sorted(durations)[len(durations) // 2]
    if median >= SHORT_JOB_S:
        return 1
    fill = int(BATCH_TARGET_S / max(median, 1e-3))
    per_slot = -(-queued // (2 * capacity))  # ceil: two batches per slot keep them busy
    return max(1, min(max_jobs, fill, per_slot))


def _run(launcher, ray, cluster: Cluster, todo: List[Job], progress: Progress, stats: Dict[str, int]) -> None:
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus

    from harness.launcher.remote import execute_jobs, pack

    opts, hook = launcher.opts, launcher.hook
    task = hook.worker_task(launcher.task_function) if hook is not None else launcher.task_function
    shared = [ray.put({"singleton_state": Singleton.get_state(), "hydra_context": launcher.hydra_context, "task_function": task})]
    key = uuid.uuid4().hex
    env = job_env(launcher, cluster.local)
    options = {}
    if cluster.node_env != env:
        # A runtime_env makes Ray start new worker processes for it; a private Ray
        # started with this environment already has its workers up (Cluster.start).
        options["runtime_env"] = {"env_vars": env}
    remote = ray.remote(execute_jobs).options(
        num_cpus=opts.cpus_per_job,
        max_retries=opts.max_retries,
        retry_exceptions=False,  # a task that raises is a FAILED job, not retried
        **options,
    )
    driver_cwd = os.getcwd()
    queue = list(todo)
    in_flight: Dict[Any, List[Job]] = {}
    done, failed = progress.done, progress.failed  # carried over a restart of the local Ray
    capacity, checked = cluster.capacity(), time.monotonic()
    durations: List[float] = []  # seconds each finished job took on its worker

    def cap() -> int:
        # One task queued per free slot keeps workers busy while the driver handles results.
        return opts.max_concurrent or 2 * capacity

    def running() -> int:
        return min(sum(len(jobs) for jobs in in_flight.values()), capacity, opts.max_concurrent or capacity)

    def submit() -> None:
        i = 0
        size = batch_size(durations, len(queue), capacity, opts.max_jobs_per_task)
        while i < len(queue) and len(in_flight) < cap():
            batch: List[Job] = []
            while i < len(queue) and len(batch) < size:
                job = queue[i]
                if job.after is not None and job.after.result is None and (in_flight or batch):
                    i += 1  # held back until the job it reuses has finished
                    continue
                if job.meta.get("solo") and batch:
                    break  # retried on its own after its batch's worker died
                batch.append(queue.pop(i))
                if job.meta.get("solo"):
                    break
            if not batch:
                break
            in_flight[remote.remote(key, shared, [pack(job.config) for job in batch], driver_cwd)] = batch
            stats["ray_tasks"] += 1
        # A slot that no free job can fill takes a held-back job whose ``after`` is running:
        # it waits for that result on its own and goes on the moment it is there,
        # instead of after ``after``'s whole job (its evaluation, its record) is done.
        slots = min(capacity, opts.max_concurrent or capacity)
        while len(in_flight) < slots:
            running_now = {id(job) for jobs in in_flight.values() for job in jobs}
            job = next((j for j in queue if j.after is not None and id(j.after) in running_now), None)
            if job is None:
                break
            queue.remove(job)
            in_flight[remote.remote(key, shared, [pack(job.config)], driver_cwd)] = [job]
            stats["ray_tasks"] += 1
            stats["started_early"] += 1

    def node_lost(reason: str) -> _NodeLost:
        return _NodeLost(reason, [job for jobs in in_flight.values() for job in jobs])

    while queue or in_flight:
        submit()
        progress.update(done, failed, running())
        if not cluster.node_alive():
            raise node_lost("its raylet exited")
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        if not ready:
            if time.monotonic() - checked > 5.0:
                capacity, checked = cluster.capacity(), time.monotonic()
            continue
        # Take everything already done, refill the queue first, then handle results.
        ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0)
        results = [(ref, _results(ray, ref, in_flight[ref], opts.max_retries, cluster.local)) for ref in ready]
        if not cluster.node_alive() or any(res is _NODE_DIED for _, res in results):
            # Nothing of this batch is handled: with the node gone, a result that did
            # arrive is kept by resubmitting its job too (it is recorded once, later).
            raise node_lost("a job reported that its raylet died")
        finished = []
        for ref, res in results:
            jobs = in_flight.pop(ref)
            if res is _RETRY_ALONE:  # the batch's worker died: each job again, on its own
                for job in reversed(jobs):
                    job.meta["solo"] = True
                    queue.insert(0, job)
                continue
            for job, (ret, seconds) in zip(jobs, res):
                if seconds is not None:
                    durations.append(seconds)
                finished.append((job, ret))
        submit()
        for job, res in finished:
            job.result = res
            if hook is not None:
                hook.on_result(job, job.result)
            if job.result.status == JobStatus.COMPLETED:
                done += 1
            else:
                failed += 1
        progress.update(done, failed, running(), force=True)


#: ``_results``' answer for jobs whose local raylet died (the sweep restarts Ray).
_NODE_DIED = object()
#: ``_results``' answer for a batch of several jobs whose worker died: retry each alone.
_RETRY_ALONE = object()


def _results(ray, ref, jobs: List[Job], max_retries: int, local: bool = False):
    """``[(JobReturn, seconds on the worker), ...]`` of a task's jobs; FAILED returns
    saying why when there are none; ``_NODE_DIED`` on a private Ray whose raylet died;
    ``_RETRY_ALONE`` for a batch of several jobs whose worker was lost."""
    from hydra.core.utils import JobStatus
    from ray.exceptions import LocalRayletDiedError, RayTaskError

    try:
        return ray.get(ref)
    except LocalRayletDiedError as exc:
        if local:
            return _NODE_DIED
        error = f"worker lost: {type(exc).__name__}: its node's raylet died"
        detail = f"{type(exc).__name__}: {exc}"
    except RayTaskError as exc:  # raised outside run_job's own error handling
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        error = f"job setup: {type(cause).__name__}: {cause}"
        detail = str(exc)
    except Exception as exc:  # the worker process or node died more than max_retries times
        if len(jobs) > 1:
            return _RETRY_ALONE
        first = str(exc).splitlines()[0] if str(exc) else ""
        error = f"worker lost: {type(exc).__name__} after {max_retries} retries (hydra.launcher.max_retries): {first}"
        detail = f"{type(exc).__name__}: {exc}"
    out = []
    for job in jobs:
        job.meta["traceback"] = detail
        out.append((_return_without_run(job, JobStatus.FAILED, JobLost(error)), None))
    return out
