"""Plugin discovery: built-ins through entry points, conflicts, broken plugins, blocking."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass

import pytest

from conftest import FAILING_PLUGIN, harness_env, make_dist, mlflow_runs, run_harness, twin_plugin
from harness.host import Host, PluginError, PluginWarning
from harness.specs import AcceleratorSpec, Claim, PaperRef, SpecError, validate_spec


def test_builtins_come_through_the_entry_point_group():
    host = Host()
    for kind, name in (("workload", "dot_products"), ("technique", "none"), ("accelerator", "exact")):
        info = host.info(kind, name)
        assert info.distribution == "accel-harness"
        assert info.plugin == name


def test_unknown_name_lists_valid_choices():
    with pytest.raises(KeyError, match="valid choices: .*exact"):
        Host().info("accelerator", "nonexistent")


# -- broken plugins: left out with a warning, fatal only for runs that choose them ------
IMPORT_ERROR = "raise ImportError('no such thing')"

HOOK_RAISES = """
from harness import hookimpl

@hookimpl
def harness_techniques():
    raise RuntimeError("hook exploded")
"""

INVALID_SPEC = """
from harness import hookimpl
from harness.specs import AcceleratorSpec

@hookimpl
def harness_accelerators():
    yield AcceleratorSpec(name="Bad Name", summary="x", config=dict, factory=print)
"""


def _broken_site(site, tag=""):
    """Three real distributions, each broken in its own way; returns their entry-point names."""
    names = {"import": f"imp{tag}", "hook": f"hook{tag}", "spec": f"spec{tag}"}
    make_dist(site, f"imp{tag}-dist", f"imp{tag}_mod", IMPORT_ERROR, {names["import"]: f"imp{tag}_mod"}, version="1.0")
    make_dist(site, f"hook{tag}-dist", f"hook{tag}_mod", HOOK_RAISES, {names["hook"]: f"hook{tag}_mod"}, version="2.0")
    make_dist(site, f"spec{tag}-dist", f"spec{tag}_mod", INVALID_SPEC, {names["spec"]: f"spec{tag}_mod"}, version="3.0")
    return names


def test_broken_plugins_warn_and_are_left_out(tmp_path, monkeypatch):
    names = _broken_site(tmp_path / "site", "_w")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.warns(PluginWarning) as caught:
        host = Host()
    messages = [str(w.message) for w in caught]
    for what, dist, detail in (
        ("import", "imp_w-dist 1.0", "failed to import (imp_w_mod): ImportError: no such thing"),
        ("hook", "hook_w-dist 2.0", "raised in harness_techniques(): RuntimeError: hook exploded"),
        ("spec", "spec_w-dist 3.0", "yielded an invalid spec: accelerator spec 'Bad Name'"),
    ):
        (message,) = [m for m in messages if f"plugin {names[what]!r} from distribution {dist}" in m]
        assert detail in message and f"HARNESS_DISABLE_PLUGINS={names[what]}" in message
    assert {b.plugin for b in host.broken()} == set(names.values())
    assert "exact" in host.names("accelerator") and "none" in host.names("technique")  # the rest loads
    # A run choosing a broken plugin, by entry-point or spec name, gets the load error.
    with pytest.raises(PluginError, match=r"technique 'hook_w' cannot be used: .*hook exploded"):
        host.info("technique", "hook_w")
    with pytest.raises(PluginError, match=r"'Bad Name' cannot be used: plugin 'spec_w' .*lowercase identifier"):
        host.info("accelerator", "Bad Name")
    with pytest.raises(PluginError, match=r"failed to import .*ImportError: no such thing"):
        host.info("workload", "imp_w")
    with pytest.raises(KeyError, match="valid choices"):  # unknown names stay KeyErrors
        host.info("accelerator", "nonexistent")
    # The documented way out: blocked by name, a broken plugin is not even imported.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Host(blocked=names.values()).broken() == []


def test_strict_mode_turns_broken_plugins_into_an_error(tmp_path, monkeypatch):
    names = _broken_site(tmp_path / "site", "_s")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(PluginError, match="strict plugin loading is on .* 3 plugin problem") as raised:
        Host(strict=True)
    assert all(f"plugin {n!r}" in str(raised.value) for n in names.values())
    monkeypatch.setenv("HARNESS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="strict plugin loading is on"):
        Host()
    monkeypatch.setenv("HARNESS_STRICT_PLUGINS", "maybe")
    with pytest.raises(PluginError, match="HARNESS_STRICT_PLUGINS='maybe' is not a flag"):
        Host()


def test_a_conflict_leaves_out_the_name_only(tmp_path, monkeypatch):
    site = tmp_path / "site"
    extra = """
@hookimpl
def harness_techniques():
    from harness_plugins.none import Identity, NoneConfig
    from harness.specs import TechniqueSpec
    yield TechniqueSpec(name="solo_{tag}", summary="Not in conflict", config=NoneConfig, factory=Identity)
