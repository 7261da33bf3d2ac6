"""Cached models and technique results are keyed by the code that computed them.

Editing a workload's or technique's plugin, or the harness's training substrate,
must give new cache keys: a stale entry is never served as the edited code's result.
Each "edit" here rewrites a plugin module in a temporary folder and forgets the
per-process digests, as a new process (the next sweep's workers) would.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from harness import code_digest
from harness.api import RunContext
from harness.code_digest import SUBSTRATE, source_digest, substrate_digest
from harness.host import Host
from harness.runner import run_experiment

WORKLOAD_SOURCE = '''
from harness_plugins.digits_mlp import DigitsMlp, DigitsMlpConfig


class EditedDigits(DigitsMlp):
    """digits_mlp under another name, defined in a module the test edits."""

    name = "edited_digits"
    # EDIT
'''

TECHNIQUE_SOURCE = '''
from dataclasses import dataclass

from harness import hookimpl
from harness.specs import TechniqueSpec

APPLIED = []


@dataclass
class HalveConfig:
    pass


class Halve:
    def __init__(self, config):
        self.config = config

    def apply(self, subject, workload, ctx):
        APPLIED.append(1)
        for w in subject.weights().values():
            w *= 0.5
        return subject


class Plugin:
    @staticmethod
    @hookimpl
    def harness_techniques():
        yield TechniqueSpec(name="halve", summary="Halve the weights", config=HalveConfig, factory=Halve,
                            needs={"subject:model"}, smoke_workload="digits_mlp")
    # EDIT
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on ``sys.path`` for modules the test writes, edits and re-imports."""
    folder = tmp_path / "src"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    saved = dict(code_digest._DIGESTS)
    yield folder
    code_digest._DIGESTS.clear()
    code_digest._DIGESTS.update(saved)
    for name in ("edited_workload", "edited_technique"):
        sys.modules.pop(name, None)


def write_module(folder: Path, name: str, source: str, edit: str = ""):
    """Write (or rewrite) ``name``, forget its digest and import it afresh."""
    (folder / f"{name}.py").write_text(source.replace("# EDIT", edit))
    code_digest._DIGESTS.pop(name, None)
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def test_a_plugin_digest_follows_its_source(plugin_dir):
    first = write_module(plugin_dir, "edited_workload", WORKLOAD_SOURCE)
    digest = source_digest(first.EditedDigits)
    assert source_digest(first.EditedDigits) == digest  # memoized, and stable
    same = write_module(plugin_dir, "edited_workload", WORKLOAD_SOURCE)
    assert source_digest(same.EditedDigits) == digest
    edited = write_module(plugin_dir, "edited_workload", WORKLOAD_SOURCE, edit="epochs_note = 'changed'")
    assert source_digest(edited.EditedDigits) != digest


def test_a_built_in_plugin_digest_covers_its_whole_package():
    from harness_plugins.admm import projections
    from harness_plugins.admm.admm import AdmmTechnique as Admm

    # The factory's module and a sibling module of the same plugin give one digest:
    # an edit to any file of the package changes it.
    from harness_plugins.ds_cim import DsCimConfig

    assert source_digest(Admm) == source_digest(projections.project_prune)
    assert source_digest(Admm) != source_digest(DsCimConfig)


def test_the_substrate_is_the_training_code():
    files = {p.relative_to(Path(code_digest.__file__).parent).as_posix()
             for name in SUBSTRATE for p in code_digest._module_files(importlib.import_module(name))}
    # What decides a trained model's weights: training loop, layers, kernels, data
    # splits, number formats, and the run context's child seeds.
    assert {"nn/train.py", "nn/layers.py", "nn/kernels.py", "nn/optim.py", "data/__init__.py",
            "numerics/quant.py", "api.py"} <= files


def test_an_edited_workload_retrains_its_base_model(plugin_dir, tmp_path):
    module = write_module(plugin_dir, "edited_workload", WORKLOAD_SOURCE)
    config = module.DigitsMlpConfig(hidden="16", epochs=1)
    ctx = lambda: RunContext(seed=0, cache_dir=tmp_path / "cache")  # noqa: E731

    first = module.EditedDigits(config)
    key = first.cache_key(0)
    first.build(ctx1 := ctx())
    again = module.EditedDigits(config)
    again.build(ctx2 := ctx())
    assert (ctx1.record.tags["workload.cache"], ctx2.record.tags["workload.cache"]) == ("miss", "hit")

    edited = write_module(plugin_dir, "edited_workload", WORKLOAD_SOURCE, edit="# the training changed")
    after = edited.EditedDigits(edited.DigitsMlpConfig(hidden="16", epochs=1))
    assert after.cache_key(0) != key
    after.build(ctx3 := ctx())
    assert ctx3.record.tags["workload.cache"] == "miss"


def test_an_edited_substrate_gives_new_keys(monkeypatch):
    from harness.technique_cache import technique_key
    from harness_plugins.digits_mlp import DigitsMlp, DigitsMlpConfig

    workload = DigitsMlp(DigitsMlpConfig())
    choices = {"workload": "w", "technique": "t"}
    params = {"workload": {"a": 1}, "technique": {"b": 2}}
    before = workload.cache_key(0), technique_key(choices, params, 0, {"technique": "c"})
    real = substrate_digest()
    monkeypatch.setitem(code_digest._DIGESTS, "<substrate>", "0" * 16)  # as if harness/nn had changed
    after = workload.cache_key(0), technique_key(choices, params, 0, {"technique": "c"})
    assert after[0] != before[0] and after[1] != before[1]
    monkeypatch.setitem(code_digest._DIGESTS, "<substrate>", real)
    assert (workload.cache_key(0), technique_key(choices, params, 0, {"technique": "c"})) == before


def test_an_edited_technique_is_applied_again(plugin_dir, tmp_path):
    def run(module):
        host = Host(extra=[("halve", module.Plugin, "test-halve")])
        record = run_experiment({"workload": "digits_mlp", "technique": "halve", "accelerator": "exact"},
                                {"workload": {"epochs": 1, "hidden": "16"}, "technique": {}, "accelerator": {}},
                                seed=0, cache_dir=tmp_path / "cache", host=host, technique_cache=True)
        assert record.status == "FINISHED", record.error
        return record.tags["harness.technique_cache"]

    module = write_module(plugin_dir, "edited_technique", TECHNIQUE_SOURCE)
    assert (run(module), run(module)) == ("miss", "hit")
    assert len(module.APPLIED) == 1
    edited = write_module(plugin_dir, "edited_technique", TECHNIQUE_SOURCE, edit="# the technique changed")
    assert run(edited) == "miss"
    assert len(edited.APPLIED) == 1
