"""The tracking store checked first, and records kept on disk when it fails.

**Checked first.** :func:`check_store` looks at a tracking URI without importing
mlflow and answers in seconds: an unknown scheme, an sqlite file that is not a
database, a database or folder this process cannot write, a tracking server that does
not answer a TCP connect. :class:`~harness.tracking.MlflowTracker` calls it before
opening the store, and turns whatever MLflow raises while opening into a
:class:`StoreError` too; the single-run path and the sweep driver both open the
store before anything runs. Each message names the URI (or file) and what to do.

**Nothing computed is lost.** A record that cannot be written once its run is done
(the store went away mid-run) is kept as a *pending record*:
``<cache_dir>/pending_records/<config_hash>-<UTC time>.pkl`` (``cache_dir`` is the
run's, ``.harness_cache`` by default), written atomically (temporary file, fsync,
rename). The next ``harness run`` writing to the same store writes it first, and
``harness flush [--cache-dir DIR]`` writes every pending record to the store it was
meant for. Each pending record carries an id (tag ``harness.pending_id``), so a
flush interrupted after writing never writes a record twice: the file is removed
only once its run is FINISHED (or FAILED, as the run itself ended) in the store.
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
import socket
import sqlite3
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = [
    "PENDING_DIR",
    "PendingRecord",
    "StoreError",
    "check_store",
    "flush_pending",
    "keep_pending",
    "pending_files",
]

#: Folder of pending records, inside the run's ``cache_dir``.
PENDING_DIR = "pending_records"

#: URI schemes MLflow 3.17 can track to (``postgresql+psycopg2`` counts as ``postgresql``).
SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc", "file")

#: Seconds to wait for a tracking server to accept a TCP connection.
CONNECT_TIMEOUT_S = 5.0

_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(RuntimeError):
    """The tracking store cannot be used; the message names it and what to do."""


def _env_note(uri: str) -> str:
    return " (from MLFLOW_TRACKING_URI)" if os.environ.get("MLFLOW_TRACKING_URI") == uri else ""


def sqlite_path(uri: str) -> Optional[Path]:
    """The file of an ``sqlite:///`` URI, or None (in-memory, or not sqlite)."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri[len("sqlite:") :]
    if not rest.startswith("///"):
        return None
    path = rest[3:].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


_FINISHED_HASHES_SQL = """
SELECT t.value FROM tags t
JOIN runs r ON r.run_uuid = t.run_uuid
JOIN experiments e ON e.experiment_id = r.experiment_id
WHERE t.key = 'harness.config_hash' AND r.status = 'FINISHED' AND r.lifecycle_stage = 'active' AND e.name = ?
"""


def finished_hashes_hint(uri: str, experiment_name: str) -> Optional[set]:
    """Config hashes of the FINISHED runs of ``experiment_name`` in a sqlite store, read with
    sqlite3 (milliseconds, no MLflow import); an empty set for a store not made yet; None
    when it cannot tell (not sqlite, an unreadable file, another schema).

    Only a hint, for whether a sweep has any work left before MLflow has opened the store
    (:meth:`harness.launcher.harness_hook.HarnessSweepHook.likely_to_run`); what is skipped
    is decided by MLflow's own answer (:meth:`harness.tracking.MlflowTracker.finished_runs`).
    """
    path = sqlite_path(uri)
    if path is None:
        return None
    if not path.exists():
        return set()
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            return {row[0] for row in con.execute(_FINISHED_HASHES_SQL, (experiment_name,))}
        finally:
            con.close()
    except sqlite3.Error:
        return None


def check_store(uri: str) -> None:
    """Raise :class:`StoreError` if ``uri`` is clearly unusable; fast, no mlflow import."""
    where = f"tracking store {uri!r}{_env_note(uri)}"
    scheme = urllib.parse.urlparse(uri).scheme.split("+", 1)[0].lower()
    if scheme not in SCHEMES or (scheme == "" and uri):
        raise StoreError(
            f"{where}: unknown URI scheme {scheme or '(none)'!r}; use sqlite:///PATH/mlflow.db, "
            "http(s)://HOST:PORT of an MLflow server, or a database URL (postgresql://...); "
            "set MLFLOW_TRACKING_URI or tracking_uri= accordingly"
        )
    if scheme == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise StoreError(
            f"{where}: MLflow's file store is deprecated and refused by MLflow 3; "
            "use sqlite:///PATH/mlflow.db (or set MLFLOW_ALLOW_FILE_STORE=true)"
        )
    if scheme == "sqlite":
        _check_sqlite(uri, where)
    elif scheme in ("http", "https"):
        _check_server(uri, where)


def _check_sqlite(uri: str, where: str) -> None:
    path = sqlite_path(uri)
    if path is None:
        return
    path = path if path.is_absolute() else Path.cwd() / path
    if path.exists():
        if path.is_dir():
            raise StoreError(f"{where}: {path} is a folder, not a database file; point the URI at a file")
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(f"{where}: cannot read {path} ({exc.strerror}); fix its permissions") from None
        if head and head != _SQLITE_MAGIC:
            raise StoreError(
                f"{where}: {path} is not an SQLite database (corrupt, or another kind of file); "
                "move it aside (runs go to a fresh database) or restore it from a backup"
            )
        if not os.access(path, os.W_OK):
            raise StoreError(
                f"{where}: {path} is read-only; make it writable (chmod u+w) or point "
                "MLFLOW_TRACKING_URI at a database you can write"
            )
        folder = path.parent
    else:
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # MLflow creates the missing folders
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(
            f"{where}: the folder {folder} is read-only (SQLite writes its journal next to the database); "
            "make it writable or point MLFLOW_TRACKING_URI at a database in a folder you can write"
        )


