"""Records into MLflow: params, metric series, artifacts, tags, status.

The tracker is the only module that imports mlflow (lazily: ``harness --help``
must stay fast). It writes a finished :class:`~harness.record.Record` in a few
batched calls (``log_batch`` is ~10x faster than per-metric calls on sqlite),
and marks the run terminated last, so a run that shows FINISHED in the UI has all
its data. If writing fails half-way the run is marked FAILED, never left looking
complete.

Store: ``tracking_uri`` if given, else ``MLFLOW_TRACKING_URI``, else MLflow's
default, ``sqlite:///mlflow.db`` in the working folder, so plain ``mlflow ui``
(or ``harness ui``) in that folder shows the runs.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Iterable

from harness.record import FAILED, Record

__all__ = ["MlflowTracker", "NOSEED_TAG", "resolve_tracking_uri", "seedless_config_hash"]

# MLflow's per-call limits of log_batch.
_MAX_PARAMS = 100
_MAX_ENTITIES = 1000


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The store runs go to (see the module docstring)."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


#: Tag holding :func:`seedless_config_hash`: runs that differ only in their seed share it.
NOSEED_TAG = "harness.config_hash_noseed"


def seedless_config_hash(params: dict[str, str]) -> str:
    """The config hash without the seed, from a run's params (its flattened config).

    ``harness.config_hash`` includes the seed (it is what resume skips on); this one
    groups the seeds of one config, which is how ``harness compare`` matches runs
    across commits and sweeps. Values are taken as MLflow stores them (strings cut
    at 6,000 characters), so a run read back hashes the same as when it was written.
    """
    import hashlib
    import json

    canonical = {str(k): str(v)[:6000] for k, v in params.items() if k != "seed"}
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Over HTTP MLflow prints "View run ... at: URL" for every run it ends; the harness
    # prints its own links (one per single run, the parent run of a sweep).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # It logs a store error's whole traceback before raising it; the harness reports the error.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # MLflow retries opening an sqlite/SQL store 10 times (~100 s) before it fails;
    # harness.store.check_store has already looked, so 3 tries (~0.4 s) are enough.
    try:
        import mlflow.store.db.utils as db_utils

        db_utils.MAX_RETRY_COUNT = min(db_utils.MAX_RETRY_COUNT, 3)
    except (ImportError, AttributeError):  # pragma: no cover - another MLflow layout
        pass


class MlflowTracker:
    """Writes records to one MLflow experiment."""

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = "harness"):
        from harness.store import check_store, opening_error

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = experiment_name
        check_store(self.tracking_uri)  # before mlflow is imported; seconds, not minutes of retries (harness.store)
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        try:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            self._open_experiment(experiment_name)
        except Exception as exc:
            raise opening_error(self.tracking_uri, exc) from exc

    def _open_experiment(self, experiment_name: str) -> None:
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment_name)
            except Exception:
                # Another process created it between our lookup and create.
                experiment = self.client.get_experiment_by_name(experiment_name)
                if experiment is None:
                    raise
                self.experiment_id = experiment.experiment_id
        else:
            self.experiment_id = experiment.experiment_id

    # -- writing ------------------------------------------------------------
    def create_run(self, run_name: str, tags: dict[str, str] | None = None, start_ms: int | None = None) -> str:
        run = self.client.create_run(
            self.experiment_id, start_time=start_ms or int(time.time() * 1000), tags=tags or {}, run_name=run_name
        )
        return run.info.run_id

    def write(self, record: Record, run_name: str, parent_run_id: str | None = None) -> str:
        """Create a run holding ``record`` and return its id.

        Every sqlite commit costs milliseconds (an fsync), so the run is written in
        as few calls as MLflow allows: tags with the run's creation, then params and
        metrics in ``log_batch`` calls filled to MLflow's per-call limits, then the
        artifacts, then the terminal status.
        """
        from mlflow.entities import Metric, Param

        tags = {k: str(v)[:5000] for k, v in record.tags.items()}
        if record.params:  # every run carries its config hash without the seed (harness compare)
            tags.setdefault(NOSEED_TAG, seedless_config_hash(record.params))
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run_id = self.create_run(run_name, tags=tags, start_ms=record.start_ms)
        try:
            ts = record.end_ms or int(time.time() * 1000)
            metrics = [Metric(k, float(v), ts, 0) for k, v in record.metrics.items()]
            for name, points in record.series.items():
                metrics.extend(Metric(name, float(v), ts, int(step)) for step, v in points)
            params = [Param(k, str(v)[:6000]) for k, v in record.params.items()]
            self._log_batches(run_id, metrics, params)
            artifacts = dict(record.artifacts)
            if record.error and "traceback.txt" not in artifacts:
                artifacts["traceback.txt"] = record.error.encode()
            if artifacts:
                self._log_artifacts(run_id, artifacts)
            self.client.set_terminated(run_id, status=record.status, end_time=record.end_ms or None)
        except BaseException:
            self.client.set_terminated(run_id, status=FAILED)
            raise
        return run_id

    def _log_batches(self, run_id: str, metrics: list, params: list) -> None:
        # MLflow's limits per log_batch call: 100 params, 1000 metrics, 1000 entities.
        while metrics or params:
            chunk_params, params = params[:_MAX_PARAMS], params[_MAX_PARAMS:]
            room = _MAX_ENTITIES - len(chunk_params)
            chunk_metrics, metrics = metrics[:room], metrics[room:]
            self.client.log_batch(run_id, metrics=chunk_metrics, params=chunk_params)

    def _log_artifacts(self, run_id: str, artifacts: dict[str, bytes]) -> None:
        with tempfile.TemporaryDirectory(prefix="harness-artifacts-") as tmp:
            root = Path(tmp)
            for rel, data in artifacts.items():
                path = (root / rel).resolve()
                if root.resolve() not in path.parents:
                    raise ValueError(f"artifact path {rel!r} leaves the run's artifact folder")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            self.client.log_artifacts(run_id, str(root))

    def set_status(self, run_id: str, status: str) -> None:
        """Mark a run terminated with ``status`` (FINISHED, FAILED, KILLED)."""
        self.client.set_terminated(run_id, status=status)

    def finish_run(
        self, run_id: str, status: str, tags: dict[str, str], files: dict[str, bytes],
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Attach ``files``, ``tags`` and ``metrics`` to an existing run, then mark it ``status`` (last)."""
        from mlflow.entities import Metric, RunTag

        if files:
            self._log_artifacts(run_id, files)
        if tags or metrics:
            ts = int(time.time() * 1000)
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), ts, 0) for k, v in (metrics or {}).items()],
                tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()],
            )
        self.client.set_terminated(run_id, status=status)

    # -- sweep parent runs ----------------------------------------------------
    def find_sweep_parent(self, sweep_id: str) -> str | None:
        """The newest parent run of sweep ``sweep_id`` (tag ``harness.sweep_id``), if any."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`harness.sweep_id` = '{sweep_id}' and tags.`harness.sweep_parent` = 'true'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def reopen_sweep_parent(self, run_id: str) -> None:
        """A resumed sweep's parent is RUNNING again; children a killed driver left
        half-written (RUNNING) are marked KILLED so they never look complete."""
        self.client.update_run(run_id, status="RUNNING")
        stale = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{run_id}' and attributes.status = 'RUNNING'",
            max_results=1000,
        )
        for run in stale:
            self.client.set_terminated(run.info.run_id, status="KILLED")

    def find_pending(self, pending_id: str, status: str) -> str | None:
        """The run written from pending record ``pending_id`` with ``status``, if any;
        a half-written one (another status) is deleted, so the record is written again."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`harness.pending_id` = '{pending_id}'", max_results=100
        )
        done = None
        for run in found:
            if run.info.status == status and done is None:
                done = run.info.run_id
            else:
                self.client.delete_run(run.info.run_id)
        return done

    # -- reading ------------------------------------------------------------
    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of each metric of a run."""
        return dict(self.client.get_run(run_id).data.metrics)

    def finished_runs(self, config_hashes: Iterable[str] | None = None) -> dict[str, str]:
        """``{config_hash: run_id}`` of FINISHED runs in this experiment."""
        found: dict[str, str] = {}
        wanted = set(config_hashes) if config_hashes is not None else None
        page_token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string="attributes.status = 'FINISHED'",
                max_results=1000,
                page_token=page_token,
            )
            for run in page:
                chash = run.data.tags.get("harness.config_hash")
                if chash and (wanted is None or chash in wanted):
                    found.setdefault(chash, run.info.run_id)
            page_token = page.token
            if not page_token:
                return found
