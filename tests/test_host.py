"""Plugin discovery: built-ins through entry points, conflicts, broken plugins, blocking."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from conftest import FAILING_PLUGIN, harness_env, make_dist, run_harness, twin_plugin
from harness.host import Host
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


def test_two_distributions_with_one_name_are_named_in_the_error(tmp_path, workdir):
    site = tmp_path / "site"
    make_dist(site, "twin-a", "twin_a", twin_plugin("a"), {"twin_a": "twin_a"}, version="1.0")
    make_dist(site, "twin-b", "twin_b", twin_plugin("b"), {"twin_b": "twin_b"}, version="2.0")
    result = run_harness(["plugins"], workdir, harness_env(workdir, site))
    assert result.returncode != 0
    assert "Conflicting plugins found for accelerator 'twin'" in result.stderr
    assert "twin-a 1.0" in result.stderr and "twin-b 2.0" in result.stderr


def test_plugin_that_fails_to_import_is_named_with_its_distribution(tmp_path, workdir):
    site = make_dist(tmp_path / "site", "broken-dist", "broken_mod", "raise ImportError('no such thing')", {"broken": "broken_mod"})
    result = run_harness(["plugins"], workdir, harness_env(workdir, site))
    assert result.returncode != 0
    assert "plugin 'broken' from distribution broken-dist" in result.stderr
    assert "HARNESS_DISABLE_PLUGINS=broken" in result.stderr
    # The documented way out: block it by name.
    blocked = run_harness(["plugins", "--json"], workdir, harness_env(workdir, site, HARNESS_DISABLE_PLUGINS="broken"))
    assert blocked.returncode == 0, blocked.stderr
    assert "exact" in {row["name"] for row in json.loads(blocked.stdout)}


def test_invalid_spec_is_reported_with_plugin_and_distribution(tmp_path, workdir):
    source = '''
from harness import hookimpl
from harness.specs import AcceleratorSpec
@hookimpl
def harness_accelerators():
    yield AcceleratorSpec(name="Bad Name", summary="x", config=dict, factory=print)
'''
    site = make_dist(tmp_path / "site", "bad-spec", "bad_spec", source, {"bad_spec": "bad_spec"})
    result = run_harness(["plugins"], workdir, harness_env(workdir, site))
    assert result.returncode != 0
    assert "plugin 'bad_spec' from distribution bad-spec" in result.stderr
    assert "lowercase identifier" in result.stderr and "must be a dataclass" in result.stderr


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
