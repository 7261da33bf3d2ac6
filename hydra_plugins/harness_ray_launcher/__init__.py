"""Hydra plugin registration of ``hydra/launcher=harness_ray`` (logic in :mod:`harness.launcher`)."""
