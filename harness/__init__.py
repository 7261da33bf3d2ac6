"""harness: a plugin-based benchmarking harness for NN accelerators and compression.

Plugin authors need two names from here: :data:`hookimpl`, the marker for hook
implementations, and the spec types in :mod:`harness.specs`. Everything else a
plugin touches is in :mod:`harness.api` (the run context and the interfaces its
objects implement), :mod:`harness.optrace`, :mod:`harness.numerics`,
:mod:`harness.nn` and :mod:`harness.data`.

Importing this package is cheap on purpose: ``harness --help`` and ``harness
plugins`` must not pull in mlflow or ray.
"""

import pluggy

__version__ = "0.1.0"

#: Marker for hook implementations in a plugin module.
hookimpl = pluggy.HookimplMarker("harness")

__all__ = ["__version__", "hookimpl"]
