"""The ``zoo fit|validate|test|predict`` command line: LightningCLI around
:class:`~zoo.train.module.ZooLitModule` and :class:`~zoo.data.ZooDataModule`, with what a user of a
training CLI may rely on: checkpoints loaded weights-only, one-line config errors, a resumable
checkpoint and exit code 143 on SIGTERM, shipped entries named by ``--config NAME`` from any folder,
and the zoo's callbacks configurable as ``release.*``, ``sample.*`` and ``sparsity_log.*``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from zoo.data import ZooDataModule
from zoo.paths import cache_dir
from zoo.train.callbacks import (
    CheckpointOnTerminate,
    InputSparsityLogger,
    ReleaseExport,
    SamplePrinter,
    TokensPerSecond,
    step_progress_bar,
)
from zoo.train.module import NonFiniteLossError, ZooLitModule


class ConfigError(ValueError):
    """A training config the user must fix; ``zoo fit`` reports it as one line, without a traceback."""


class OneLineErrorParser(LightningArgumentParser):
    """Parser errors become :class:`ConfigError` (one line) instead of a usage wall and exit."""

    def error(self, message: str, ex: Exception | None = None):
        raise ConfigError(" ".join(str(message).split())) from ex


class NoAdvertisements(logging.Filter):
    """Drops Lightning's "💡 Tip: try installing ..." lines: product suggestions, not run output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip")


def quiet_lightning() -> None:
    """What ``zoo fit`` prints is the run: no advertisements, no warnings about Lightning's own internals."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        target = logging.getLogger(name)
        if not any(isinstance(f, NoAdvertisements) for f in target.filters):
            target.addFilter(NoAdvertisements())
    # raised inside Lightning's own pytree helper on every batch transfer; nothing a user can change
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class ZooCLI(LightningCLI):
    """LightningCLI whose configs may interpolate their own values (``${model.arch.max_seq_len}`` in ``data``).

    ``omegaconf+`` resolves interpolations after every config file and override is merged, so
    ``--model.arch.max_seq_len 64`` also changes ``data.max_seq_len``. On top of Lightning's:
    checkpoints load weights-only unless ``--weights_only false`` is given (nothing downloaded is
    unpickled); a default ``ModelCheckpoint`` (``step=N.ckpt`` every validation interval and
    ``last.ckpt``) is added only when the config sets none; SIGTERM leaves a resumable checkpoint.
    """

    def __init__(self, *args: Any, config_files: Sequence[str] = (), **kwargs: Any) -> None:
        self.config_files = list(config_files)  # named in errors about the values they set
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The zoo's own callbacks, configured like the model and data (``--sample.prompt ""``).
        parser.add_lightning_class_args(ReleaseExport, "release")
        parser.add_lightning_class_args(SamplePrinter, "sample")
        parser.add_lightning_class_args(InputSparsityLogger, "sparsity_log")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:  # the config's values, checked by the classes they build
            where = " + ".join(self.config_files + ["command-line overrides"])
            raise ConfigError(f"{where}: " + " ".join(str(error).split())) from error

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer_config = self.config_init[self.subcommand]["trainer"] if self.subcommand else self.config_init["trainer"]
        configured = trainer_config.get("callbacks") or []
        configured = list(configured) if isinstance(configured, list) else [configured]
        extra: list[Callback] = [CheckpointOnTerminate(), TokensPerSecond()]
        if trainer_config.get("logger") is not False:
            extra.append(LearningRateMonitor(logging_interval="step"))
        if trainer_config.get("enable_checkpointing") is not False and not any(isinstance(c, ModelCheckpoint) for c in configured):
            interval = trainer_config.get("val_check_interval")
            every = int(interval) if isinstance(interval, int) and interval > 0 else 100
            extra.append(ModelCheckpoint(filename="{step}", every_n_train_steps=every, save_last=True, save_top_k=1))
        if trainer_config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in configured):
            extra += [bar for bar in [step_progress_bar()] if bar is not None]
        if trainer_config.get("logger") in (None, True):
            # The default, named: Lightning's logger=True warns about tensorboardX on every run.
            kwargs.setdefault("logger", CSVLogger(trainer_config.get("default_root_dir") or os.getcwd(), name="lightning_logs"))
        return super().instantiate_trainer(**{"callbacks": configured + extra, **kwargs})

    # Trainer entry points, called by LightningCLI in place of trainer.<subcommand>: load
    # checkpoints weights-only by default (Lightning unpickles remote ones unless told).
    def fit(self, **kwargs: Any) -> None:
        with checkpoint_arguments(kwargs) as arguments:
            self.trainer.fit(**arguments)

    def validate(self, **kwargs: Any) -> None:
        with checkpoint_arguments(kwargs) as arguments:
            self.trainer.validate(**arguments)

    def test(self, **kwargs: Any) -> None:
        with checkpoint_arguments(kwargs) as arguments:
            self.trainer.test(**arguments)

    def predict(self, **kwargs: Any) -> None:
        with checkpoint_arguments(kwargs) as arguments:
            self.trainer.predict(**arguments)


@contextmanager
def checkpoint_arguments(kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The trainer call's arguments with ``weights_only`` on unless given, and an ``http(s)`` ckpt_path
    fetched into a temporary folder under ``$ZOO_HOME`` for the call. Lightning would hand the URL
    to ``torch.hub``, which caches it in ``~/.cache/torch`` by its file name alone (a later URL
    ending in the same name gets the stale file) and prints a progress bar into the error stream."""
    arguments = {**kwargs, "weights_only": True if kwargs.get("weights_only") is None else kwargs["weights_only"]}
    url = str(arguments.get("ckpt_path") or "")
    if not url.startswith(("http://", "https://")):
        yield arguments
        return
    with tempfile.TemporaryDirectory(dir=cache_dir("downloads")) as folder:
        local = Path(folder) / "remote.ckpt"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, local.open("wb") as out:
                shutil.copyfileobj(response, out)
        except (OSError, ValueError) as error:  # URLError and timeouts are OSErrors
            raise ConfigError(f"--ckpt_path {url}: could not be downloaded ({error})") from None
        yield {**arguments, "ckpt_path": str(local)}