"""
    for tag, version in (("c", "1.0"), ("d", "2.0")):
        source = twin_plugin(tag) + extra.format(tag=tag)
        make_dist(site, f"twin-{tag}", f"twin_{tag}", source, {f"twin_{tag}": f"twin_{tag}"}, version=version)
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(PluginWarning, match="Conflicting plugins found for accelerator 'twin'"):
        host = Host()
    assert "twin" not in host.names("accelerator")
    assert {"solo_c", "solo_d"} <= set(host.names("technique"))  # the rest of both plugins stays usable
    with pytest.raises(PluginError, match=r"provided by twin-c 1.0 \(plugin 'twin_c'\) and twin-d 2.0 \(plugin 'twin_d'\)"):
        host.info("accelerator", "twin")


def test_cli_with_broken_plugins_installed(tmp_path, workdir):
    site = tmp_path / "site"
    names = _broken_site(site)
    make_dist(site, "twin-a", "twin_a", twin_plugin("a"), {"twin_a": "twin_a"}, version="1.0")
    make_dist(site, "twin-b", "twin_b", twin_plugin("b"), {"twin_b": "twin_b"}, version="2.0")
    env = harness_env(workdir, site)

    listed = run_harness(["plugins"], workdir, env)
    assert listed.returncode == 0, listed.stderr
    warnings_ = [line for line in listed.stderr.splitlines() if line.startswith("harness: warning: ")]
    assert len(warnings_) == 4, listed.stderr  # three broken plugins, one conflict
    assert "plugin 'imp' from distribution imp-dist 1.0 failed to import" in listed.stderr
    assert "HARNESS_DISABLE_PLUGINS=imp" in listed.stderr
    assert re.search(r"^\? +imp +imp-dist 1\.0 +BROKEN: plugin 'imp'", listed.stdout, re.M), listed.stdout
    assert re.search(r"^accelerator +exact +accel-harness", listed.stdout, re.M)
    rows = json.loads(run_harness(["plugins", "--json"], workdir, env).stdout)
    broken = {r["name"]: r for r in rows if r["broken"]}
    assert set(broken) == {*names.values(), "twin"}
    assert "raised in harness_techniques()" in broken["hook"]["error"]

    strict = run_harness(["plugins", "--strict"], workdir, env)
    assert strict.returncode == 1 and "4 plugin problem(s)" in strict.stderr and "imp-dist 1.0" in strict.stderr

    # Runs of other plugins work (with the warning); runs choosing a broken one fail with its load error.
    ok = run_harness(["run", "workload=dot_products", "workload.count=16", "workload.columns=4"], workdir, env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "harness: warning: plugin 'spec' from distribution spec-dist 3.0" in ok.stderr
    assert [r.info.status for r in mlflow_runs(workdir / "mlflow.db")] == ["FINISHED"]
    bad = run_harness(["run", "-m", "technique=hook,none"], workdir, env)
    assert bad.returncode != 0
    assert "technique 'hook' cannot be used: plugin 'hook' from distribution hook-dist 2.0 raised" in bad.stderr
    twin = run_harness(["run", "accelerator=twin"], workdir, env)
    assert twin.returncode != 0
    assert re.search(r"Conflicting plugins found for accelerator 'twin': provided by twin-a 1\.0 .*twin-b 2\.0", twin.stderr)
    assert [r.info.status for r in mlflow_runs(workdir / "mlflow.db")] == ["FINISHED"]  # no run was started


def test_disable_env_blocks_a_spec_by_name(monkeypatch):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "exact")
    assert "exact" not in Host().names("accelerator")


@dataclass
class _Cfg:
    x: int = 1


@dataclass
class _NoDefault:
    x: int


def _spec(**kw):
    base = dict(name="ok", summary="fine", config=_Cfg, factory=lambda c: c)
    base.update(kw)
    return AcceleratorSpec(**base)


def test_validate_spec_accepts_a_good_spec():
    validate_spec(_spec(paper=PaperRef("T", "A", "V", 2024, "1234.5678"), claims=(Claim("accelerator/x", 1.0, "u", "e"),)))


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"name": "Bad-Name"}, "lowercase identifier"),
        ({"summary": "two\nlines"}, "one non-empty line"),
        ({"config": _NoDefault}, "needs a default for every field"),
        ({"claims": (Claim("accelerator/x", 1.0, "u", "e"),)}, "claims need a paper reference"),
        ({"paper": PaperRef("T", "A", "V", 2024), "claims": (Claim("x", 1.0, "u", "e"),)}, "stage/name"),
        ({"smoke": {"nope": 1}}, "not fields of _Cfg"),
        ({"needs": "subject:model"}, "needs must be a set of capability names"),
        ({"provides": {"Subject:Model"}}, "provides 'Subject:Model' must be capability names"),
        ({"needs": {"a:b:c"}}, "needs 'a:b:c' must be capability names"),
    ],
)
def test_validate_spec_names_the_problem(kw, message):
    with pytest.raises(SpecError, match=message):
        validate_spec(_spec(**kw))


def test_failing_plugin_fixture_is_valid():
    # Guards the FAILING_PLUGIN source used by the CLI tests against drifting out of the contract.
    namespace: dict = {}
    exec(FAILING_PLUGIN, namespace)
    (spec,) = list(namespace["harness_accelerators"]())
    validate_spec(spec)
