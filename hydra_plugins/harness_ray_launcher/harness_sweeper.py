"""``hydra/sweeper=harness_basic``: Hydra's basic sweeper, without composing every job twice.

Hydra's basic sweeper composes each job of a batch to validate it ("This repeat
work the launcher will do"), then the launcher composes it again. The
``harness_ray`` launcher composes every job of a batch on the driver before it
launches any, which is the same check, so with that launcher this sweeper skips
its own pass (composing is the driver's main per-job cost: ~45 ms a job here).
With any other launcher it validates exactly as the basic sweeper does.
"""

from dataclasses import dataclass
from typing import Dict, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class HarnessBasicSweeperConf:
    """The basic sweeper's options (``max_batch_size``, ``params``)."""

    _target_: str = "hydra_plugins.harness_ray_launcher.harness_sweeper.HarnessBasicSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="harness_basic", node=HarnessBasicSweeperConf, provider="accel-harness")


class HarnessBasicSweeper(BasicSweeper):
    """Hydra's basic sweeper; validation is left to a launcher that composes every job first."""

    def validate_batch_is_legal(self, batch) -> None:
        if getattr(self.launcher, "composes_every_job_before_launch", False):
            return
        super().validate_batch_is_legal(batch)
