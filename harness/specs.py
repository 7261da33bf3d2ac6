"""Typed specs that plugins yield from their hooks.

A plugin never hands the host a bare function or a dict: it yields one frozen
dataclass per thing it provides (a workload, a technique or an accelerator). The
host validates every spec when plugins are loaded (:func:`validate_spec`), so a
mistake in a third-party plugin is reported once, with the plugin's name and
distribution, instead of surfacing as an AttributeError in the middle of a sweep.

The paper a plugin reproduces, and the headline figures that paper claims, are
part of the spec as data (:class:`PaperRef`, :class:`Claim`). The runner compares
every claim whose ``metric`` was measured in a run and files that comparison with
the run, so a reader of the MLflow UI sees "claimed 3566.1 TOPS/W, measured ..."
without opening the plugin's code.

What a plugin needs from the others chosen with it, and what it provides to them,
is data too: ``needs`` and ``provides`` hold capability names (:data:`CAPABILITIES`
lists the ones the built-ins use; third parties may add their own). Before any job
starts, :func:`harness.runner.experiment_identity` checks that every capability a
chosen plugin needs is provided by another chosen plugin, and raises
:class:`CapabilityError` naming both plugins otherwise.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping

__all__ = [
    "CAPABILITIES",
    "KINDS",
    "AcceleratorSpec",
    "CapabilityError",
    "Claim",
    "PaperRef",
    "PluginSpec",
    "SpecError",
    "TechniqueSpec",
    "WorkloadSpec",
    "validate_spec",
]

#: The three kinds of plugin, in the order an experiment composes them.
KINDS = ("workload", "technique", "accelerator")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_METRIC_RE = re.compile(r"^[a-z][a-z0-9_]*/[A-Za-z0-9_./-]+$")
_CAPABILITY_RE = re.compile(r"^[a-z][a-z0-9_]*(:[a-z0-9_]+)?$")

#: Capability names the built-in plugins use in ``needs`` and ``provides``, with what
#: each promises. A third-party plugin may use its own names (same syntax:
#: ``word`` or ``family:word``); a name means what its provider documents.
CAPABILITIES: Mapping[str, str] = {
    "subject:model": "the subject is a ModelSubject classifier (harness.nn layers, trainable)",
    "subject:gemms": "the subject is a set of GEMM operands (weights and activations), no model",
    "subject:pixel": "the subject is a pixel-to-pixel model (e.g. super-resolution)",
    "subject:kernel": "the subject is an approximation kernel with an error bound (AxBench-style)",
    "subject:serving": "the subject is an LLM decode serving trace (batches, context lengths)",
    "subject:points": "the subject is a point-cloud model with its point sets",
    "weight_values": "the op trace carries readable weight values for weighted ops",
    "training_gemms": "the subject trains through pluggable training GEMMs (forward and backward)",
    "memory_ops": "the op trace has non-GEMM memory ops (decode attention with KV-cache bytes)",
}


class SpecError(ValueError):
    """A plugin yielded a spec that breaks the contract."""


class CapabilityError(ValueError):
    """The plugins chosen for one experiment cannot work together (what one needs,
    the others do not provide). Raised on the driver when a job is composed, before
    anything is launched; the message names both plugins."""


@dataclass(frozen=True)
class PaperRef:
    """The publication a plugin reproduces.

    Example::

        PaperRef(
            title="DS-CIM: Digital Stochastic Computing-In-Memory ...",
            authors="Shao, Zhao, Yu et al.",
            venue="DATE",
            year=2026,
            arxiv="2601.06724",
        )
    """

    title: str
    authors: str
    venue: str
    year: int
    arxiv: str | None = None

    def short(self) -> str:
        """``Authors, Venue Year (arXiv id)``: one line for tables."""
        arxiv = f", arXiv {self.arxiv}" if self.arxiv else ""
        return f"{self.authors}, {self.venue} {self.year}{arxiv}"


@dataclass(frozen=True)
class Claim:
    """One headline figure of a paper, declared as data.

    ``metric`` is the harness metric a run would log for the same quantity (for
    example ``accelerator/tops_per_w``); when a run logs it, the runner files the
    measured value next to ``value``. ``workload`` names the harness workload that
    matches the paper's setting, or ``None`` when the figure does not depend on
    the workload (a macro's peak efficiency). When a run uses a different
    workload, the comparison says so instead of pretending the two are alike.
    ``when`` restricts the claim to plugin configs with these field values (for
    example ``{"variant": "ds_cim2"}``).

    Judged on whole sweeps (:mod:`harness.claims`, optional fields): ``direction``
    says which way is better (``"higher"``, ``"lower"``, or ``None``: the value
    itself); ``tolerance`` (relative) and ``abs_tolerance`` (in ``unit``) bound
    "reproduced"; ``baseline`` is the no-effect value (1 for a compression
    ratio), so a result between it and ``value`` is "same direction, smaller
    effect"; ``at`` holds conditions on a run's other metrics, params or tags,
    e.g. ``{"technique/accuracy_drop_points": "<= 0", "workload.quant_bits": 8}``.
    """

    metric: str
    value: float
    unit: str
    experiment: str
    workload: str | None = None
    when: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    direction: str | None = None
    tolerance: float = 0.05
    abs_tolerance: float = 0.0
    baseline: float | None = None
    at: Mapping[str, Any] = field(default_factory=dict)

    def applies_to(self, config: Mapping[str, Any]) -> bool:
        """True when every ``when`` field equals the plugin config's value."""
        return all(config.get(k) == v for k, v in self.when.items())


@dataclass(frozen=True)
class PluginSpec:
    """What every plugin kind has in common.

    ``name`` is the config choice (``accelerator=NAME``) and must be a lowercase
    identifier. ``config`` is a dataclass whose defaults are the paper's operating
    point; every field needs a default, so ``config()`` is a valid configuration.
    ``factory(config_instance)`` returns the runtime object (see
    :mod:`harness.api` for what each kind's object must provide). ``smoke`` holds
    config overrides that make the plugin finish in seconds; the conformance kit
    and the fast tests use them.

    ``needs`` and ``provides`` are capability names (:data:`CAPABILITIES`): every
    name a plugin needs must be provided by another plugin chosen with it (in
    practice the workload), or the experiment is refused before it starts. Any
    iterable of names is accepted and stored as a frozenset.

    ``headline`` names the metrics a reader looks at first (``stage/name``, e.g.
    ``eval/accuracy``, ``accelerator/energy_pj``): a sweep's summary leads with
    the headline metrics of its plugins, and its parent run logs their max, min
    and mean over the FINISHED jobs.
    """

    kind: ClassVar[str] = ""

    name: str
    summary: str
    config: type
    factory: Callable[[Any], Any]
    paper: PaperRef | None = None
    claims: tuple[Claim, ...] = ()
    smoke: Mapping[str, Any] = field(default_factory=dict)
    needs: frozenset[str] = frozenset()
    provides: frozenset[str] = frozenset()
    headline: tuple[str, ...] = ()

    def __post_init__(self):
        # Any iterable of names becomes a frozenset; a bare string (a likely slip for
        # {"subject:model"}) is kept as it is so validate_spec can name the mistake.
        for name in ("needs", "provides"):
            value = getattr(self, name)
            if not isinstance(value, (str, bytes, frozenset)) and isinstance(value, Iterable):
                object.__setattr__(self, name, frozenset(value))
        if not isinstance(self.headline, (str, bytes, tuple)) and isinstance(self.headline, Iterable):
            object.__setattr__(self, "headline", tuple(self.headline))


@dataclass(frozen=True)
class WorkloadSpec(PluginSpec):
    """A workload: what is computed (a model with its data, GEMMs, a trace)."""

    kind: ClassVar[str] = "workload"


@dataclass(frozen=True)
class TechniqueSpec(PluginSpec):
    """A technique: what is done to the workload (compression, training methods).

    ``smoke_workload`` names a workload the technique applies to (it must provide
    what the technique ``needs``); the conformance kit composes the two to check
    the technique end to end. ``cache_result``: the technique's result (the
    subject it returns, which must pickle, and what it logged) depends only on
    the workload, the configs, the seed and the code, so the runner computes it
    once and every accelerator reuses it; set False for a technique with nothing
    worth caching (``none``).
    """

    kind: ClassVar[str] = "technique"
    smoke_workload: str = "dot_products"
    cache_result: bool = True


@dataclass(frozen=True)
class AcceleratorSpec(PluginSpec):
    """An accelerator: what the workload runs on (numerics and a cost model)."""

    kind: ClassVar[str] = "accelerator"


def validate_spec(spec: Any) -> None:
    """Raise :class:`SpecError` naming every way ``spec`` breaks the contract."""
    if not isinstance(spec, PluginSpec) or type(spec) is PluginSpec:
        raise SpecError(
            f"expected a WorkloadSpec, TechniqueSpec or AcceleratorSpec, got {type(spec).__name__}"
        )
    problems: list[str] = []
    if not isinstance(spec.name, str) or not _NAME_RE.match(spec.name):
        problems.append(f"name {spec.name!r} must be a lowercase identifier ([a-z][a-z0-9_]*)")
    if not isinstance(spec.summary, str) or not spec.summary.strip() or "\n" in spec.summary:
        problems.append("summary must be one non-empty line")
    if not (isinstance(spec.config, type) and dataclasses.is_dataclass(spec.config)):
        problems.append(f"config must be a dataclass type, got {spec.config!r}")
    else:
        try:
            instance = spec.config()
        except TypeError as exc:
            problems.append(f"config {spec.config.__name__} needs a default for every field ({exc})")
        else:
            names = {f.name for f in dataclasses.fields(instance)}
            unknown = set(spec.smoke) - names
            if unknown:
                problems.append(f"smoke overrides {sorted(unknown)} are not fields of {spec.config.__name__}")
            from harness.validation import metadata_problems  # declared valid values must be well-formed

            problems.extend(f"valid(...) metadata: {p}" for p in metadata_problems(spec.config))
    if not callable(spec.factory):
        problems.append("factory must be callable")
    if spec.paper is not None and not isinstance(spec.paper, PaperRef):
        problems.append("paper must be a PaperRef or None")
    for claim in spec.claims:
        if not isinstance(claim, Claim):
            problems.append(f"claims must be Claim instances, got {type(claim).__name__}")
        elif not _METRIC_RE.match(claim.metric):
            problems.append(f"claim metric {claim.metric!r} must be 'stage/name', e.g. 'eval/accuracy'")
        else:
            from harness.claims import claim_problems  # judging rules live with the judge

            problems.extend(claim_problems(claim))
    if not isinstance(spec.headline, tuple):
        problems.append(f"headline must be a tuple of metric names such as ('eval/accuracy',), got {spec.headline!r}")
    else:
        for metric in spec.headline:
            if not isinstance(metric, str) or not _METRIC_RE.match(metric):
                problems.append(f"headline metric {metric!r} must be 'stage/name', e.g. 'eval/accuracy'")
    if spec.claims and spec.paper is None:
        problems.append("claims need a paper reference")
    for name in ("needs", "provides"):
        value = getattr(spec, name)
        if not isinstance(value, frozenset):
            problems.append(f"{name} must be a set of capability names such as {{'subject:model'}}, got {value!r}")
            continue
        bad = sorted(repr(c) for c in value if not isinstance(c, str) or not _CAPABILITY_RE.match(c))
        if bad:
            problems.append(
                f"{name} {', '.join(bad)} must be capability names ('word' or 'family:word', lowercase); "
                f"built-in names: {', '.join(CAPABILITIES)}"
            )
    if problems:
        raise SpecError(f"{spec.kind} spec {getattr(spec, 'name', '?')!r}: " + "; ".join(problems))