def resolve_config_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv, config files): ``--config NAME`` of a shipped entry (``dense-tiny``) or size
    (``tiny``) becomes its file, and a shipped entry brings its size's base first (see
    :func:`zoo.hub.registry.config_files`); each config file is read here first so that a missing
    file or malformed YAML is named in one line."""
    from zoo.hub.registry import SIZES, config_files, config_path, list_models, size_config_path

    resolved, files = [], []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in ("--config", "-c") and index + 1 < len(argv):
            value, index = argv[index + 1], index + 2
        elif arg.startswith("--config="):
            value, index = arg.split("=", 1)[1], index + 1
        else:
            resolved.append(arg)
            index += 1
            continue
        path = Path(value)
        if not path.is_file():
            name = value.removesuffix(".yaml")
            try:
                path = size_config_path(name) if name in SIZES else config_path(name)
            except KeyError:
                choices = ", ".join([*list_models(), *SIZES])
                raise ConfigError(f"{value}: no such config file, and not a zoo entry or size name ({choices})") from None
        for part in config_files(path):
            _check_yaml(part)
            resolved += ["--config", str(part)]
            files.append(str(part))
    return resolved, files


def _check_yaml(path: Path) -> None:
    import yaml

    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}: malformed YAML{where}: {' '.join(str(problem).split())}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config ({error.strerror})") from None


def run_lightning_cli(argv: list[str] | None = None, *, run: bool = True) -> ZooCLI:
    """Runs ``zoo fit|validate|test|predict``; ``argv=None`` reads the process's command line.

    ``run=False`` parses and builds the model, data module and trainer without running (then
    ``argv`` carries no subcommand: ``["fit", ...]`` is accepted and its first item dropped).
    """
    from jsonargparse import set_parsing_settings

    # Configs say ${model.arch.max_seq_len}; under a subcommand that key really is fit.model...,
    # so absolute interpolation paths are read as relative to the subcommand's config.
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    if not run and argv and argv[0] in ("fit", "validate", "test", "predict"):
        argv = argv[1:]
    resolved, files = resolve_config_arguments(sys.argv[1:] if argv is None else argv)
    if argv is None:
        # LightningCLI reads sys.argv itself (and warns when also handed a list): rewrite it in place.
        sys.argv[1:] = resolved
    quiet_lightning()
    with warnings.catch_warnings():
        # Called from Python (tests, scripts) with argv while the process has its own command line.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return _zoo_cli(resolved if argv is not None else None, files, run)


def _zoo_cli(args: list[str] | None, files: list[str], run: bool) -> ZooCLI:
    return ZooCLI(
        ZooLitModule,
        ZooDataModule,
        args=args,
        config_files=files,
        parser_class=OneLineErrorParser,
        parser_kwargs={"parser_mode": "omegaconf+"},
        save_config_kwargs={"overwrite": True},
        seed_everything_default=1337,
        auto_configure_optimizers=False,
        run=run,
    )


def lightning_main(argv: list[str] | None = None) -> int:
    """``zoo fit|validate|test|predict`` with exit codes a scheduler can trust and one-line errors:
    2 for a config mistake, 1 for a failed run or a refused checkpoint, 143 after SIGTERM."""
    import pickle
    import re

    command = (sys.argv[1:] if argv is None else argv)[0]
    try:
        run_lightning_cli(argv)
    except (ConfigError, NonFiniteLossError) as error:
        print(f"zoo {command}: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    except pickle.UnpicklingError as error:
        # weights-only loading refused an object in a checkpoint: never executed, reported.
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f": it refers to {refused.group(1)}" if refused else ""
        print(
            f"zoo {command}: error: the checkpoint holds more than tensors and plain data and was not loaded{what} "
            "(pass --weights_only false only for a checkpoint you trust)",
            file=sys.stderr,
        )
        return 1
    except SIGTERMException as stop:
        checkpoint = getattr(stop, "zoo_checkpoint", None)
        where = f"; resumable checkpoint: {checkpoint}\nresume: run the same command with --ckpt_path {checkpoint}" if checkpoint else ""
        print(f"zoo {command}: stopped by SIGTERM at step {getattr(stop, 'zoo_step', '?')}{where}", file=sys.stderr)
        return 143  # 128 + SIGTERM, as a shell reports a process killed by it
    return 0
