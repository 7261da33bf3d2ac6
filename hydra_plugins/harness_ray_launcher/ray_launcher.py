"""``hydra/launcher=ray``: the registration Hydra needs, nothing else.

Hydra instantiates launchers only from the ``hydra_plugins`` namespace, so the
class lives here and delegates to :class:`harness.launcher.RayLauncherImpl`,
where the design (single writer, retries, resume) is documented. Importing this
module must stay cheap: Hydra scans it on every ``harness run``.
"""

from __future__ import annotations

from typing import Any, Sequence

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher

from harness.launcher import RayLauncherConf, RayLauncherImpl

ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf, provider="accel-harness")


class RayLauncher(Launcher):
    """Runs a multirun's jobs as Ray tasks; see :mod:`harness.launcher`."""

    def __init__(self, **options: Any) -> None:
        self.impl = RayLauncherImpl(**options)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        return self.impl.launch(job_overrides, initial_job_idx)
