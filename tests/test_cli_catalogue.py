"""Issue 12's catalogue of bad inputs, through the ``harness`` command line.

Each case is a command a user could type (arguments, environment, a broken store) and
must give: a non-zero exit, one or two lines on stderr naming the input, no traceback
(without ``--verbose``), no RUNNING run left in the store and no child process (a Ray)
left behind. One part is derived from the plugins' config dataclasses (every field
with declared rules gets a value outside them, typed on the command line); the rest is
written from the CLI: overrides, sweeps, launcher options, stores, ``ui``, ``plugins``,
``flush``, ``dashboard`` and ``compare``.

The cases run ``harness.cli.main`` in this process (a few hundred ms each instead of
seconds for a new interpreter); tests/test_reliability.py runs some of the same failures
as real subprocesses, with exit codes seen by the shell.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import signal
import socket
import sqlite3
import typing
from pathlib import Path

import pytest

from harness.host import get_host
from harness.validation import rule_of

from test_validation import _base_type, _outside

ROOT = Path(__file__).resolve().parent.parent

#: The plugin each kind is combined with when another kind's plugin is under test.
BASE = {"workload": "dot_products", "technique": "none", "accelerator": "exact"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_value(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)


def _derived(per_plugin: int = 2):
    """A bad value for the first ``per_plugin`` fields with rules of every plugin (the
    first value the rules imply). tests/test_validation.py checks every field and bound
    in-process; this checks that the command line reports them the same way."""
    cases = []
    for info in get_host().infos():
        hints = typing.get_type_hints(info.spec.config)
        taken = 0
        for f in dataclasses.fields(info.spec.config):
            if taken == per_plugin:
                break
            rule = rule_of(f)
            base, container = _base_type(hints[f.name])
            if rule is None or container or base not in (int, float, str):
                continue
            outside = _outside(rule, base)
            if not outside:
                continue
            label, bad = outside[0]
            choices = dict(BASE)
            if info.kind == "technique":
                choices["workload"] = info.spec.smoke_workload
            elif info.kind == "accelerator" and info.spec.needs:  # as the conformance kit's smoke run
                host = get_host()
                choices["workload"] = next(w for w in host.names("workload")
                                           if info.spec.needs <= host.spec("workload", w).provides)
            choices[info.kind] = info.name
            key = f"{info.kind}.{f.name}"
            args = ["run", *(f"{k}={v}" for k, v in choices.items()), f"{key}={_cli_value(bad)}"]
            cases.append(pytest.param(args, {}, None, [f"{key}=", "valid"], id=f"{info.name}.{f.name}-{label}"))
            taken += 1
    return cases


def _store_corrupt(work: Path) -> None:
    (work / "mlflow.db").write_bytes(b"this is not a database" * 100)


def _a_file(work: Path) -> None:
    (work / "a_file").write_text("a file, not a folder")


def _store_not_a_file(work: Path) -> None:
    (work / "mlflow.db").mkdir()


C = _closed_port()
#: (id, args, environment, prepare(work) or None, needles)
WRITTEN = [
    # -- plugin choices and keys
    ("unknown-workload", ["run", "workload=nope"], {}, None, ["workload=nope", "dot_products"]),
    ("unknown-technique", ["run", "technique=nope"], {}, None, ["technique=nope", "admm"]),
    ("unknown-accelerator", ["run", "accelerator=nope"], {}, None, ["accelerator=nope", "ds_cim"]),
    ("unknown-experiment", ["run", "+experiment=nope"], {}, None, ["+experiment=nope", "quickstart"]),
    ("unknown-launcher", ["run", "hydra/launcher=nope"], {}, None, ["hydra/launcher=nope", "harness_ray"]),
    ("unknown-top-key", ["run", "nope=1"], {}, None, ["nope"]),
    ("unknown-plugin-key", ["run", "workload.nope=1"], {}, None, ["workload.nope"]),
    ("unknown-plugin-key-plus", ["run", "+workload.bogus=1"], {}, None, ["bogus"]),
    ("unknown-when-choice", ["run", "when.accelerator.nope.rows=64"], {}, None, ["when.accelerator.nope"]),
    ("incompatible-plugins", ["run", "workload=dot_products", "technique=admm"], {}, None, ["admm", "dot_products"]),
    # -- values and syntax
    ("int-given-text", ["run", "workload.count=abc"], {}, None, ["workload.count=abc"]),
    ("int-given-float", ["run", "workload.count=1.5"], {}, None, ["workload.count=1.5"]),
    ("float-given-text", ["run", "workload=mnist_lenet5", "workload.lr=fast"], {}, None, ["workload.lr=fast"]),
    ("seed-text", ["run", "seed=abc"], {}, None, ["seed=abc"]),
    ("seed-negative", ["run", "seed=-1"], {}, None, ["seed=-1", "valid is an integer >= 0"]),
    ("seed-float", ["run", "seed=1.5"], {}, None, ["seed=1.5"]),
    ("seed-huge", ["run", f"seed={2**64}"], {}, None, [f"seed={2**64}"]),
    ("empty-value", ["run", "workload.count="], {}, None, ["workload.count="]),
    ("no-equals", ["run", "workload.count"], {}, None, ["workload.count"]),
    ("no-key", ["run", "=3"], {}, None, ["=3"]),
    ("unclosed-list", ["run", "workload.count=[1,2"], {}, None, ["workload.count=[1,2"]),
    ("list-for-int", ["run", "workload.count=[1,2]"], {}, None, ["workload.count=[1,2]"]),
    ("huge-int", ["run", "workload.count=99999999999999999999"], {}, None, ["workload.count=99999999999999999999"]),
    ("float-nan-for-int", ["run", "workload.count=nan"], {}, None, ["workload.count=nan"]),
    ("string-choice", ["run", "workload.distribution=bogus"], {}, None, ["workload.distribution=", "bogus"]),
    ("experiment-name-empty", ["run", "experiment_name="], {}, None, ["experiment_name=''"]),
    ("cache-dir-empty", ["run", "cache_dir="], {}, None, ["cache_dir=''"]),
    # -- sweeps
    ("sweep-empty-range", ["run", "-m", "seed=range(0)"], {}, None, ["seed=range(0)", "no values"]),
    ("sweep-backwards-range", ["run", "-m", "seed=range(5,0)"], {}, None, ["seed=range(5,0)", "no values"]),
    ("sweep-one-bad-job", ["run", "-m", "workload.count=0,64"], {}, None, ["workload.count=0", "nothing was started"]),
    ("sweep-unknown-choice", ["run", "-m", "workload=nope,dot_products"], {}, None, ["nope"]),
    ("sweep-bad-seed", ["run", "-m", "seed=-1,0"], {}, None, ["seed=-1"]),
    ("sweep-nan-lr", ["run", "-m", "workload=mnist_lenet5", "workload.lr=0.1,nan"], {}, None, ["workload.lr=nan"]),
    ("sweep-unknown-launcher", ["run", "-m", "hydra/launcher=nope", "seed=0,1"], {}, None, ["hydra/launcher=nope"]),
    ("sweep-flag-after-overrides", ["run", "seed=0", "-m", "workload.count=0,64"], {}, None, ["workload.count=0"]),
    # -- launcher options
    ("launcher-cpus-zero", ["run", "-m", "seed=0,1", "hydra.launcher.cpus_per_job=0"], {}, None,
     ["hydra.launcher.cpus_per_job=0"]),
    ("launcher-concurrent-zero", ["run", "-m", "seed=0,1", "hydra.launcher.max_concurrent=0"], {}, None,
     ["hydra.launcher.max_concurrent=0"]),
    ("launcher-jobs-per-task-zero", ["run", "-m", "seed=0,1", "hydra.launcher.max_jobs_per_task=0"], {}, None,
     ["hydra.launcher.max_jobs_per_task=0", ">= 1"]),
    ("launcher-retries-negative", ["run", "-m", "seed=0,1", "hydra.launcher.max_retries=-1"], {}, None,
     ["hydra.launcher.max_retries=-1"]),
    ("launcher-restarts-negative", ["run", "-m", "seed=0,1", "hydra.launcher.max_restarts=-1"], {}, None,
     ["hydra.launcher.max_restarts=-1"]),
    ("launcher-timeout-zero", ["run", "-m", "seed=0,1", "hydra.launcher.connect_timeout_s=0"], {}, None,
     ["hydra.launcher.connect_timeout_s=0"]),
    ("launcher-unknown-option", ["run", "-m", "seed=0,1", "+hydra.launcher.bogus=1"], {}, None, ["bogus"]),
    ("launcher-address-garbage", ["run", "-m", "seed=0,1", "hydra.launcher.address=not an address"], {}, None,
     ["hydra.launcher.address=not an address"]),
    ("launcher-address-closed", ["run", "-m", "seed=0,1", f"hydra.launcher.address=127.0.0.1:{C}",
                                 "hydra.launcher.connect_timeout_s=1"], {}, None, [f"127.0.0.1:{C}", "nothing answers"]),
    # -- the store
    ("store-unknown-scheme", ["run"], {"MLFLOW_TRACKING_URI": "garbage"}, None, ["garbage"]),
    ("store-unknown-scheme-key", ["run", "tracking_uri=foo://x"], {}, None, ["foo://x"]),
    ("store-under-a-file", ["run"], {"MLFLOW_TRACKING_URI": "sqlite:///a_file/m.db"}, _a_file, ["a_file"]),
    ("store-corrupt", ["run"], {}, _store_corrupt, ["mlflow.db", "not an SQLite database"]),
    ("store-is-a-folder", ["run"], {}, _store_not_a_file, ["mlflow.db"]),
    ("store-server-down", ["run"], {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{C}"}, None, [f"127.0.0.1:{C}"]),
    ("store-server-down-sweep", ["run", "-m", "seed=0,1"], {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{C}"}, None,
     [f"127.0.0.1:{C}"]),
    # -- the other commands
    ("unknown-command", ["nope"], {}, None, ["'nope'", "run"]),
    ("plugins-unknown-flag", ["plugins", "--bogus"], {}, None, ["--bogus"]),
    ("ui-port-too-big", ["ui", "--port", "99999"], {}, None, ["--port 99999", "1-65535"]),
    ("ui-port-zero", ["ui", "--port", "0"], {}, None, ["--port 0", "1-65535"]),
    ("ui-port-text", ["ui", "--port", "abc"], {}, None, ["abc"]),
    ("ui-bad-store", ["ui", "--tracking-uri", "garbage"], {}, None, ["garbage"]),
    ("ui-unknown-flag", ["ui", "--bogus"], {}, None, ["--bogus"]),
    ("flush-unknown-flag", ["flush", "--bogus"], {}, None, ["--bogus"]),
    ("dashboard-unknown-spec", ["dashboard", "no_such_spec"], {}, None, ["no_such_spec"]),
    ("dashboard-no-store", ["dashboard", "quickstart", "--experiment", "nope"], {}, None, ["nope"]),
    ("compare-no-mode", ["compare"], {}, None, ["--sweeps", "--commits"]),
    ("compare-no-store", ["compare", "--sweeps", "nope1", "nope2"], {}, None, ["no MLflow store", "--tracking-uri"]),
    ("compare-not-a-repo", ["compare", "--commits", "HEAD~1", "HEAD"], {}, None, ["not a git repository"]),
    ("compare-bad-factor", ["compare", "--sweeps", "a", "b", "--factor", "0"], {}, None, ["--factor"]),
    ("compare-zero-rounds", ["compare", "--commits", "HEAD~1", "HEAD", "--rounds", "0"], {}, None, ["--rounds 0", "1 or more"]),
    ("compare-rounds-with-sweeps", ["compare", "--sweeps", "a", "b", "--rounds", "3"], {}, None, ["--rounds", "--commits"]),
    ("compare-unknown-commit", ["compare", "--commits", "no-such-rev-1", "HEAD", "--repo", str(ROOT)], {}, None,
     ["no-such-rev-1"]),
]

CATALOGUE = _derived() + [pytest.param(a, e, p, n, id=i) for i, a, e, p, n in WRITTEN]


def _children() -> set[int]:
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    found.add(int(entry.name))
            except (OSError, IndexError):
                pass
    return found


@pytest.fixture
def work(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    sigint = signal.getsignal(signal.SIGINT)
    yield work
    signal.signal(signal.SIGINT, sigint)


def test_the_catalogue_is_broad():
    assert len(CATALOGUE) >= 60, len(CATALOGUE)
    derived = {p.id.split(".")[0] for p in _derived()}
    assert {"dot_products", "mnist_lenet5", "mnist_vit", "admm", "ds_cim"} <= derived


@pytest.mark.parametrize("args, env, prepare, needles", CATALOGUE)
def test_a_bad_input_is_refused_in_one_or_two_lines_naming_it(work, monkeypatch, args, env, prepare, needles):
    from harness.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if prepare is not None:
        prepare(work)
    before = _children()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own exit
            code = exc.code
    text = err.getvalue()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("[20", "20"))]
    assert code not in (0, None), f"exit {code}\n{text}"
    assert "Traceback" not in text, text
    assert 1 <= len(lines) <= 2, text
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    db = work / "mlflow.db"
    if db.is_file() and prepare is None:
        with contextlib.closing(sqlite3.connect(db)) as con:
            running = con.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0]
        assert running == 0, "a run was left RUNNING"
    assert not (_children() - before), "a child process (a Ray?) was left behind"
