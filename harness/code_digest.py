"""Which code a cached result came from: source digests for cache keys.

A cached base model or technique result is valid only for the code that computed
it. Cache keys therefore carry two digests besides the config and seed:

* the plugin that defines the computation, as the digest of its whole package's
  source (a workload's data loading, model and training settings; a technique);
* the harness's training substrate (:data:`SUBSTRATE`): the layers, training loop
  and kernels, the data splits, the number formats, and the run context that
  derives child seeds.

Editing either gives new keys, so an old entry is left unused instead of being
served as the result of code that did not produce it.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path
from typing import Any, Iterable

__all__ = ["SUBSTRATE", "files_digest", "source_digest", "substrate_digest"]

#: The harness modules (packages: all their ``.py`` files) that decide what training computes.
SUBSTRATE = ("harness.nn", "harness.data", "harness.numerics", "harness.api")

_DIGESTS: dict[str, str] = {}


def files_digest(files: Iterable[Path]) -> str:
    """Digest of the files' names and bytes, in the order given."""
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _module_files(module: Any) -> list[Path]:
    """A package's ``.py`` files (sorted, subpackages included), or a module's own file."""
    path = Path(getattr(module, "__file__", "") or "")
    if path.name == "__init__.py":
        return sorted(path.parent.rglob("*.py"))
    return [path]


def source_digest(obj: Any) -> str:
    """Digest of the source of the plugin package that defines ``obj`` (a factory or class).

    ``harness_plugins.<name>.*`` is one built-in plugin's package; otherwise the
    top-level package of ``obj``'s module (a third-party plugin's distribution).
    Memoized per process: the code of a running process does not change.
    """
    module_name = getattr(obj, "__module__", None) or type(obj).__module__
    if module_name in _DIGESTS:
        return _DIGESTS[module_name]
    root = module_name.split(".")
    package = sys.modules.get(".".join(root[:2]) if root[0] == "harness_plugins" else root[0])
    if package is None or not getattr(package, "__file__", None):
        package = sys.modules.get(module_name)
    _DIGESTS[module_name] = files_digest(_module_files(package))
    return _DIGESTS[module_name]


def substrate_digest() -> str:
    """Digest of the :data:`SUBSTRATE` modules' source (memoized per process)."""
    if "<substrate>" not in _DIGESTS:
        files: list[Path] = []
        for name in SUBSTRATE:
            files += _module_files(importlib.import_module(name))
        _DIGESTS["<substrate>"] = files_digest(files)
    return _DIGESTS["<substrate>"]
