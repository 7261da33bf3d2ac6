"""A new sqlite store starts as a copy of an empty, already migrated database.

MLflow makes a new sqlite store by running its schema migrations one by one
(alembic, ~70 of them): 1.3-2.2 s on a 2-core machine, paid by every store that
does not exist yet (a user's first sweep, every test and benchmark folder). The
schema depends only on the MLflow version, so the migrated, empty database is
made once per version in the user's cache (``$HARNESS_CACHE_HOME``, else
``$XDG_CACHE_HOME/harness``, else ``~/.cache/harness``) and copied into place.
MLflow then finds every table at its head revision (it checks, as for any
store) and adds only its Default experiment, with this store's own artifact
location, exactly as after migrating.

Only a store that does not exist is seeded. The copy is hard-linked into place,
which fails if the file appeared meanwhile, so two processes creating one store
never overwrite each other's runs. Whatever keeps the template from being made
or copied (a read-only cache, a file system without hard links, an MLflow
without the function used) leaves the new store to MLflow, which migrates it as
before: it costs time, never a result. ``HARNESS_STORE_TEMPLATE=0`` turns the
template off.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

__all__ = ["CACHE_ENV", "TEMPLATE_ENV", "seed_new_store", "template_path", "user_cache_dir"]

CACHE_ENV = "HARNESS_CACHE_HOME"
TEMPLATE_ENV = "HARNESS_STORE_TEMPLATE"

_log = logging.getLogger(__name__)


def user_cache_dir() -> Path:
    """The harness's per-user cache folder (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "harness"


def _enabled() -> bool:
    return os.environ.get(TEMPLATE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def template_path() -> Path:
    """Where this MLflow version's template lives (it may not exist yet)."""
    import mlflow

    return user_cache_dir() / "mlflow-store" / f"mlflow-{mlflow.__version__}.db"


def _make_template(path: Path) -> None:
    """Create the migrated, empty database at ``path`` (atomically, under a lock)."""
    import sqlalchemy
    from mlflow.store.db import utils as db_utils

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return  # another process made it while this one waited
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".db")
        os.close(fd)
        os.unlink(tmp)  # sqlite creates the file itself
        try:
            engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
            try:
                db_utils._initialize_tables(engine)
                db_utils._verify_schema(engine)
            finally:
                engine.dispose()
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)


def seed_new_store(uri: str) -> bool:
    """Copy the migrated template to ``uri``'s sqlite file if that file does not exist.

    True if this call created the store from the template; False if the store is not
    a new sqlite file, or the template could not be used (MLflow then migrates).
    """
    from harness.store import sqlite_path

    path = sqlite_path(uri)
    if path is None or not _enabled():
        return False
    path = path if path.is_absolute() else Path.cwd() / path
    if path.exists():
        return False
    try:
        template = template_path()
        if not template.exists():
            _make_template(template)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A unique name opened with O_EXCL and the umask's mode, as sqlite would create the file.
        tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        try:
            with open(template, "rb") as src, open(tmp, "xb") as dst:
                shutil.copyfileobj(src, dst)
            os.link(tmp, path)  # fails if the store appeared meanwhile: theirs is kept
        finally:
            tmp.unlink(missing_ok=True)
    except FileExistsError:
        return False
    except Exception as exc:  # the store is then made by MLflow itself, as without a template
        _log.debug("new store %s not seeded from a template: %s: %s", path, type(exc).__name__, exc)
        return False
    return True
