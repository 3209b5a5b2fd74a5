"""Callbacks of ``zoo fit``: what a run does besides optimising, each switchable on its own.

- :class:`ReleaseExport` writes the release directory (weights, tokenizer, metrics, model card)
  when ``fit`` ends; :class:`SamplePrinter` prints a short generated sample after it.
- :class:`InputSparsityLogger` measures the zero fraction at every Q-Sparse site (arXiv
  2407.10969, §3.6: activated parameters are counted from measured, not nominal, sparsity) and
  the busiest expert's share of tokens (MegaBlocks' load balance) every few steps.
- :class:`TokensPerSecond` shows training throughput in the progress bar.
- :class:`CheckpointOnTerminate` leaves a resumable checkpoint when a scheduler sends SIGTERM.
- :func:`step_progress_bar`: Lightning's rich bar labelled by steps.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from zoo.models.accounting import account, recorded_input_sparsity, recording_input_zeros
from zoo.models.protocols import ExpertRouting


def sample_text(model, tokenizer, prompt: str, n_tokens: int, *, temperature: float = 0.8, top_k: int | None = 40, seed: int = 0) -> str:
    """``n_tokens`` sampled after ``prompt`` (decoded, prompt excluded)."""
    from zoo.models.generate import generate

    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt)], device=device)
    new = generate(model, ids, n_tokens, temperature=temperature, top_k=top_k, seed=seed)
    return tokenizer.decode(new[0].tolist())


def _trained(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
    """A release or sample is worth writing: a real run (not fast_dev_run) that took a step, with a tokenizer."""
    return trainer.global_step > 0 and not trainer.fast_dev_run and getattr(pl_module, "tokenizer", None) is not None


class ReleaseExport(Callback):
    """Writes ``<default_root_dir>/release`` when ``fit`` ends (see :mod:`zoo.hub.release`).

    Args:
        enabled: write the release (false: only Lightning checkpoints are left).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        if trainer.global_step == 0 and not trainer.fast_dev_run:
            print("\nno training step ran (trainer.max_steps is 0?): no release written", file=sys.stderr)
            return
        if not _trained(trainer, pl_module):
            return
        from zoo.hub.release import save_release
        from zoo.train.module import release_metrics

        root = Path(trainer.default_root_dir)
        release = save_release(pl_module.model, pl_module.tokenizer, root / "release", release_metrics(pl_module), name=root.name)
        print(f"\nrelease written to {release}")
        last = getattr(trainer.checkpoint_callback, "last_model_path", "")
        if last:
            print(f"last Lightning checkpoint: {last}")


class SamplePrinter(Callback):
    """Prints ``tokens`` generated after ``prompt`` when ``fit`` ends: a first look at the model.

    Args:
        prompt: the prompt ("" prints nothing).
        tokens: how many tokens to generate.
    """

    def __init__(self, prompt: str = "ROMEO:", tokens: int = 200) -> None:
        if tokens < 0:
            raise ValueError(f"sample.tokens must be >= 0, got {tokens}")
        self.prompt, self.tokens = prompt, tokens

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.prompt or not self.tokens or not trainer.is_global_zero or not _trained(trainer, pl_module):
            return
        text = sample_text(pl_module.model, pl_module.tokenizer, self.prompt, self.tokens)
        print(f"\nsample ({self.tokens} tokens after {self.prompt!r}):\n{self.prompt}{text}\n")


class InputSparsityLogger(Callback):
    """Every ``every_n_steps`` training steps, logs the measured input sparsity of each Q-Sparse
    site (``sparsity/<site>``), the activated parameters per token (``activated_params``) and, for
    MoE models, the busiest expert's share of the routed tokens (``moe/max_expert_load``).

    Args:
        every_n_steps: measure every this many optimizer steps (0: never).
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        if every_n_steps < 0:
            raise ValueError(f"sparsity_log.every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.recording: contextlib.ExitStack | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.recording = contextlib.ExitStack()
            self.recording.enter_context(recording_input_zeros(pl_module.model))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.recording is None:
            return
        model = pl_module.model
        with self.recording:  # stops recording on the way out, even if accounting fails
            stats = account(model, recorded_input_sparsity(model))
        self.recording = None
        for site, value in stats.input_sparsity.items():
            pl_module.log(f"sparsity/{site}", value)
        pl_module.log("activated_params", stats.activated_params)
        counts = next(
            (m.tokens_per_expert for m in model.modules() if isinstance(m, ExpertRouting) and m.tokens_per_expert is not None), None
        )
        if counts is not None:
            pl_module.log("moe/max_expert_load", (counts.float() / counts.sum().clamp(min=1)).max())


class TokensPerSecond(Callback):
    """Logs ``train/tokens_per_s`` (progress bar too): input tokens of a step over its wall time.

    Lightning's ``ThroughputMonitor`` logs to the logger only, per ``log_every_n_steps``; the
    zoo's users watch tokens/s in the progress bar, which this callback feeds.
    """

    def __init__(self) -> None:
        self.started: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.started is not None:
            elapsed = time.perf_counter() - self.started
            pl_module.log("train/tokens_per_s", batch[0].numel() / max(elapsed, 1e-9), prog_bar=True)


class CheckpointOnTerminate(Callback):
    """On SIGTERM during ``fit``, writes a resumable ``last.ckpt`` (atomically) before the run ends.

    Lightning turns SIGTERM into ``SIGTERMException`` (a ``SystemExit`` with code 0, which a
    scheduler reads as success); ``zoo fit`` catches it and exits 143 after naming the checkpoint.
    """

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        checkpointing = trainer.checkpoint_callback
        folder = Path(checkpointing.dirpath) if checkpointing is not None and checkpointing.dirpath else Path(trainer.default_root_dir)
        path = folder / "last.ckpt"
        partial = folder / ".last.ckpt.partial"
        trainer.save_checkpoint(partial, weights_only=False)  # full state: optimizer, loops, data position
        if trainer.is_global_zero:
            os.replace(partial, path)
        exception.zoo_checkpoint = path  # read by zoo.train.cli to print how to resume
        exception.zoo_step = trainer.global_step


def step_progress_bar() -> Callback | None:
    """Lightning's rich progress bar, labelled by steps: a max_steps run has no last epoch, and the
    stock label printed "Epoch 0/-2". None without ``rich`` (Lightning's tqdm bar then)."""
    try:
        from lightning.pytorch.callbacks import RichProgressBar
    except ImportError:
        return None

    class StepProgressBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            trainer = self.trainer
            if trainer.max_epochs in (None, -1) and trainer.max_steps and trainer.max_steps > 0:
                return f"train (max {trainer.max_steps} steps, epoch {current_epoch})"
            return super()._get_train_description(current_epoch)

    try:
        return StepProgressBar()
    except ModuleNotFoundError:  # RichProgressBar needs the rich package
        return None
