"""A new sqlite store is a copy of a migrated template (harness.store_template):
the same database MLflow's own migrations make, never written over an existing store."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from harness.record import Record
from harness.store_template import CACHE_ENV, TEMPLATE_ENV, seed_new_store, template_path
from harness.tracking import MlflowTracker


@pytest.fixture
def cache_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("cache-home")
    monkeypatch.setenv(CACHE_ENV, str(home))
    monkeypatch.delenv(TEMPLATE_ENV, raising=False)
    return home


def _contents(db: Path) -> dict:
    """Schema and rows of every table, with the Default experiment's clock times left out."""
    con = sqlite3.connect(db)
    try:
        # A table's clauses as a set: MLflow's own migrations order CHECK constraints
        # differently from one process to another (alembic's batch mode rebuilds tables).
        out = {"schema": sorted((kind, name, frozenset(line.strip().rstrip(",") for line in (sql or "").splitlines()))
                                for kind, name, sql in con.execute(
                                    "select type, name, sql from sqlite_master where name not like 'sqlite_%'"))}
        for (table,) in con.execute("select name from sqlite_master where type='table'"):
            cols = [c[1] for c in con.execute(f'pragma table_info("{table}")')]
            keep = [c for c in cols if c not in ("creation_time", "last_update_time")]
            out[table] = sorted(con.execute(f'select {", ".join(chr(34) + c + chr(34) for c in keep)} from "{table}"'))
        return out
    finally:
        con.close()


def test_a_store_made_from_the_template_equals_one_mlflow_migrates(tmp_path, cache_home, monkeypatch):
    seeded, migrated = tmp_path / "seeded" / "mlflow.db", tmp_path / "migrated" / "mlflow.db"
    assert seed_new_store(f"sqlite:///{seeded}")
    assert template_path().is_file() and template_path().parent.parent == cache_home
    MlflowTracker(f"sqlite:///{seeded}", experiment_name="harness")
    monkeypatch.setenv(TEMPLATE_ENV, "0")
    assert not seed_new_store(f"sqlite:///{migrated}")
    assert not migrated.exists()
    MlflowTracker(f"sqlite:///{migrated}", experiment_name="harness")
    a, b = _contents(seeded), _contents(migrated)
    assert a["schema"] and a["alembic_version"]
    # Artifact locations sit beside each database: equal once the folder is named alike.
    for table in ("experiments",):
        a[table] = [tuple(str(v).replace(str(seeded.parent), "X") for v in row) for row in a[table]]
        b[table] = [tuple(str(v).replace(str(migrated.parent), "X") for v in row) for row in b[table]]
    assert a == b
    assert len(a["experiments"]) == 2  # MLflow's Default and the harness's own


def test_a_seeded_store_takes_runs_and_has_the_usual_file_mode(tmp_path, cache_home):
    db = tmp_path / "store" / "mlflow.db"
    tracker = MlflowTracker(f"sqlite:///{db}")
    assert template_path().is_file()
    rec = Record(status="FINISHED", metrics={"eval/accuracy": 0.5}, params={"seed": "0"}, tags={"t": "v"})
    run_id = tracker.write(rec, "r")
    run = tracker.client.get_run(run_id)
    assert run.data.metrics["eval/accuracy"] == 0.5 and run.info.status == "FINISHED"
    umask = os.umask(0)
    os.umask(umask)
    assert db.stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p.name for p in db.parent.iterdir() if p.name.endswith(".tmp")]


def test_an_existing_store_is_never_replaced(tmp_path, cache_home):
    db = tmp_path / "mlflow.db"
    tracker = MlflowTracker(f"sqlite:///{db}")
    run_id = tracker.write(Record(status="FINISHED", metrics={"m": 1.0}), "r")
    before = db.read_bytes()
    assert not seed_new_store(f"sqlite:///{db}")
    assert db.read_bytes() == before
    assert MlflowTracker(f"sqlite:///{db}").client.get_run(run_id).data.metrics == {"m": 1.0}
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")  # what sqlite leaves when another process has just created the file
    assert not seed_new_store(f"sqlite:///{empty}") and empty.read_bytes() == b""


def test_the_template_is_made_once_and_only_for_sqlite_files(tmp_path, cache_home):
    assert seed_new_store(f"sqlite:///{tmp_path / 'a.db'}")
    made = template_path().stat().st_mtime_ns
    assert seed_new_store(f"sqlite:///{tmp_path / 'b.db'}")
    assert template_path().stat().st_mtime_ns == made
    for uri in ("sqlite://", "sqlite:///:memory:", "http://127.0.0.1:5000", "postgresql://u@h/db"):
        assert not seed_new_store(uri)


def test_an_unusable_cache_leaves_the_store_to_mlflow(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    db = tmp_path / "mlflow.db"
    assert not seed_new_store(f"sqlite:///{db}")
    assert not db.exists()
    tracker = MlflowTracker(f"sqlite:///{db}")  # MLflow migrates it, as without a template
    assert tracker.client.get_experiment(tracker.experiment_id).name == "harness"
