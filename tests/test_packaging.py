"""The project installs as a regular package: its own import names, the config tree inside."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO, harness_env, run_harness


def source_copy(dest: Path) -> Path:
    """The tracked files of the project (setuptools builds in the source folder; not ours)."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def test_the_wheel_ships_the_config_tree_and_no_generic_top_level_package(tmp_path):
    src = source_copy(tmp_path / "src")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tmp_path = tmp_path / "dist"
    wheel = next(tmp_path.glob("accel_harness-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"harness", "harness_plugins", "hydra_plugins"}, top
    assert "harness/conf/config.yaml" in names
    presets = {Path(n).stem for n in names if n.startswith("harness/conf/experiment/")}
    assert {"quickstart", "ds_cim_accuracy", "ds_cim_numerics", "admm_lenet5"} <= presets
    assert any(n.startswith("hydra_plugins/") and n.endswith(".py") for n in names)
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "= plugins." not in entry_points and "harness_plugins.ds_cim" in entry_points


def test_a_plugins_folder_in_the_working_directory_does_not_shadow_the_builtins(tmp_path, workdir):
    shadow = workdir / "plugins"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('a user project of its own, not ours')\n")
    (shadow / "ds_cim").mkdir()
    (shadow / "ds_cim" / "__init__.py").write_text("")
    env = harness_env(tmp_path)
    env["PYTHONPATH"] = str(workdir)  # as if the user's project were importable
    done = run_harness(["plugins", "--json"], workdir, env)
    assert done.returncode == 0, done.stderr
    names = {row["name"] for row in json.loads(done.stdout)}
    assert {"ds_cim", "admm", "exact", "mnist_lenet5"} <= names
    probe = subprocess.run([sys.executable, "-c", "import harness_plugins.ds_cim, plugins"], cwd=tmp_path,
                           capture_output=True, text=True, env={**env, "PYTHONPATH": ""})
    assert "No module named 'plugins'" in probe.stderr
