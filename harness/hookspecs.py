"""The plugin contract: every hook a harness plugin may implement.

A plugin is a module (or any object) that implements some of these hooks with the
:data:`harness.hookimpl` marker and is named in the ``harness`` entry-point group
of its distribution::

    [project.entry-points.harness]
    my_accel = "my_package.my_accel"

Built-in plugins are found the same way, through this project's own
``pyproject.toml``; nothing is special about being built in. Each hook returns
(or yields) typed specs from :mod:`harness.specs`; the host validates them, and
refuses two specs of one kind with one name, naming both distributions.

The hooks take no arguments: a plugin declares what it provides, and the host
decides when to build it. All three are called once per process, when the host
first loads plugins, in no guaranteed order across plugins. None is
``firstresult``: the host collects what every plugin returns.
"""

from __future__ import annotations

from typing import Iterable

import pluggy

from harness.specs import AcceleratorSpec, TechniqueSpec, WorkloadSpec

PROJECT = "harness"

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def harness_workloads() -> Iterable[WorkloadSpec]:
    """Declare the workloads this plugin provides.

    Called once, when the host loads plugins (``harness run``, ``harness
    plugins``, the conformance kit). Takes no parameters.

    :return: an iterable of :class:`~harness.specs.WorkloadSpec`. The spec's
        factory takes the config dataclass instance and returns an object with
        ``build``, ``evaluate`` and ``op_trace`` (:class:`harness.api.Workload`).

    Example::

        @hookimpl
        def harness_workloads():
            yield WorkloadSpec(
                name="dot_products",
                summary="Synthetic dot products for characterizing numerics",
                config=DotProductsConfig,
                factory=DotProducts,
            )
    """


@hookspec
def harness_techniques() -> Iterable[TechniqueSpec]:
    """Declare the techniques (compression, efficient training) this plugin provides.

    Called once, when the host loads plugins. Takes no parameters.

    :return: an iterable of :class:`~harness.specs.TechniqueSpec`. The factory
        takes the config instance and returns an object with
        ``apply(subject, workload, ctx)`` (:class:`harness.api.Technique`).

    Example::

        @hookimpl
        def harness_techniques():
            yield TechniqueSpec(
                name="none",
                summary="Leave the workload as it is",
                config=NoneConfig,
                factory=lambda cfg: Identity(),
            )
    """


@hookspec
def harness_accelerators() -> Iterable[AcceleratorSpec]:
    """Declare the accelerators (numerics and cost models) this plugin provides.

    Called once, when the host loads plugins. Takes no parameters.

    :return: an iterable of :class:`~harness.specs.AcceleratorSpec`. The factory
        takes the config instance and returns an object with a ``numerics``
        attribute (a matmul backend with ``matmul(a, b, call)`` and optionally
        ``prepare_weight(b, call)``, see :mod:`harness.numerics.backend`; or
        ``None`` for a pure cost model) and ``cost(trace, ctx)``
        (:class:`harness.api.Accelerator`), which reads the op trace
        (:mod:`harness.optrace`), weight values included.

    Example::

        @hookimpl
        def harness_accelerators():
            yield AcceleratorSpec(
                name="exact",
                summary="Reference numerics: float32, exact integer products",
                config=ExactConfig,
                factory=ExactAccelerator,
            )
    """
