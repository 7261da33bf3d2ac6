"""``hydra/launcher=harness_ray``: the registration Hydra needs, nothing else.

Hydra instantiates launchers only from the ``hydra_plugins`` namespace, so the
class lives here and delegates to :mod:`harness.launcher`. The name is not
``ray``: that is Hydra's official ``hydra-ray-launcher``. Importing this module
must stay cheap: Hydra scans it on every ``harness run``.
"""

from __future__ import annotations

from typing import Any, Sequence

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher

from harness.launcher.config import LAUNCHER_NAME, HarnessRayLauncherConf, options_from

ConfigStore.instance().store(group="hydra/launcher", name=LAUNCHER_NAME, node=HarnessRayLauncherConf, provider="accel-harness")


class HarnessRayLauncher(Launcher):
    """Runs a multirun's jobs as Ray tasks; see :mod:`harness.launcher`."""

    #: Every job of a batch is composed on the driver before any is launched, so a
    #: bad override fails the batch with nothing started (``hydra/sweeper=harness_basic``
    #: relies on this to skip its own validation pass).
    composes_every_job_before_launch = True

    def __init__(self, **options: Any) -> None:
        self.opts = options_from(options)
        self.config = self.hydra_context = self.task_function = self.hook = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from harness.launcher.hooks import load_hook

        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.hook = load_hook(self.opts.hook, task_function)
        if self.hook is not None:
            self.hook.setup(config=config, options=self.opts, task_function=task_function)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        from harness.launcher.core import launch

        return launch(self, job_overrides, initial_job_idx)
