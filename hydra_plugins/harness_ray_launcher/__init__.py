"""Hydra plugin registration of ``hydra/launcher=ray`` (logic in :mod:`harness.launcher`)."""