def _check_server(uri: str, where: str) -> None:
    parsed = urllib.parse.urlparse(uri)
    host = parsed.hostname or "localhost"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise StoreError(
            f"{where}: no MLflow server answers at {host}:{port} ({reason} within {CONNECT_TIMEOUT_S:g} s); "
            "start it (mlflow server --host 127.0.0.1 --port PORT) or fix MLFLOW_TRACKING_URI"
        ) from None


def store_reason(exc: BaseException) -> str:
    """The telling line of a store error: the database driver's own (``(sqlite3.OperationalError)
    attempt to write a readonly database``) rather than SQLAlchemy's preamble."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith("(") and "Error)" in line.split(" ", 1)[0]:
            return line
    return lines[0] if lines else type(exc).__name__


def opening_error(uri: str, exc: BaseException) -> StoreError:
    """A :class:`StoreError` for what MLflow raised while opening ``uri``."""
    text = store_reason(exc)
    hint = "check the store (mlflow ui --backend-store-uri URI) or point MLFLOW_TRACKING_URI elsewhere"
    low = text.lower()
    if "not a database" in low or "malformed" in low:
        hint = "the file is corrupt: move it aside (runs go to a fresh database) or restore it from a backup"
    elif "readonly" in low or "read-only" in low or "unable to open" in low:
        hint = "make the database and its folder writable, or point MLFLOW_TRACKING_URI elsewhere"
    return StoreError(f"tracking store {uri!r}{_env_note(uri)}: {type(exc).__name__}: {text}; {hint}")


# --------------------------------------------------------------------------- pending records


@dataclass
class PendingRecord:
    """A record waiting to be written, and where it goes."""

    record: Any  # harness.record.Record
    run_name: str
    tracking_uri: str
    experiment_name: str
    parent_run_id: Optional[str] = None
    error: str = ""  # why it could not be written
    pending_id: str = ""
    cwd: str = field(default_factory=os.getcwd)


def pending_dir(cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir).expanduser().resolve() / PENDING_DIR


def pending_files(cache_dir: str | os.PathLike) -> list[Path]:
    folder = pending_dir(cache_dir)
    return sorted(folder.glob("*.pkl")) if folder.is_dir() else []


def keep_pending(cache_dir: str | os.PathLike, pending: PendingRecord) -> Path:
    """Write ``pending`` atomically under ``<cache_dir>/pending_records``; return its path."""
    folder = pending_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    chash = pending.record.tags.get("harness.config_hash", "") or "nohash"
    path = folder / f"{chash}-{stamp}.pkl"
    pending.pending_id = pending.pending_id or path.stem
    pending.record.tags["harness.pending_id"] = pending.pending_id
    fd, tmp = tempfile.mkstemp(prefix=".pending-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(pending, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _same_store(a: str, b: str) -> bool:
    pa, pb = sqlite_path(a), sqlite_path(b)
    if pa is not None and pb is not None:
        return pa.resolve() == pb.resolve()
    return a.rstrip("/") == b.rstrip("/")


def flush_pending(cache_dir: str | os.PathLike, tracking_uri: Optional[str] = None, out=None) -> tuple[int, int]:
    """Write pending records (only those for ``tracking_uri`` if given); ``(written, left)``.

    A record whose store still fails stays on disk; the message says why.
    """
    from harness.tracking import MlflowTracker

    out = out or sys.stderr
    written = left = 0
    trackers: dict[tuple[str, str], Any] = {}
    for path in pending_files(cache_dir):
        try:
            with open(path, "rb") as fh:
                pending: PendingRecord = pickle.load(fh)
        except Exception as exc:  # unreadable: keep it, say so
            print(f"harness: pending record {path} cannot be read ({type(exc).__name__}: {exc}); left in place", file=out)
            left += 1
            continue
        if tracking_uri is not None and not _same_store(pending.tracking_uri, tracking_uri):
            left += 1
            continue
        key = (pending.tracking_uri, pending.experiment_name)
        try:
            tracker = trackers.get(key) or MlflowTracker(pending.tracking_uri, pending.experiment_name)
            trackers[key] = tracker
            run_id = tracker.find_pending(pending.pending_id, pending.record.status)
            if run_id is None:
                run_id = tracker.write(pending.record, pending.run_name, parent_run_id=pending.parent_run_id)
        except Exception as exc:
            print(f"harness: pending record {path} still cannot be written: {exc}", file=out)
            left += 1
            continue
        path.unlink()
        written += 1
        print(
            f"harness: wrote pending record {path.name} as run {run_id} ({pending.record.status}) "
            f"in experiment {pending.experiment_name!r} at {pending.tracking_uri}",
            file=out,
        )
    return written, left
