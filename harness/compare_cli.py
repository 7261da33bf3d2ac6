"""``harness compare``: two sweeps, or one sweep at two commits, metric by metric.

::

    harness compare --sweeps A B [options]             # already in the store
    harness compare --commits REV1 REV2 [options] [OVERRIDES]   # run, then compare

``A``/``B`` name an experiment (``perf``; ``perf@abc123`` keeps its runs of that
commit), an experiment id, a sweep id or a sweep parent's run id (a prefix of 6+
characters is enough). ``--commits`` runs ``harness run -m OVERRIDES`` (default
``+experiment=perf``) at each commit in a temporary git worktree
(:mod:`harness.commits`) into the configured store, then compares the two sets of
runs (:mod:`harness.compare`). Exit status: 0 no regression, 1 a metric got worse
beyond ``--factor`` (or a sweep failed), 2 a bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import tempfile
import time
from pathlib import Path

from harness.commits import CompareError

__all__ = ["main"]

DEFAULT_OVERRIDES = ["+experiment=perf"]


def _parser() -> argparse.ArgumentParser:
    from harness.cli import argument_parser

    p = argument_parser(
        "harness compare",
        description="Compare two sweeps, or the same sweep at two git commits, metric by metric "
        "(runs matched by config hash without the seed; seeds tell a change from noise).",
        epilog="Exit status: 0 no regression, 1 a metric worse beyond --factor (or a sweep failed), 2 bad input.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--sweeps", nargs=2, metavar=("A", "B"),
                      help="experiment name (NAME@COMMIT: its runs of that commit), experiment id, sweep id or sweep parent run id")
    what.add_argument("--commits", nargs=2, metavar=("REV1", "REV2"), help="git revisions to run the sweep at, before and after")
    p.add_argument("overrides", nargs="*", help="with --commits: the sweep's overrides (default: +experiment=perf)")
    p.add_argument("--factor", type=float, default=1.1, help="ratio of medians beyond which a metric changed (default 1.1)")
    p.add_argument("--metrics", action="append", default=[], metavar="GLOB", help="compare only these metrics (repeatable)")
    p.add_argument("--higher", action="append", default=[], metavar="GLOB", help="metrics where higher is better (repeatable)")
    p.add_argument("--lower", action="append", default=[], metavar="GLOB", help="metrics where lower is better (repeatable)")
    p.add_argument("--only-changed", action="store_true", help="leave unchanged rows out of the table")
    p.add_argument("--tracking-uri", default="", help="the store (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--repo", default=".", help="with --commits: the git repository (default: the one holding the working folder)")
    p.add_argument("--rounds", type=int, default=None,
                   help="with --commits: run the sweep this many times at each commit, interleaved A B, B A, ... "
                        "so drift of the machine loads both sides alike (default 2)")
    p.add_argument("--skip-existing", action="store_true",
                   help="with --commits: reuse the finished sweeps of the same commit and overrides from the store "
                        "instead of running that side")
    p.add_argument("--verbose", action="store_true", help="with --commits: show the sweeps' output")
    return p


def main(args: list[str]) -> int:
    parser = _parser()
    ns = parser.parse_args(args)
    if ns.sweeps and ns.overrides:
        return _fail(f"overrides {' '.join(ns.overrides)} are for --commits; --sweeps compares runs already in the store")
    if ns.sweeps and ns.rounds is not None:
        return _fail("--rounds is for --commits; --sweeps compares runs already in the store")
    if ns.rounds is None:
        ns.rounds = 2
    if ns.rounds < 1:
        return _fail(f"--rounds {ns.rounds}: valid is 1 or more (sweeps per commit, interleaved)")
    if not ns.factor or ns.factor < 1.0:
        return _fail(f"--factor {ns.factor}: valid is a ratio >= 1 (for example 1.1)")
    try:
        return _compare(ns)
    except CompareError as exc:
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:  # the worktrees are removed on the way out
        print("\nharness: compare: interrupted (Ctrl-C); runs already recorded stay in the store", file=sys.stderr)
        return 130


def _fail(message: str, code: int = 2) -> int:
    print(f"harness: compare: {message}", file=sys.stderr, flush=True)
    return code


def _reader(uri_arg: str, must_exist: bool):
    from harness.store import StoreError, check_store, sqlite_path
    from harness.tracking import resolve_tracking_uri
    from harness.tracking_read import StoreReader

    uri = resolve_tracking_uri(uri_arg or None)
    path = sqlite_path(uri)
    if must_exist and path is not None and not path.exists():
        raise CompareError(f"no MLflow store at {path} ({uri}); run a sweep first or give --tracking-uri")
    try:
        check_store(uri)
    except StoreError as exc:
        raise CompareError(str(exc), 1) from None
    return StoreReader(uri)


def _compare(ns) -> int:
    from harness.compare import compare, format_table, group_runs

    if ns.sweeps:
        reader = _reader(ns.tracking_uri, must_exist=True)
        sides = [_resolve_set(reader, name) for name in ns.sweeps]
    else:
        sides = _run_commits(ns)
    (label_a, runs_a), (label_b, runs_b) = sides
    before, after = group_runs(runs_a), group_runs(runs_b)
    for label, configs, name in ((label_a, before, "A"), (label_b, after, "B")):
        if not configs:
            raise CompareError(f"{label}: no FINISHED runs to compare")
    matched = set(before) & set(after)
    if not matched:
        raise CompareError(
            f"no matching configs: none of the {len(before)} config(s) of {label_a} has the same config "
            f"(hash without the seed) as one of the {len(after)} of {label_b}"
        )
    rows = compare(before, after, ns.factor, ns.metrics, ns.higher, ns.lower)
    if not rows:
        raise CompareError(f"no metric of the {len(matched)} matching config(s) matches --metrics {' '.join(ns.metrics)}")
    print(f"before: {label_a}\nafter:  {label_b}")
    print(f"{len(matched)} config(s) matched by config hash without the seed"
          + (f"; left out, only before: {len(before) - len(matched)}" if len(before) > len(matched) else "")
          + (f"; only after: {len(after) - len(matched)}" if len(after) > len(matched) else ""))
    print()
    print(format_table(rows, ns.only_changed))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict.split(" ")[0]] = counts.get(r.verdict.split(" ")[0], 0) + 1
    print()
    notes = []
    shown = [r for r in rows if not ns.only_changed or r.verdict != "unchanged"]
    if any(r.direction is None for r in shown):
        notes.append("(?) no direction: shown, never a regression (--higher/--lower GLOB)")
    if any("(1 seed)" in r.verdict for r in shown):
        notes.append("(1 seed): one run on a side, no noise estimate; the factor alone decided")
    for note in notes:
        print(note)
    worse = [r for r in rows if r.verdict.startswith("worse")]
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    print(f"{summary} (factor {ns.factor:g}; noise: ranges over the seeds overlap)")
    if worse:
        named = "; ".join(f"{r.metric} on {r.config} {r.ratio:.3g}x" if r.ratio is not None else f"{r.metric} on {r.config}"
                          for r in worse[:5])
        print(f"harness: compare: {len(worse)} regression(s) beyond factor {ns.factor:g}: {named}"
              + (" ..." if len(worse) > 5 else ""), file=sys.stderr, flush=True)
        return 1
    return 0


# -- sets of runs already in the store ------------------------------------------------
def _finished(reader, experiments: dict[str, str], flt: str = "", run_ids=()) -> list:
    runs = reader.search(experiments, filter_string=flt, run_ids=run_ids)
    return [r for r in runs if r.status == "FINISHED" and r.tags.get("harness.sweep_parent") != "true"]


def _resolve_set(reader, name: str) -> tuple[str, list]:
    """``(label, runs)`` of an experiment (``NAME[@COMMIT]``), experiment id, sweep id or sweep parent run id."""
    experiments = reader.experiments()
    by_name = {v: k for k, v in experiments.items()}
    exp_name, _, commit = name.partition("@")
    if exp_name in by_name or exp_name in experiments:
        exp_id = by_name.get(exp_name, exp_name)
        runs = _finished(reader, {exp_id: experiments[exp_id]})
        label = f"experiment {experiments[exp_id]!r}"
        if commit:
            runs = [r for r in runs if r.tags.get("mlflow.source.git.commit", "").startswith(commit)]
            if not runs:
                raise CompareError(f"{name}: experiment {experiments[exp_id]!r} has no FINISHED run of a commit starting {commit!r}")
            label += f" at commit {commit}"
        return label + f" ({len(runs)} runs{_commits_note(runs)})", runs
    if commit:
        raise CompareError(f"{name}: no experiment {exp_name!r}; experiments: {', '.join(sorted(by_name)) or 'none'}")
    parents = sorted(
        reader.search(experiments, filter_string="tags.`harness.sweep_parent` = 'true'"), key=lambda r: -r.start_ms
    )
    if len(name) >= 6:
        by_run = [p for p in parents if p.run_id.startswith(name)]
        by_sweep = [p for p in parents if p.tags.get("harness.sweep_id", "").startswith(name)]
        for found in (by_run, by_sweep):
            if not found:
                continue
            parent = found[0]  # the newest
            runs = _finished(reader, experiments, f"tags.`mlflow.parentRunId` = '{parent.run_id}'",
                             reader.sweep_run_ids(parent))
            newest = f"; the newest of {len(found)} runs of this sweep: give a parent run id to choose" if len(found) > 1 else ""
            return (f"sweep {parent.tags.get('harness.sweep_id', '')[:8]} (parent run {parent.run_id[:8]}, "
                    f"experiment {parent.experiment!r}, {len(runs)} runs{_commits_note(runs)}{newest})"), runs
    recent = ", ".join(f"{p.tags.get('harness.sweep_id', '')[:8]} ({p.experiment})" for p in parents[:5])
    raise CompareError(
        f"unknown sweep {name!r}: no experiment, experiment id, sweep id or sweep parent run id (6+ characters) matches "
        f"at {reader.tracking_uri}; experiments: {', '.join(sorted(by_name)) or 'none'}"
        + (f"; recent sweeps: {recent}" if recent else "")
    )


def _commits_note(runs) -> str:
    commits = sorted({r.tags.get("mlflow.source.git.commit", "?")[:8] for r in runs})
    if not commits:
        return ""
    dirty = any(r.tags.get("harness.git_dirty") == "true" for r in runs)
    return f", commit {', '.join(commits)}" + (" with uncommitted changes" if dirty else "")


# -- running the sweep at two commits --------------------------------------------------
def _round_order(rounds: int) -> list[int]:
    """Which side runs when: ``A B``, then ``B A``, ``A B``, ... (an ABBA design), so a
    machine that drifts slower or faster over the comparison loads both sides alike
    instead of showing up as a change between them."""
    order: list[int] = []
    for r in range(rounds):
        order += [0, 1] if r % 2 == 0 else [1, 0]
    return order


def _run_commits(ns) -> list[tuple[str, list]]:
    from harness.commits import repo_root, resolve_commit, run_sweep, worktree

    repo = repo_root(ns.repo)
    shas = [resolve_commit(repo, rev) for rev in ns.commits]  # both checked before anything runs
    overrides = list(ns.overrides) or list(DEFAULT_OVERRIDES)
    reader = _reader(ns.tracking_uri, must_exist=False)
    labels = [f"{rev} ({sha[:8]})" if not sha.startswith(rev) else sha[:8] for rev, sha in zip(ns.commits, shas)]
    reused = [_existing_runs(reader, sha, overrides) if ns.skip_existing else [] for sha in shas]
    for n, runs in enumerate(reused):
        if runs:
            print(f"harness: compare: {labels[n]}: reusing the finished sweep(s) of `{' '.join(overrides)}` in the store "
                  f"({len(runs)} runs; not interleaved with the other side)", file=sys.stderr, flush=True)
    runs_by_side: list[list] = [list(r) for r in reused]
    to_run = [n for n in _round_order(ns.rounds) if not reused[n]]
    with tempfile.TemporaryDirectory(prefix="harness-compare-") as tmp, contextlib.ExitStack() as trees:
        checked_out: dict[int, Path] = {}
        done = [0, 0]
        for step, n in enumerate(to_run):
            if n not in checked_out:
                where = Path(tmp) / f"tree-{n}-{shas[n][:12]}"
                checked_out[n] = trees.enter_context(worktree(repo, shas[n], where))
            done[n] += 1
            rounds_note = f" (round {done[n]} of {ns.rounds})" if ns.rounds > 1 else ""
            print(f"harness: compare: {labels[n]}{rounds_note}: running `harness run -m "
                  f"{' '.join(map(shlex.quote, overrides))}` in a temporary worktree ...", file=sys.stderr, flush=True)
            start_ms = int(time.time() * 1000) - 1000
            workdir = Path(tmp) / f"run-{step}-{shas[n][:12]}"
            workdir.mkdir()
            code, tail = run_sweep(checked_out[n], overrides, reader.tracking_uri, workdir, ns.verbose)
            if code != 0:
                detail = f":\n{tail}" if tail else ""
                raise CompareError(f"the sweep at {labels[n]} failed (exit {code}){detail}", 2 if code == 2 else 1)
            runs = _runs_of_commit(reader, shas[n], start_ms, {r.run_id for r in runs_by_side[n]})
            if not runs:
                raise CompareError(f"the sweep at {labels[n]} finished but recorded no FINISHED run at {reader.tracking_uri}", 1)
            runs_by_side[n] += runs
    return [(f"commit {labels[n]}: {len(runs_by_side[n])} runs", runs_by_side[n]) for n in (0, 1)]


def _runs_of_commit(reader, sha: str, start_ms: int, seen: set) -> list:
    flt = f"tags.`mlflow.source.git.commit` = '{sha}' and attributes.start_time >= {start_ms}"
    return [r for r in _finished(reader, reader.experiments(), flt) if r.run_id not in seen]


def _existing_runs(reader, sha: str, overrides: list[str]) -> list:
    """The runs of every FINISHED sweep run at ``sha`` with ``overrides`` on a clean tree
    (each round of an earlier ``--rounds`` comparison is one), or []."""
    experiments = reader.experiments()
    wanted = " ".join(o for o in overrides if not o.startswith(("hydra.", "hydra/")))  # the task's, as tagged
    flt = (f"tags.`harness.sweep_parent` = 'true' and tags.`mlflow.source.git.commit` = '{sha}' "
           "and attributes.status = 'FINISHED'")
    found = []
    for parent in sorted(reader.search(experiments, filter_string=flt), key=lambda r: -r.start_ms):
        if parent.tags.get("harness.sweep_overrides", "") != wanted:
            continue
        runs = _finished(reader, experiments, f"tags.`mlflow.parentRunId` = '{parent.run_id}'")
        if runs and all(r.tags.get("mlflow.source.git.commit") == sha and r.tags.get("harness.git_dirty") == "false"
                        for r in runs):
            found += runs
    return found
