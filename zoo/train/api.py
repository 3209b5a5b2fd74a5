"""Training from Python: ``zoo.train.fit("dense-tiny", {"trainer.max_steps": 50})``.

The same path as ``zoo fit`` (configs composed in order, every value validated by the classes it
builds, the zoo's callbacks), for scripts such as the scaling sweep that train many runs in one
process. Overrides are dotted keys (``model.arch.dim``), as on the command line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from zoo.train.cli import ZooCLI, run_lightning_cli


def override_arguments(overrides: Mapping[str, Any]) -> list[str]:
    """``{"trainer.max_steps": 5, "sample.prompt": ""}`` → ``["--trainer.max_steps=5", "--sample.prompt="]``.

    Strings pass as they are; other values as JSON (``true``, ``null``, ``[0.9, 0.95]``), which
    is how LightningCLI reads a typed value from the command line.
    """
    arguments = []
    for key, value in overrides.items():
        if not isinstance(key, str) or not key or key.startswith("-"):
            raise ValueError(f"training override keys are dotted config keys such as 'trainer.max_steps', got {key!r}")
        arguments.append(f"--{key}={value if isinstance(value, str) else json.dumps(value)}")
    return arguments


def fit(configs: str | Sequence[str], overrides: Mapping[str, Any] | None = None, *, run: bool = True) -> ZooCLI:
    """Trains from shipped entry names or config files (later ones win), then ``overrides``.

    Returns the finished :class:`~zoo.train.cli.ZooCLI`: ``.model`` (the LightningModule, its
    ``.model`` the decoder), ``.datamodule`` and ``.trainer`` (``callback_metrics`` holds the last
    logged values). ``run=False`` builds them without training. Errors in the configuration raise
    :class:`~zoo.train.cli.ConfigError` with a one-line message.
    """
    files = [configs] if isinstance(configs, str) else list(configs)
    argv = [argument for config in files for argument in ("--config", str(config))]
    return run_lightning_cli(["fit", *argv, *override_arguments(overrides or {})], run=run)
