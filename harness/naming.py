"""Run names and run descriptions for the MLflow UI.

A run's name says what it is and, in a sweep, what varied: the chosen plugins,
each followed by its swept parameters with shortened keys, then the seed::

    admm ratio=20 on ds_cim s0                  # a sweep over technique.ratio
    mnist_lenet5: admm ratio=20 on ds_cim s0    # a single run (or a sweep over workloads)

The workload is named when it or its parameters differ between the sweep's jobs
(``dot_products sparsity=0.5: none on exact s0``), and always in a single run (a sweep's workload is in its parent run and experiment). Keys are shortened to their
last part (``technique.ratio=20`` -> ``ratio=20``,
``when.technique.admm.ratio=20`` -> ``ratio=20``) unless two varied keys would
then read the same. Names are unique within a sweep: jobs that would share a
name get their job number appended (``#3``).

The description (MLflow's ``mlflow.note.content`` tag, shown on the run page) is
the command line and what the run is: plugins, varied values, seed, config hash
and the git commit of the code.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["describe_run", "describe_sweep", "parse_overrides", "run_name", "sweep_names", "varied_keys"]

_KINDS = ("workload", "technique", "accelerator")

#: Overrides that change where or how a run is stored, not what it computes: never in a name.
_NOT_NAMED = frozenset({"cache_dir", "tracking_uri", "experiment_name", "technique_cache", "dashboard", "experiment"})


def parse_overrides(overrides: Sequence[str]) -> dict[str, str]:
    """``{key: value}`` of user overrides that bear on the experiment (``hydra.*``,
    deletions, the preset and where runs are stored, such as ``cache_dir``, left out)."""
    out: dict[str, str] = {}
    for raw in overrides:
        text = str(raw)
        if text.startswith("~"):
            continue
        key, sep, value = text.lstrip("+").partition("=")
        if not sep or key.startswith("hydra.") or key == "hydra" or key in _NOT_NAMED:
            continue
        out[key] = value
    return out


def varied_keys(parsed: Sequence[Mapping[str, str]]) -> list[str]:
    """Keys whose value is not the same in every job (missing counts as a value)."""
    keys: list[str] = []
    for p in parsed:
        for k in p:
            if k not in keys:
                keys.append(k)
    return [k for k in keys if len({p.get(k) for p in parsed}) > 1]


def _kind_of(key: str) -> str | None:
    parts = key.split(".")
    if parts[0] == "when" and len(parts) >= 2 and parts[1] in _KINDS:
        return parts[1]
    return parts[0] if parts[0] in _KINDS else None


def _short(keys: Sequence[str]) -> dict[str, str]:
    """Each key's last part, unless two keys share it (then the key as given)."""
    last = {k: k.split(".")[-1] for k in keys}
    counts: dict[str, int] = {}
    for s in last.values():
        counts[s] = counts.get(s, 0) + 1
    return {k: (s if counts[s] == 1 else k) for k, s in last.items()}


def run_name(
    choices: Mapping[str, str],
    seed: Any,
    overrides: Mapping[str, str] | None = None,
    shown: Sequence[str] | None = None,
    with_workload: bool = True,
) -> str:
    """One run's name from its ``choices``, ``seed`` and the ``shown`` keys of ``overrides``.

    ``shown`` defaults to every override except the plugin choices and the seed
    (a single run: what was given on the command line)."""
    overrides = dict(overrides or {})
    if shown is None:
        shown = list(overrides)
    shown = [k for k in shown if k in overrides and k not in _KINDS and k != "seed"]
    short = _short(shown)
    parts: dict[str | None, list[str]] = {}
    for key in shown:
        kind = _kind_of(key)
        # A per-choice value (when.KIND.CHOICE.PARAM) says nothing about a job of another choice.
        bits = key.split(".")
        if bits[0] == "when" and len(bits) >= 4 and choices.get(bits[1]) != bits[2]:
            continue
        parts.setdefault(kind, []).append(f"{short[key]}={overrides[key]}")
    words: list[str] = []
    workload_bits = parts.get("workload", [])
    if with_workload:
        words.append(" ".join([choices.get("workload", "?"), *workload_bits]) + ":")
    else:
        words.extend(workload_bits)
    words += [choices.get("technique", "none"), *parts.get("technique", [])]
    words += ["on", choices.get("accelerator", "?"), *parts.get("accelerator", [])]
    words.extend(parts.get(None, []))
    words.append(f"s{seed}")
    return " ".join(w for w in words if w)


def sweep_names(
    jobs: Sequence[tuple[int, Mapping[str, str], Any, Sequence[str]]], identities: Mapping[int, str] | None = None
) -> dict[int, str]:
    """``{job index: name}`` for a sweep's ``(idx, choices, seed, overrides)`` jobs.

    Unique: jobs that would share a name get their job number, unless they share
    an identity too (``identities``: job index -> config hash), for then they are
    one experiment, run and recorded once."""
    parsed = [parse_overrides(ov) for _, _, _, ov in jobs]
    varied = varied_keys(parsed)
    # The workload is named when it, or one of its parameters, differs between jobs.
    many_workloads = len({c.get("workload") for _, c, _, _ in jobs}) > 1 or any(
        _kind_of(k) == "workload" for k in varied
    )
    names = {
        idx: run_name(choices, seed, p, varied, with_workload=many_workloads)
        for (idx, choices, seed, _), p in zip(jobs, parsed)
    }
    identities = identities or {}
    seen: dict[str, set] = {}
    for idx, name in names.items():
        seen.setdefault(name, set()).add(identities.get(idx) or f"job {idx}")
    return {idx: (f"{n} #{idx}" if len(seen[n]) > 1 else n) for idx, n in names.items()}


def describe_run(
    command: str,
    choices: Mapping[str, str],
    seed: Any,
    config_hash: str,
    commit: str = "",
    dirty: str = "",
    varied: Mapping[str, str] | None = None,
    sweep: str = "",
) -> str:
    """Markdown for ``mlflow.note.content``: the command line and what the run is."""
    what = (
        f"Workload **{choices.get('workload')}** with technique **{choices.get('technique')}** "
        f"on accelerator **{choices.get('accelerator')}**, seed {seed}"
    )
    if varied:
        what += "; " + ", ".join(f"`{k}={v}`" for k, v in varied.items())
    what += "."
    lines = [f"`{command}`", "", what, "", f"Config hash `{config_hash}`."]
    if sweep:
        lines[-1] += f" {sweep}"
    if commit:
        lines.append("")
        lines.append(f"Code: git commit `{commit}`" + (" (with uncommitted changes)" if dirty == "true" else "") + ".")
    return "\n".join(lines)


def describe_sweep(command: str, njobs: int, varied: Sequence[str], sweep_id: str, commit: str = "", dirty: str = "") -> str:
    """Markdown for a sweep parent's ``mlflow.note.content``."""
    over = ", ".join(f"`{k}`" for k in varied) or "nothing (repeats of one config)"
    lines = [
        f"`{command}`",
        "",
        f"Sweep `{sweep_id}` of {njobs} jobs over {over}. Each job is a child run named after what varied; "
        "`sweep_summary.md` in the artifacts has the table, and this run's metrics summarize the headline "
        "metrics of the FINISHED children (`METRIC/max`, `METRIC/min`, `METRIC/mean`).",
    ]
    if commit:
        lines += ["", f"Code: git commit `{commit}`" + (" (with uncommitted changes)" if dirty == "true" else "") + "."]
    return "\n".join(lines)
