"""The harness's :class:`~harness.launcher.hooks.SweepHook`: single writer, resume, sweep parent.

* **Single writer.** Workers run :func:`harness.app.record_task` inside
  ``run_job`` and return the record; the driver's one writer thread writes them
  to MLflow in batches as they arrive (:mod:`harness.launcher.record_writer`), so
  a job retried after its worker died is recorded once, with no shared
  filesystem or lock, and sqlite never sees two writers.
* **Identity first.** Before Ray starts (:meth:`before_launch`), every job's config hash is computed
  with the runner's own code (:func:`harness.app.config_hash_of`). A
  :class:`~harness.specs.CapabilityError` (plugins that cannot work together)
  fails the whole sweep there; other config errors are left for the worker to
  report as a FAILED run. Jobs with the same hash run once.
* **Resume.** Jobs whose hash already has a FINISHED run are skipped
  (``hydra.launcher.resume=false`` reruns them). Opening the store to find them
  (:meth:`prepare`) runs on a thread while Ray starts.
* **Parent.** One parent run per sweep, keyed by the set of job hashes, reused
  on resume; it ends with the summary table.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from harness.launcher import summary
from harness.launcher.hooks import Job, SweepHook

__all__ = ["HarnessSweepHook", "SweepFailed", "sweep_id_of"]

log = logging.getLogger("harness.launcher")


class SweepFailed(SystemExit):
    """Ends ``harness run -m`` with a status once the summary has said what went wrong.

    Raised instead of returning FAILED results, so Hydra's sweeper does not print
    its own "Error executing job with overrides" naming only the first failure.
    """


def sweep_id_of(config_hashes: Sequence[str]) -> str:
    """A sweep's identity: the set of its jobs' config hashes (order and spelling free)."""
    import hashlib

    blob = ",".join(sorted(set(config_hashes)))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class HarnessSweepHook(SweepHook):
    """Driver side of a harness sweep on ``hydra/launcher=harness_ray``."""

    def setup(self, *, config, options, task_function) -> None:
        self.config, self.opts = config, options
        self.tracker = None
        self.writer = None
        self.parent_id: Optional[str] = None
        self.sweep_id = ""
        self.rows: Dict[int, summary.Row] = {}
        self.pending: List[str] = []  # records kept on disk because the store failed
        self.cache_dir = ".harness_cache"
        self.headline: List[str] = []
        self.varied: List[str] = []

    # -- before launch ------------------------------------------------------
    def before_launch(self, jobs: Sequence[Job]) -> None:
        from hydra.core.hydra_config import HydraConfig

        from harness.app import config_hash_of
        from harness.host import PluginError
        from harness.specs import KINDS, CapabilityError
        from harness.validation import ConfigError

        if not jobs:  # an empty sweep range (seed=range(0)); `harness run` names the override
            print("harness: the sweep has no jobs (an override's range is empty); nothing was started", file=sys.stderr)
            raise SweepFailed(2)
        refused = []
        self.rows = {}  # one batch (the harness's sweeps are one batch unless max_batch_size is set)
        hydra_config = HydraConfig.instance()
        original = hydra_config.cfg
        for job in jobs:
            choices = {kind: str(job.config.hydra.runtime.choices[kind]) for kind in KINDS}
            row = self.rows[job.idx] = summary.Row(job.idx, list(job.overrides))
            job.meta.update(choices=choices, row=row)
            # Installing a job's Hydra config copies its whole `hydra` node (ms per job): only
            # done when the hash needs it (a ${hydra:...} interpolation fails without it,
            # instead of reading another job's).
            hydra_config.cfg = None
            for attempt in (0, 1):
                try:
                    row.config_hash = config_hash_of(job.config, choices)
                    break
                except (CapabilityError, ConfigError, PluginError) as exc:  # refused on the driver, before Ray
                    if attempt == 0:
                        hydra_config.set_config(job.config)
                        continue
                    refused.append(f"job #{job.idx} ({' '.join(summary.user_overrides(job.overrides)) or 'defaults'}): {exc}")
                except Exception as exc:  # a value the plugin rejects: the worker reports it as a FAILED run
                    if attempt == 0:
                        hydra_config.set_config(job.config)
                        continue
                    row.note = f"config hash not computable: {exc}"
        hydra_config.cfg = original
        if refused:
            for line in refused:
                print(f"harness: {line}", file=sys.stderr)
            print(f"harness: {len(refused)} of {len(jobs)} jobs cannot run; nothing was started", file=sys.stderr, flush=True)
            raise SweepFailed(2)
        self._name_jobs(jobs)

        destinations = {(str(j.config.get("tracking_uri") or ""), str(j.config.experiment_name)) for j in jobs}
        if len(destinations) > 1:
            names = ", ".join(sorted(f"{e!r} at {u or 'default'}" for u, e in destinations))
            raise ValueError(
                f"hydra/launcher=harness_ray: the jobs of one sweep must go to one MLflow experiment; got {names}. "
                "Run one sweep per experiment (tracking_uri / experiment_name)."
            )
        tracking_uri, experiment_name = destinations.pop()
        from harness.store import check_store
        from harness.tracking import resolve_tracking_uri

        check_store(resolve_tracking_uri(tracking_uri or None))  # a clearly bad store fails here, before Ray starts
        self._destination = (tracking_uri, experiment_name)

        self._first_of: Dict[str, Job] = {}
        first_of = self._first_of
        for job in jobs:
            row = job.meta["row"]
            if not row.config_hash:
                continue
            if row.config_hash in first_of:
                row.status, row.note = summary.SKIPPED, f"same config as job #{first_of[row.config_hash].idx}"
            else:
                first_of[row.config_hash] = job
        self.sweep_id = sweep_id_of([r.config_hash for r in self.rows.values() if r.config_hash])

    def likely_to_run(self, jobs: Sequence[Job]) -> bool:
        """Some job is not a duplicate and not already FINISHED in the store, by a direct
        sqlite read (:func:`harness.store.finished_hashes_hint`); True when it cannot tell."""
        from harness.store import finished_hashes_hint
        from harness.tracking import resolve_tracking_uri

        left = [row.config_hash for row in self.rows.values() if not row.status]
        if not self.opts.resume or any(not h for h in left):
            return bool(left)
        tracking_uri, experiment_name = self._destination
        finished = finished_hashes_hint(resolve_tracking_uri(tracking_uri or None), experiment_name)
        return finished is None or any(h not in finished for h in left)

    def prepare(self, jobs: Sequence[Job]) -> None:
        """Open the store, write what earlier runs left pending, skip jobs finished earlier,
        open the parent run: seconds (importing MLflow most), on a thread while Ray starts."""
        from harness.tracking import MlflowTracker

        tracking_uri, experiment_name = self._destination
        first_of = self._first_of
        self.tracker = MlflowTracker(tracking_uri or None, experiment_name)
        from harness.store import flush_pending

        self.cache_dir = str(Path(os.path.expanduser(str(self.config.cache_dir))).resolve())
        flush_pending(self.cache_dir, self.tracker.tracking_uri)  # records earlier runs could not write
        if self.opts.resume:
            finished = self.tracker.finished_runs([r.config_hash for r in self.rows.values() if r.config_hash])
            for row in self.rows.values():
                if not row.status and row.config_hash in finished:
                    row.status, row.run_id, row.note = summary.SKIPPED, finished[row.config_hash], "finished earlier"
        self.parent_id, reused = self._parent_run(len(jobs))
        from harness.launcher.record_writer import RecordWriter

        self.writer = RecordWriter(self.tracker, self._written)
        for job in jobs:
            row = job.meta["row"]
            if row.status == summary.SKIPPED:
                job.skip(row.run_id or None)
        for job in jobs:  # a duplicate's result is its twin's run, once known
            if job.skipped and not job.skip_value:
                job.meta["twin"] = first_of[job.meta["row"].config_hash]
        todo = sum(1 for j in jobs if not j.skipped)
        log.info(
            "Sweep %s: %d jobs, %d to run, %d skipped; parent run %s%s in experiment %r",
            self.sweep_id[:8], len(jobs), todo, len(jobs) - todo, self.parent_id, " (resumed)" if reused else "",
            experiment_name,
        )

    def _name_jobs(self, jobs: Sequence[Job]) -> None:
        """Each job's run name (what varied across the sweep, :mod:`harness.naming`), the
        swept keys, and the headline metrics its plugins declare, in kind order."""
        from harness.host import get_host
        from harness.naming import parse_overrides, sweep_names, varied_keys
        from harness.specs import KINDS

        names = sweep_names(
            [(j.idx, j.meta["choices"], j.config.seed, list(j.overrides)) for j in jobs],
            {j.idx: j.meta["row"].config_hash for j in jobs},
        )
        self.varied = varied_keys([parse_overrides(j.overrides) for j in jobs])
        for job in jobs:
            job.meta["name"] = names[job.idx]
        headline: List[str] = []
        host = get_host()
        for kind in KINDS:
            for job in jobs:
                try:
                    declared = host.info(kind, job.meta["choices"][kind]).spec.headline
                except Exception:  # a plugin that did not load: its jobs fail on their own
                    continue
                headline.extend(m for m in declared if m not in headline)
        self.headline = headline

    def _describe(self, job: Job, record) -> str:
        """A child run's description: the sweep's command, what this run is and what varied."""
        from harness.naming import describe_run, parse_overrides

        own = parse_overrides(job.overrides)
        varied = {k: own[k] for k in self.varied if k in own}
        p = record.params
        return describe_run(
            self._command(),
            {k: p.get(k, job.meta["choices"].get(k, "?")) for k in ("workload", "technique", "accelerator")},
            p.get("seed", "?"),
            record.config_hash or job.meta["row"].config_hash,
            record.tags.get("mlflow.source.git.commit", ""),
            record.tags.get("harness.git_dirty", ""),
            varied,
            sweep=f"Job #{job.idx} of sweep `{self.sweep_id}` ({len(self.rows)} jobs).",
        )

    def _command(self) -> str:
        task = OmegaConf.select(self.config, "hydra.overrides.task") or []
        hydra = OmegaConf.select(self.config, "hydra.overrides.hydra") or []
        return summary.command_line(list(task), list(hydra))

    def _parent_run(self, njobs: int) -> tuple[str, bool]:
        if self.opts.resume:
            found = self.tracker.find_sweep_parent(self.sweep_id)
            if found:
                self.tracker.reopen_sweep_parent(found)
                return found, True
        from harness.naming import describe_sweep
        from harness.runner import git_state

        commit, dirty = git_state()
        task = " ".join(str(o) for o in (OmegaConf.select(self.config, "hydra.overrides.task") or []))
        tags = {
            "harness.sweep_id": self.sweep_id,
            "harness.sweep_parent": "true",
            "harness.sweep_overrides": task,
            "harness.sweep_command": self._command(),
            "harness.sweep_jobs": str(njobs),
            "harness.launcher": "harness_ray",
            "mlflow.note.content": describe_sweep(self._command(), njobs, self.varied, self.sweep_id, commit, dirty),
            "mlflow.source.git.commit": commit,
            "mlflow.source.name": "harness",
            "mlflow.source.type": "LOCAL",
        }
        return self.tracker.create_run(f"sweep-{self.sweep_id[:8]}", tags=tags), False

    # -- on the workers -----------------------------------------------------------
    def order(self, jobs: Sequence[Job]) -> List[Job]:
        """One job per technique result first, then the jobs that reuse one.

        Jobs that differ only in their accelerator need the same technique result
        (:mod:`harness.technique_cache`): submitted side by side, the second would
        wait on the first's lock and hold a slot idle. So the first job of each
        group goes first, and the others are held back (``Job.after``) until it is done,
        or until a slot has nothing else to do (then one waits there for the result).
        Jobs whose technique result is not cached (``technique_cache=false``, a
        technique with ``cache_result=False``) are not grouped.
        """
        from harness.app import plugin_values
        from harness.host import PluginError, get_host

        host = get_host()
        first, rest, computes = [], [], {}
        for job in jobs:
            choices = job.meta["choices"]
            try:
                caches = bool(job.config.get("technique_cache", True)) and host.info(
                    "technique", choices["technique"]).spec.cache_result
            except PluginError:
                caches = False  # the job fails on its own, with the plugin's error
            if not caches:  # nothing shared: no reason to hold it back
                first.append(job)
                continue
            values = plugin_values(job.config, choices)
            identity = json.dumps([choices["workload"], values["workload"], choices["technique"], values["technique"],
                                   int(job.config.seed)], sort_keys=True, default=str)
            if identity in computes:
                job.after = computes[identity]
                rest.append(job)
            else:
                computes[identity] = job
                first.append(job)
        return first + rest

    def job_env(self) -> Dict[str, str]:
        """Numba kernels cached under ``cache_dir/numba`` unless the launcher says otherwise."""
        if self.opts.numba_cache_dir:
            return {}
        from harness.config import numba_cache_folder

        path = numba_cache_folder(self.config.cache_dir)
        # A private Ray's workers share the driver's folder; on a cluster a relative
        # path is taken relative to each worker's working folder.
        return {"NUMBA_CACHE_DIR": str(Path(path).resolve()) if self.opts.address is None else path}

    def worker_task(self, task_function):
        from harness.app import record_task

        return record_task

    # -- results --------------------------------------------------------------------
    def on_result(self, job: Job, result: Any) -> None:
        from hydra.core.utils import JobStatus

        from harness.app import run_name
        from harness.record import FAILED, Record

        value = result._return_value
        if result.status == JobStatus.COMPLETED and isinstance(value, Record):
            record = value
        else:
            record = self._failed_record(job, value)
        record.tags.update(
            {
                "harness.sweep_id": self.sweep_id,
                "harness.job_num": str(job.idx),
                "harness.job_overrides": " ".join(job.overrides),
                "harness.launcher": "harness_ray",
                "harness.job_dir": str(result.working_dir or ""),
            }
        )
        if job.meta.get("node_restarts"):  # in flight when the local Ray died; run again after its restart
            record.tags["harness.resubmitted_after_node_loss"] = str(job.meta["node_restarts"])
        name = job.meta.get("name") or (run_name(record) if "workload" in record.params else f"job-{job.idx}")
        record.tags.setdefault("mlflow.note.content", self._describe(job, record))
        row = job.meta["row"]
        row.status, row.note, row.metrics = record.status, record.error or "", dict(record.metrics)
        result.status = JobStatus.FAILED if record.status == FAILED else JobStatus.COMPLETED
        # Written by the writer thread, in a batch with the records that arrive meanwhile;
        # the run id (and the return value) are filled in by _written.
        self.writer.put(record, name, self.parent_id, (job, result, record, name))

    def _written(self, context, outcome) -> None:
        """The writer thread's report on one record: its run id, or why the store refused it."""
        from harness.record import FAILED
        from harness.runner import ExperimentFailed

        job, result, record, name = context
        row = job.meta["row"]
        if isinstance(outcome, Exception):  # the store failed mid-sweep: keep the record on disk (harness.store)
            from harness.store import PendingRecord, keep_pending

            path = keep_pending(self.cache_dir, PendingRecord(
                record, name, self.tracker.tracking_uri, self.tracker.experiment_name, self.parent_id, str(outcome)))
            self.pending.append(str(path))
            print(f"harness: job #{job.idx}: could not write its run ({type(outcome).__name__}); record kept in {path}",
                  file=sys.stderr, flush=True)
            row.run_id = ""
            row.note = "record pending on disk (harness flush)"
        else:
            row.run_id = outcome
        if record.status == FAILED:
            result.return_value = ExperimentFailed(f"run {row.run_id} FAILED in {record.error}")
        else:
            result.return_value = row.run_id

    def _failed_record(self, job: Job, value: Any):
        """A FAILED record for a job that returned no record (lost worker, setup error)."""
        from harness.record import FAILED, Record

        if isinstance(value, BaseException):
            error = f"{type(value).__name__}: {value}" if type(value).__name__ != "JobLost" else str(value)
            tb = job.meta.get("traceback") or "".join(traceback.format_exception(value))
        else:
            error = tb = f"the task returned {type(value).__name__}, not a harness Record"
        now = int(time.time() * 1000)
        record = Record(status=FAILED, error=error, start_ms=now, end_ms=now)
        plain = job.task_config()
        record.params.update({"seed": str(plain.get("seed", "")), **job.meta["choices"]})
        if job.meta["row"].config_hash:
            record.tags["harness.config_hash"] = job.meta["row"].config_hash
        record.artifacts["traceback.txt"] = tb.encode()
        record.artifacts["config.yaml"] = OmegaConf.to_yaml(plain, resolve=True).encode()
        return record

    # -- the end ----------------------------------------------------------------------
    def after_launch(self, jobs: Sequence[Job], timings: Dict[str, float], cluster: Dict[str, str]) -> None:
        t0 = time.monotonic()
        self.writer.close()  # every record written (or kept on disk) before the parent closes
        timings = {**timings, "write_wait_s": time.monotonic() - t0}
        for job in jobs:
            row = job.meta["row"]
            twin = job.meta.get("twin")
            if twin is not None:
                row.run_id = twin.meta["row"].run_id
                job.result.return_value = row.run_id
            if row.status == summary.SKIPPED and row.run_id and not row.metrics:
                try:
                    row.metrics = self.tracker.run_metrics(row.run_id)
                except Exception:  # the summary is informative; never fail a sweep over it
                    pass
        rows = [job.meta["row"] for job in jobs]
        counts = summary.counts(rows)
        keys = summary.key_metrics(rows, self.opts.summary_metrics, self.headline)
        stats = summary.headline_summary(rows, self.headline)
        files = {
            "sweep_summary.md": summary.markdown(rows, self.sweep_id, self._command(), keys, stats).encode(),
            "sweep_summary.json": summary.to_json(rows).encode(),
        }
        tags = {
            "harness.sweep.finished": counts["FINISHED"],
            "harness.sweep.failed": counts["FAILED"],
            "harness.sweep.skipped": counts[summary.SKIPPED],
            **{f"harness.sweep.{k}": f"{v:.3f}" for k, v in timings.items()},
            **{f"harness.sweep.{k}": v for k, v in cluster.items()},
        }
        self.tracker.finish_run(self.parent_id, "FAILED" if counts["FAILED"] else "FINISHED", tags, files, stats)
        where = (
            f"parent run {self.parent_id} in experiment {self.tracker.experiment_name!r} at {self.tracker.tracking_uri}"
        )
        print(summary.text(rows, keys, timings, where), flush=True)
        # The preset's dashboard (`dashboard:`), filed with the parent run; a failure only warns.
        from harness.dashboard import render_after_sweep

        dashboard = str(self.config.get("dashboard") or "")
        render_after_sweep(self.tracker.tracking_uri, self.tracker.experiment_name, self.sweep_id, dashboard)
        if self.pending:
            print(
                f"harness: {len(self.pending)} record(s) could not be written and are kept in "
                f"{Path(self.pending[0]).parent}; `harness flush` (or the next run) writes them",
                file=sys.stderr,
                flush=True,
            )
            if not counts["FAILED"]:
                raise SweepFailed(1)
        if counts["FAILED"]:
            bad = ", ".join(f"#{r.idx}" for r in rows if r.status == "FAILED")
            print(
                f"harness: {counts['FAILED']} of {len(rows)} jobs FAILED (jobs {bad}); each FAILED run has "
                f"traceback.txt in its artifacts; the parent run {self.parent_id} has the sweep summary",
                file=sys.stderr,
                flush=True,
            )
            raise SweepFailed(1)

    def on_abort(self, error: BaseException) -> None:
        """Ctrl-C or a driver error: the parent must not stay RUNNING; rerunning resumes.
        Records already received are written first (or kept on disk)."""
        if self.writer is not None:
            self.writer.close()
        if self.tracker is not None and self.parent_id:
            self.tracker.set_status(self.parent_id, "KILLED")
