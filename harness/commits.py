"""Run a sweep with the code of a git commit, without touching the working tree.

``harness compare --commits`` checks each commit out into a temporary ``git
worktree`` (detached, under a temporary folder, removed afterwards) and runs
``python -m harness run -m OVERRIDES`` there: the same interpreter and venv
dependencies, with ``PYTHONPATH`` pointing at the worktree so ``harness``,
``harness_plugins`` and ``hydra_plugins`` are that commit's. The plugins are the
commit's too: entry points come from a small ``.dist-info`` built from the
worktree's ``pyproject.toml`` and put first on ``PYTHONPATH`` (it shadows the
installed distribution of the same name), so a plugin added or renamed at that
commit is found. Runs record into the caller's store, tagged with that commit
(``mlflow.source.git.commit``, from the worktree's ``git rev-parse HEAD``).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Iterator, Sequence

__all__ = ["CompareError", "dist_info_for", "repo_root", "resolve_commit", "run_sweep", "worktree"]


class CompareError(RuntimeError):
    """A bad input or a failed step of ``harness compare``; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _git(repo: Path | str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=check, timeout=120)


def repo_root(path: Path | str) -> Path:
    """The top folder of the git repository holding ``path``."""
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel").stdout.strip())
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CompareError(f"--repo {path}: not a git repository ({_stderr(exc)})") from None


def resolve_commit(repo: Path, rev: str) -> str:
    """The full sha of ``rev`` (a sha, branch, tag or ``HEAD~1``) in ``repo``."""
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise CompareError(f"unknown commit {rev!r} in {repo} (git rev-parse found no such commit)")
    return done.stdout.strip()


def _stderr(exc: BaseException) -> str:
    text = getattr(exc, "stderr", None) or str(exc)
    return " ".join(str(text).split())[:300]


@contextlib.contextmanager
def worktree(repo: Path, sha: str, where: Path) -> Iterator[Path]:
    """A detached worktree of ``sha`` at ``where``, removed on exit."""
    try:
        _git(repo, "worktree", "add", "--detach", "--quiet", str(where), sha)
    except subprocess.CalledProcessError as exc:
        raise CompareError(f"could not check out {sha[:12]} into a worktree: {_stderr(exc)}", 1) from None
    try:
        yield where
    finally:
        _git(repo, "worktree", "remove", "--force", str(where), check=False)
        _git(repo, "worktree", "prune", check=False)


def dist_info_for(tree: Path, site: Path) -> Path | None:
    """A ``NAME-VERSION.dist-info`` in ``site`` with the entry points of ``tree``'s
    ``pyproject.toml`` (None when it declares none)."""
    try:
        project = tomllib.loads((tree / "pyproject.toml").read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    groups = project.get("entry-points") or {}
    if not project.get("name") or not groups:
        return None
    name, version = project["name"], str(project.get("version", "0"))
    folder = site / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
        lines.append("")
    (folder / "entry_points.txt").write_text("\n".join(lines))
    return folder


def run_sweep(
    tree: Path, overrides: Sequence[str], tracking_uri: str, workdir: Path, verbose: bool = False
) -> tuple[int, str]:
    """``harness run -m OVERRIDES`` with the code of ``tree``, from ``workdir``
    (where Hydra's folders and the cache go). Returns ``(exit code, output tail)``."""
    site = workdir / "site"
    dist_info_for(tree, site)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(tree), env.get("PYTHONPATH", "")) if p)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.pop("HYDRA_FULL_ERROR", None)
    args = list(overrides)
    if not any(a.startswith(("hydra/launcher=", "hydra.launcher.resume")) for a in args):
        args.append("hydra.launcher.resume=false")  # every job runs at this commit
    cmd = [sys.executable, "-m", "harness", "run", "-m", *args, f"hydra.sweep.dir={workdir / 'multirun'}"]
    if verbose:
        print(f"harness: compare: {' '.join(cmd)} (PYTHONPATH={env['PYTHONPATH']})", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, cwd=workdir, env=env)
        return done.returncode, ""
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
    return done.returncode, tail
