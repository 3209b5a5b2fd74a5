"""Training zoo models with Lightning: the LightningModule, its schedules, callbacks and the
``zoo fit|validate|test|predict`` command line, and :func:`fit` for training from Python.

Lightning is imported here and in :mod:`zoo.data.module` only; the schedule
(:mod:`zoo.train.schedule`) is plain Python.
"""

from zoo.train.api import fit, override_arguments
from zoo.train.cli import ConfigError, ZooCLI, lightning_main, run_lightning_cli
from zoo.train.module import NonFiniteLossError, ZooLitModule, release_metrics
from zoo.train.schedule import SCHEDULES, in_second_stage, lr_multiplier

__all__ = [
    "SCHEDULES",
    "ConfigError",
    "NonFiniteLossError",
    "ZooCLI",
    "ZooLitModule",
    "fit",
    "in_second_stage",
    "lightning_main",
    "lr_multiplier",
    "override_arguments",
    "release_metrics",
    "run_lightning_cli",
]
