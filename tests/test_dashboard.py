"""Dashboard specs, rendering over a store, `harness dashboard`, and the presets' dashboards."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, harness_env, run_harness
from dashboard_store import SWEEP_ID, write_ds_cim_sweep
from harness.dashboard.data import pareto_front
from harness.dashboard.spec import DashboardSpecError, list_specs, load_spec, parse_spec

PRESETS = REPO / "harness" / "conf" / "experiment"


def _spec(panels, **top):
    return {"title": "t", "select": {"experiment": "e"}, "panels": panels, **top}


@pytest.mark.parametrize(
    "data, message",
    [
        (_spec([{"kind": "scater", "x": "a", "y": "b/c"}]),
         r"panels\[0\]\.kind: 'scater' is not a panel kind; valid: scatter, line, curves, claims, table"),
        (_spec([{"kind": "scatter", "x": "a"}]), r"panels\[0\]: a scatter panel needs y"),
        (_spec([{"kind": "line", "x": "a", "y": "b/c", "colour": "seed"}]),
         r"panels\[0\] \(line\): unknown key\(s\) 'colour'; valid: .*color"),
        (_spec([{"kind": "scatter", "x": "a", "y": "b/c", "pareto": "up"}]), r"pareto: 'up': use true"),
        (_spec([{"kind": "table", "columns": []}]), r"panels\[0\]\.columns: \[\] must be a string or a non-empty list"),
        (_spec([{"kind": "table", "columns": ["a"]}], select={"status": "DONE"}), r"select\.status: \['DONE'\] not run statuses"),
        (_spec([{"kind": "table", "columns": ["a"]}], select={"where": {"eval/accuracy": "> high"}}), r"non-number"),
        (_spec([]), r"panels: must be a non-empty list"),
        ({"title": "t", "panel": []}, r"top level: unknown key\(s\) 'panel'; valid: description, panels, select, title"),
    ],
)
def test_bad_specs_are_refused_naming_file_key_and_what_is_valid(data, message):
    with pytest.raises(DashboardSpecError, match=r"dashboard spec my\.yaml: .*" + message):
        parse_spec(data, "my.yaml")


def test_a_spec_file_that_is_not_yaml_names_the_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("panels: [\n")
    with pytest.raises(DashboardSpecError, match=f"{re.escape(str(bad))}: not valid YAML"):
        load_spec(bad)


def test_every_preset_names_a_dashboard_that_exists_and_parses():
    specs = list_specs()
    presets = sorted(PRESETS.glob("*.yaml"))
    assert {p.stem for p in presets} >= {"quickstart", "ds_cim_numerics", "ds_cim_accuracy", "admm_lenet5", "codesign_lenet5"}
    for preset in presets:
        name = yaml.safe_load(preset.read_text()).get("dashboard")
        assert name in specs, f"{preset.name} names dashboard {name!r}; found: {sorted(specs)}"
        spec = load_spec(specs[name])
        assert preset.stem in spec.experiments  # it reads the preset's own experiment
    # The plugins ship their own with their presets.
    assert specs["ds_cim_accuracy"].parent == REPO / "harness_plugins" / "ds_cim" / "dashboards"
    assert specs["admm_lenet5"].parent == REPO / "harness_plugins" / "admm" / "dashboards"
    assert specs["codesign_lenet5"].parent == REPO / "harness_plugins" / "dashboards"  # ships in the wheel
    # Found beside the plugin's factory too: hbm_pim takes its config class from harness.serving.
    for name in ("hbm_pim", "cpu_offload", "llm_decode"):
        assert specs[name].parent == REPO / "harness_plugins" / name / "dashboards"
        assert tuple(load_spec(specs[name]).experiments) == ("l3_dimm_pim_speedup",)


def test_pareto_front_keeps_only_non_dominated_points():
    pts = [(1, 0.5), (2, 0.9), (3, 0.8), (4, 0.95), (2, 0.6), (5, 0.95)]
    assert pareto_front(pts, ("min", "max")) == [(1, 0.5), (2, 0.9), (4, 0.95)]
    assert pareto_front(pts, ("max", "max")) == [(5, 0.95)]


def test_dashboard_over_a_sweep_draws_points_claims_and_is_filed_with_the_parent(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from harness.dashboard import render_dashboard

    monkeypatch.chdir(tmp_path)
    uri, parent = write_ds_cim_sweep(tmp_path)
    result = render_dashboard("ds_cim_accuracy", uri, progress=False)
    assert result.path == tmp_path / "outputs" / "dashboards" / f"ds_cim_accuracy-{SWEEP_ID[:8]}.html"
    html = result.html
    assert result.runs == 6 and result.parent_run_id == parent and result.logged  # the FAILED run is left out
    # Accuracy vs L: 6 runs as points, the exact-INT8 reference once, the paper's 6 points as diamonds.
    first = html.split('<section class="panel" id="panel-1"')[0]
    assert len(re.findall(r'<circle class="pt', first)) == 6
    assert first.count('class="series-line dashed"') == 1 and "eval/accuracy_exact" in first
    assert len(re.findall(r'<polygon class="claim" data-verdict="not comparable"', first)) == 6
    # The claims table judges each ds_cim claim; accuracy claims are on another workload.
    claims = html.split('data-kind="claims"')[1].split("</section>")[0]
    # DS-CIM1 at L=64 (0.898 vs 0.90: within the 1-point tolerance), 128 and 256; DS-CIM2 at chance.
    assert claims.count("not comparable (indicative: reproduced)") == 3
    assert claims.count("not comparable (indicative: not reproduced)") == 3
    # The RMSE claims (dot_products) and TOPS/mm^2 (not logged here) apply to no run: listed as hidden.
    assert "3 more claim(s) of these plugins are about settings no selected run used" in claims
    assert "numerics/rmse" not in claims
    assert re.search(r"peak_tops_per_w &gt;= 3566.1 .*?<td>3566</td><td>reproduced</td>", claims)
    # Self-contained: no external reference of any kind.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html) and "<link" not in html
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(parent, "dashboard")}
    assert "dashboard/ds_cim_accuracy.html" in artifacts
    pngs = {a.path for a in MlflowClient(uri).list_artifacts(parent, "dashboard/ds_cim_accuracy")}
    assert len(pngs) == 5 and all(p.endswith(".png") for p in pngs)


def test_harness_dashboard_command_and_its_errors(tmp_path):
    uri, _ = write_ds_cim_sweep(tmp_path, experiment="mine")
    env = harness_env(tmp_path)
    out = tmp_path / "report.html"
    ok = run_harness(["dashboard", "ds_cim_accuracy", "--tracking-uri", uri, "--experiment", "mine",
                      "--sweep", SWEEP_ID[:6], "--out", str(out), "--no-png", "--no-log"], tmp_path, env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "6 runs" in ok.stdout and out.stat().st_size > 5000
    assert re.search(r"\[dashboard\] reading runs: 6 \(page 1\)", ok.stderr)  # progress for large stores
    missing = run_harness(["dashboard", "no_such_board", "--tracking-uri", uri], tmp_path, env)
    assert missing.returncode == 2 and "no dashboard spec named 'no_such_board'; known: " in missing.stderr
    assert "ds_cim_accuracy" in missing.stderr and "Traceback" not in missing.stderr
    wrong = run_harness(["dashboard", "ds_cim_accuracy", "--tracking-uri", uri, "--experiment", "nope", "--no-png"], tmp_path, env)
    assert wrong.returncode == 2 and "no experiment 'nope'" in wrong.stderr and "mine" in wrong.stderr
    listed = run_harness(["dashboard", "--list"], tmp_path, env)
    assert listed.returncode == 0 and re.search(r"^codesign_lenet5 +Co-design", listed.stdout, re.M)


def test_dashboard_help_does_not_import_mlflow():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness", "dashboard", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--sweep" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "harness.dashboard.cli" in imported
    assert not [m for m in imported if re.match(r"^(mlflow|ray|matplotlib)(\.|$)", m)]


def test_a_failing_dashboard_only_warns(tmp_path, capsys):
    from harness.dashboard import render_after_sweep

    assert render_after_sweep(f"sqlite:///{tmp_path / 'mlflow.db'}", "nothing", "abc", "no_such_board") is None
    assert "dashboard 'no_such_board' not rendered" in capsys.readouterr().err


def test_shipped_specs_stay_in_their_folders():
    # Specs found by name come from these folders only; a test tmp folder never leaks in.
    for name, path in list_specs().items():
        assert Path(path).suffix in (".yaml", ".yml"), name


def test_a_sweep_is_its_parents_children_plus_the_jobs_it_skipped(tmp_path):
    import json

    from harness.dashboard import select_runs
    from harness.record import Record
    from harness.tracking import MlflowTracker
    from harness.tracking_read import StoreReader

    from dashboard_store import _experiment_in

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _experiment_in(tmp_path, uri, "e")
    tracker = MlflowTracker(uri, "e")
    tags = {"harness.sweep_id": "5eed", "harness.sweep_parent": "true"}
    first = tracker.create_run("sweep-old", tags=tags, start_ms=1_000)
    second = tracker.create_run("sweep-new", tags=tags, start_ms=2_000)  # a forced rerun: a parent of its own

    def child(name, parent, start):
        r = Record(start_ms=start, end_ms=start + 1, params={"workload": "w", "technique": "t", "accelerator": "a"})
        r.tags["harness.sweep_id"] = "5eed"
        return tracker.write(r, name, parent_run_id=parent)

    child("old", first, 1_100)
    new = child("new", second, 2_100)
    skipped = child("skipped", first, 1_200)
    summary = tmp_path / "summary"
    summary.mkdir()
    (summary / "sweep_summary.json").write_text(json.dumps([{"run_id": new}, {"run_id": skipped, "status": "SKIPPED"}]))
    tracker.client.log_artifacts(second, str(summary))
    spec = parse_spec(_spec([{"kind": "table", "columns": ["run"]}]), "s.yaml")
    reader = StoreReader(uri)
    names = lambda runs: sorted(r.name for r in runs)  # noqa: E731
    assert names(select_runs(reader, spec)[0]) == ["new", "skipped"]
    assert names(select_runs(reader, spec, sweep="5ee")[0]) == ["new", "skipped"]
    assert names(select_runs(reader, spec, sweep="all")[0]) == ["new", "old", "skipped"]  # parents left out
    with pytest.raises(LookupError, match="no sweep 'beef'"):
        select_runs(reader, spec, sweep="beef")


def test_curves_facets_categories_and_sorted_tables(tmp_path, monkeypatch):
    from harness.dashboard import render_dashboard

    monkeypatch.chdir(tmp_path)
    uri, _ = write_ds_cim_sweep(tmp_path, failed=False)
    spec = tmp_path / "mine.yaml"
    spec.write_text(yaml.safe_dump({
        "title": "Mine",
        "select": {"experiment": "ds_cim_accuracy", "where": {"accelerator.stream_length": ">= 128"}},
        "panels": [
            {"kind": "curves", "metric": "train/loss", "color": "accelerator.variant"},
            {"kind": "scatter", "x": "accelerator/energy_pj", "y": "eval/accuracy", "facet": "accelerator.variant",
             "pareto": True},
            {"kind": "line", "x": "accelerator.variant", "y": "eval/accuracy", "claims": False},
            {"kind": "table", "columns": ["accelerator.variant", "accelerator.stream_length", "eval/accuracy"],
             "sort": "-eval/accuracy", "limit": 3},
        ],
    }))
    result = render_dashboard(str(spec), uri, log_to_parent=False, progress=False)
    curves, scatter, line, table = result.html.split('<section class="panel"')[1:]
    assert curves.count('class="series-line"') == 4 and curves.count('<circle class="pt') == 4 * 5  # L>=128: 4 runs x 5 epochs
    assert scatter.count('<div class="figure">') == 2 and "accelerator.variant=ds_cim2" in scatter
    assert scatter.count('class="pareto"') == 2  # one front per facet
    assert ">ds_cim1</text>" in line and ">ds_cim2</text>" in line  # a text param is a categorical axis
    assert re.findall(r"<td>(0\.\d+)</td></tr>", table) == ["0.976", "0.962", "0.11"]
    assert "showing 3 of 4 runs (limit)" in table
    assert len(result.pngs) == 4
