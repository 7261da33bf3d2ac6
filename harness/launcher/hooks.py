"""The seam between the generic launcher and an app: a driver-side :class:`SweepHook`.

The launcher alone is a plain Hydra launcher: every job's task function runs on
Ray through ``run_job`` and the sweeper gets its ``JobReturn``. An app that wants
more (the harness: single writer, resume, a sweep parent run) gives the launcher
a hook, which runs in the driver process only:

* :meth:`SweepHook.before_launch` sees every composed :class:`Job` before Ray
  starts; it may skip jobs (:meth:`Job.skip`) or fail the whole sweep by raising;
* :meth:`SweepHook.prepare` does the hook's slow set-up (opening a store, finding
  finished jobs) on a thread while Ray starts; it may skip jobs or raise too;
* :meth:`SweepHook.order` chooses the order in which the jobs to run are submitted
  (and may set :attr:`Job.after` to hold a job back until another's result is in);
* :meth:`SweepHook.worker_task` chooses what runs on the worker inside
  ``run_job`` (by default the task function itself);
* :meth:`SweepHook.on_result` sees each job's ``JobReturn`` as it arrives, and
  may rewrite its return value and status before the sweeper sees it;
* :meth:`SweepHook.after_launch` sees them all once the batch is done;
* :meth:`SweepHook.on_abort` is told when the driver is interrupted.

The hook is named by ``hydra.launcher.hook=module:Class``, or carried by the
task function as a ``sweep_hook`` attribute (a class or a ``module:Class``
string), so an app's own config needs no launcher-specific key.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from omegaconf import DictConfig

__all__ = ["Job", "SweepHook", "load_hook"]


@dataclass
class Job:
    """One job of a launch, as the driver sees it."""

    #: Hydra's job number (``hydra.job.num``).
    idx: int
    #: The job's overrides, as the sweeper produced them.
    overrides: List[str]
    #: The composed config, with its ``hydra`` node (what ``run_job`` receives).
    config: DictConfig
    #: Set by :meth:`skip`: the job is not run, the sweeper gets this value.
    skipped: bool = False
    skip_value: Any = None
    #: Free for the hook (its status, run id, notes, metrics ...).
    meta: Dict[str, Any] = field(default_factory=dict)
    #: The ``JobReturn`` once known (after the hook's :meth:`SweepHook.on_result`).
    result: Any = None
    #: Set by the hook: submit this job only once ``after``'s result has arrived
    #: (it reuses what ``after`` computes). Ignored when nothing else could run, and
    #: when a slot would stay idle while ``after`` runs: then the job starts early and
    #: must itself wait for what it reuses (the harness's technique cache holds a lock
    #: while it computes), so it goes on as soon as the result exists.
    after: Optional["Job"] = None

    def skip(self, return_value: Any = None) -> None:
        """Do not run this job; the sweeper gets ``return_value`` as its result."""
        self.skipped, self.skip_value = True, return_value

    def task_config(self) -> DictConfig:
        """The config the task function receives (without the ``hydra`` node), resolved
        against this job's Hydra config (``${hydra:...}`` and ``${now:...}`` work)."""
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        HydraConfig.instance().set_config(self.config)
        return OmegaConf.create({k: self.config[k] for k in self.config if k != "hydra"})


class SweepHook:
    """Driver-side extension point of ``hydra/launcher=harness_ray`` (no-ops by default)."""

    def setup(self, *, config: DictConfig, options: Any, task_function: Callable) -> None:
        """Called once per launch with the sweep's master config and the launcher's options."""

    def before_launch(self, jobs: Sequence[Job]) -> None:
        """Every composed job of the batch, before Ray starts; may skip jobs or raise.
        Keep it fast (checks): an error here is reported before anything starts."""

    def likely_to_run(self, jobs: Sequence[Job]) -> bool:
        """A quick guess, after :meth:`before_launch`, whether :meth:`prepare` will leave any
        job to run. True: Ray starts while the hook prepares. False: Ray starts only if
        prepare leaves a job to run (a rerun of a finished sweep starts nothing)."""
        return True

    def prepare(self, jobs: Sequence[Job]) -> None:
        """After :meth:`before_launch`, on a thread while Ray starts (so it must not use
        Ray); may skip jobs or raise (Ray is then stopped). Slow set-up goes here."""

    def order(self, jobs: Sequence[Job]) -> List[Job]:
        """The order to submit the jobs to be run (default: as composed)."""
        return list(jobs)

    def job_env(self) -> Dict[str, str]:
        """Extra environment variables for the jobs' worker processes."""
        return {}

    def worker_task(self, task_function: Callable) -> Callable:
        """What runs on the worker inside ``run_job`` (must pickle)."""
        return task_function

    def on_result(self, job: Job, result: Any) -> None:
        """A job's ``JobReturn`` as it arrives (a FAILED one if its worker was lost)."""

    def after_launch(self, jobs: Sequence[Job], timings: Dict[str, float], cluster: Dict[str, str]) -> None:
        """The batch is done (``job.result`` set for every job); may raise to end the sweep."""

    def on_abort(self, error: BaseException) -> None:
        """The driver is stopping with ``error`` (Ctrl-C, a driver error) mid-launch."""


def load_hook(spec: Optional[Any], task_function: Optional[Callable]) -> Optional[SweepHook]:
    """The hook named by ``hydra.launcher.hook``, else the task function's ``sweep_hook``."""
    where = "hydra.launcher.hook"
    if spec is None and task_function is not None:
        spec, where = getattr(task_function, "sweep_hook", None), "the task function's sweep_hook"
    if spec is None:
        return None
    if isinstance(spec, str):
        module, _, name = spec.partition(":") if ":" in spec else spec.rpartition(".")
        try:
            spec = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"{where}={spec!r}: cannot import it ({exc}); expected 'module:Class'") from None
    hook = spec() if isinstance(spec, type) else spec
    if not isinstance(hook, SweepHook):
        raise TypeError(f"{where}: {type(hook).__name__} is not a harness.launcher.hooks.SweepHook")
    return hook
