"""Records into MLflow: params, metric series, artifacts, tags, status.

The tracker is the only module that imports mlflow (lazily: ``harness --help``
must stay fast). It writes a finished :class:`~harness.record.Record` in a few
batched calls (``log_batch`` is ~10x faster than per-metric calls on sqlite),
and marks the run terminated last, so a run that shows FINISHED in the UI has all
its data. If writing fails half-way the run is marked FAILED, never left looking
complete.

Store: ``tracking_uri`` if given, else ``MLFLOW_TRACKING_URI``, else MLflow's
default, ``sqlite:///mlflow.db`` in the working folder, so plain ``mlflow ui``
(or ``harness ui``) in that folder shows the runs. A new sqlite store starts as a
copy of an empty, migrated database (:mod:`harness.store_template`).
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


def _entities(record: Record, parent_run_id: str | None):
    """``(tags, metrics, params, artifacts)`` of a run holding ``record``."""
    from mlflow.entities import Metric, Param

    tags = {k: str(v)[:5000] for k, v in record.tags.items()}
    if record.params:  # every run carries its config hash without the seed (harness compare)
        tags.setdefault(NOSEED_TAG, seedless_config_hash(record.params))
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    ts = record.end_ms or int(time.time() * 1000)
    metrics = [Metric(k, float(v), ts, 0) for k, v in record.metrics.items()]
    for name, points in record.series.items():
        metrics.extend(Metric(name, float(v), ts, int(step)) for step, v in points)
    params = [Param(k, str(v)[:6000]) for k, v in record.params.items()]
    artifacts = dict(record.artifacts)
    if record.error and "traceback.txt" not in artifacts:
        artifacts["traceback.txt"] = record.error.encode()
    return tags, metrics, params, artifacts


def _artifact_tree(root: Path, artifacts: dict[str, bytes]) -> None:
    """Write ``artifacts`` (relative path: bytes) under ``root``, refusing paths that leave it."""
    base = root.resolve()
    for rel, data in artifacts.items():
        path = (base / rel).resolve()
        if base not in path.parents:
            raise ValueError(f"artifact path {rel!r} leaves the run's artifact folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class MlflowTracker:
    """Writes records to one MLflow experiment."""

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = "harness"):
        from harness.store import check_store, opening_error

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = experiment_name
        check_store(self.tracking_uri)  # before mlflow is imported; seconds, not minutes of retries (harness.store)
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        from harness.store_template import seed_new_store

        seed_new_store(self.tracking_uri)  # a new sqlite store: a migrated copy, not ~1.5 s of migrations
        try:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            self._open_experiment(experiment_name)
        except Exception as exc:
            raise opening_error(self.tracking_uri, exc) from exc

    def _open_experiment(self, experiment_name: str) -> None:
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment_name, artifact_location=self._artifact_root())
            except Exception:
                # Another process created it between our lookup and create.
                experiment = self.client.get_experiment_by_name(experiment_name)
                if experiment is None:
                    raise
                self.experiment_id = experiment.experiment_id
        else:
            self.experiment_id = experiment.experiment_id

    def _artifact_root(self) -> str | None:
        """Where a new experiment's artifacts go, for a sqlite store: ``mlruns/`` beside
        the database file. MLflow's default is ``./mlruns`` under the working folder
        of whichever process creates the experiment, which scatters one store's
        artifacts over folders (and put a test's into the source tree). None for
        other stores (a server chooses its own)."""
        from harness.store import sqlite_path

        path = sqlite_path(self.tracking_uri)
        if path is None:
            return None
        return (Path(path).resolve().parent / "mlruns").as_uri()

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
        artifacts, then the terminal status. (:meth:`write_many` writes several
        records to an sqlite store in one transaction.)
        """
        tags, metrics, params, artifacts = _entities(record, parent_run_id)
        run_id = self.create_run(run_name, tags=tags, start_ms=record.start_ms)
        try:
            self._log_batches(run_id, metrics, params)
            if artifacts:
                self._log_artifacts(run_id, artifacts)
            self.client.set_terminated(run_id, status=record.status, end_time=record.end_ms or None)
        except BaseException:
            self.client.set_terminated(run_id, status=FAILED)
            raise
        return run_id

    def write_many(self, items: list[tuple[Record, str, str | None]]) -> list[str | Exception]:
        """Write ``(record, run_name, parent_run_id)`` items; each one's run id, or the
        exception that kept it out of the store.

        On an sqlite store all the runs go in one transaction (one fsync instead of
        ~7 per run), complete with their final status: a run is either absent or
        whole. If that fails, each record is tried on its own, so one the store
        refuses does not take the others with it. Other stores: :meth:`write` per record.
        """
        store = self._sql_store()
        if store is None:
            out: list[str | Exception] = []
            for record, name, parent in items:
                try:
                    out.append(self.write(record, name, parent_run_id=parent))
                except Exception as exc:
                    out.append(exc)
            return out
        try:
            return list(self._write_sql(store, items))
        except Exception as exc:
            if len(items) == 1:
                return [exc]
        out = []
        for item in items:
            try:
                out.extend(self._write_sql(store, [item]))
            except Exception as exc:
                out.append(exc)
        return out

    def _sql_store(self):
        """MLflow's SQLAlchemy store behind an sqlite URI (None for other stores)."""
        if not self.tracking_uri.startswith("sqlite:"):
            return None
        try:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            store = self.client._tracking_client.store
        except (ImportError, AttributeError):  # pragma: no cover - another MLflow layout
            return None
        return store if isinstance(store, SqlAlchemyStore) else None

    def _write_sql(self, store, items: list[tuple[Record, str, str | None]]) -> list[str]:
        """Runs written as MLflow's ``create_run`` + ``log_batch`` + ``set_terminated`` would
        leave them (tables runs, tags, params, metrics, latest_metrics), in one transaction;
        the artifacts first, so a committed run has them."""
        import uuid

        from mlflow.entities import LifecycleStage, RunTag
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
        from mlflow.utils.uri import append_to_uri_path
        from mlflow.utils.validation import _validate_batch_log_data
        from sqlalchemy import insert

        experiment = store.get_experiment(self.experiment_id)
        if experiment.lifecycle_stage != LifecycleStage.ACTIVE:
            raise ValueError(f"experiment {self.experiment_name!r} is deleted; restore it or choose another name")
        rows: dict[str, list[dict]] = {"runs": [], "tags": [], "params": [], "metrics": [], "latest": []}
        ids = []
        now = int(time.time() * 1000)
        for record, run_name, parent in items:
            tags, metrics, params, artifacts = _entities(record, parent)
            tags.setdefault("mlflow.runName", run_name)
            _, params, tag_list = _validate_batch_log_data(metrics, params, [RunTag(k, v) for k, v in tags.items()])
            run_id = uuid.uuid4().hex
            artifact_uri = append_to_uri_path(experiment.artifact_location, run_id, type(store).ARTIFACTS_FOLDER_NAME)
            if artifacts:
                with tempfile.TemporaryDirectory(prefix="harness-artifacts-") as tmp:
                    _artifact_tree(Path(tmp), artifacts)
                    get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri).log_artifacts(tmp)
            rows["runs"].append(dict(
                run_uuid=run_id, name=tags["mlflow.runName"], artifact_uri=artifact_uri,
                experiment_id=int(self.experiment_id), source_type="UNKNOWN", source_name="", entry_point_name="",
                user_id=tags.get("mlflow.user", "unknown"), status=record.status, start_time=record.start_ms or now,
                end_time=record.end_ms or now, deleted_time=None, source_version="", lifecycle_stage=LifecycleStage.ACTIVE,
            ))
            rows["tags"].extend(dict(key=t.key, value=t.value, run_uuid=run_id) for t in tag_list)
            rows["params"].extend(dict(key=p.key, value=p.value, run_uuid=run_id) for p in params)
            latest: dict[str, dict] = {}
            seen = set()
            for m in metrics:
                is_nan, value = store.sanitize_metric_value(m.value)
                row = dict(key=m.key, value=value, timestamp=m.timestamp, step=m.step, is_nan=is_nan, run_uuid=run_id)
                if (m.key, m.value, m.timestamp, m.step) in seen:
                    continue
                seen.add((m.key, m.value, m.timestamp, m.step))
                rows["metrics"].append(row)
                old = latest.get(m.key)
                if old is None or (m.step, m.timestamp, value) > (old["step"], old["timestamp"], old["value"]):
                    latest[m.key] = row
            rows["latest"].extend(latest.values())
            ids.append(run_id)
        with store.ManagedSessionMaker(read_only=False) as session:
            for model, key in ((SqlRun, "runs"), (SqlTag, "tags"), (SqlParam, "params"), (SqlMetric, "metrics"),
                               (SqlLatestMetric, "latest")):
                if rows[key]:
                    session.execute(insert(model.__table__), rows[key])
        return ids

    def _log_batches(self, run_id: str, metrics: list, params: list) -> None:
        # MLflow's limits per log_batch call: 100 params, 1000 metrics, 1000 entities.
        while metrics or params:
            chunk_params, params = params[:_MAX_PARAMS], params[_MAX_PARAMS:]
            room = _MAX_ENTITIES - len(chunk_params)
            chunk_metrics, metrics = metrics[:room], metrics[room:]
            self.client.log_batch(run_id, metrics=chunk_metrics, params=chunk_params)

    def _log_artifacts(self, run_id: str, artifacts: dict[str, bytes]) -> None:
        with tempfile.TemporaryDirectory(prefix="harness-artifacts-") as tmp:
            _artifact_tree(Path(tmp), artifacts)
            self.client.log_artifacts(run_id, tmp)

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
