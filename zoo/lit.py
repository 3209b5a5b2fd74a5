"""Lightning training of zoo models: a thin ``LightningModule`` around the plain decoder and the
``zoo fit/validate/test/predict`` LightningCLI.

Optimisation follows the papers' recipes: AdamW (β = 0.9, 0.95) with linear warmup and cosine
decay, or for ternary models the two-stage schedule of BitNet b1.58's training tips
(arXiv 2402.17764: the learning rate drops to 2/3 and weight decay to 0 halfway). MoE auxiliary
losses (MegaBlocks / Switch) are added to the loss and logged. Losses are reported as
perplexity and bits per byte; the measured input sparsity of every Q-Sparse site
(arXiv 2407.10969) and the activated parameters are logged as training runs.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.aggregation import SumMetric

from zoo.models.accounting import account, recorded_input_sparsity, recording_input_zeros
from zoo.models.config import ModelConfig
from zoo.models.decoder import Decoder

SCHEDULES = ("cosine", "bitnet", "constant")


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN or infinite; the last saved checkpoint is the last good one."""


def in_second_stage(step: int, total_steps: int) -> bool:
    """BitNet b1.58's second stage: from the midpoint of the run (one definition, for lr and decay)."""
    return step >= total_steps // 2


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float, schedule: str) -> float:
    """Learning-rate factor at ``step``: linear warmup, then cosine decay to ``min_ratio``.

    ``bitnet`` additionally multiplies by 2/3 in the second stage (:func:`in_second_stage`).
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    factor = min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "bitnet" and in_second_stage(step, total_steps):
        factor *= 2.0 / 3.0
    return factor


class ZooLitModule(L.LightningModule):
    """Trains a :class:`~zoo.models.Decoder` built from ``arch``.

    Args:
        arch: the model's hyper-parameters (every field validated).
        lr: peak learning rate of AdamW.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        warmup_steps: linear warmup steps.
        schedule: ``cosine``, ``bitnet`` (two-stage, for ternary weights) or ``constant``.
        weight_decay: AdamW weight decay on matrices (not on norms or embeddings); 0 from the
            midpoint under ``bitnet``.
        betas: AdamW betas.
        init_from: continue-training: a release directory or ``.ckpt`` whose weights initialise
            this model (Q-Sparse §2.3: a dense checkpoint trained on with top-K switched on).
        sparsity_log_every: measure input sparsity every this many steps (0: never).
        sample_prompt: prompt of the sample printed when ``fit`` ends ("" for none).
        sample_tokens: length of that sample.
    """

    def __init__(
        self,
        arch: ModelConfig = ModelConfig(),
        lr: float = 3e-3,
        min_lr_ratio: float = 0.1,
        warmup_steps: int = 100,
        schedule: str = "cosine",
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        init_from: str | None = None,
        sparsity_log_every: int = 50,
        sample_prompt: str = "ROMEO:",
        sample_tokens: int = 200,
    ) -> None:
        super().__init__()
        if isinstance(arch, dict):
            arch = ModelConfig.from_dict(arch, source="model.arch")
        if schedule not in SCHEDULES:
            raise ValueError(f"model.schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not lr > 0:
            raise ValueError(f"model.lr must be > 0, got {lr}")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"model.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        if warmup_steps < 0 or weight_decay < 0:
            raise ValueError("model.warmup_steps and model.weight_decay must be >= 0")
        # Plain types only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "arch": arch.to_dict(),
                "lr": lr,
                "min_lr_ratio": min_lr_ratio,
                "warmup_steps": warmup_steps,
                "schedule": schedule,
                "weight_decay": weight_decay,
                "betas": list(betas),
                "init_from": init_from,
                "sparsity_log_every": sparsity_log_every,
                "sample_prompt": sample_prompt,
                "sample_tokens": sample_tokens,
            }
        )
        self.arch = arch
        self.model = Decoder(arch)
        if init_from:
            self._initialise_from(init_from)
        self.val_nll = SumMetric()
        self.val_tokens = SumMetric()
        self._step_started: float | None = None
        self.total_steps = 0  # the run's length in optimizer steps, resolved in configure_optimizers
        self.tokenizer = None

    # -- set-up ---------------------------------------------------------------------------------
    def _initialise_from(self, source: str) -> None:
        from zoo.release import load_model_source, load_weights

        donor, _, _ = load_model_source(source)
        load_weights(self.model, donor.state_dict(), f"model.init_from={source}")

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        if datamodule.vocab_size > self.arch.vocab_size:
            raise ValueError(f"data tokenizer has {datamodule.vocab_size} tokens but model.arch.vocab_size is {self.arch.vocab_size}")
        if datamodule.max_seq_len > self.arch.max_seq_len:
            raise ValueError(f"data.max_seq_len={datamodule.max_seq_len} exceeds model.arch.max_seq_len={self.arch.max_seq_len}")
        self.tokenizer = datamodule.tokenizer

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            (decay if param.dim() >= 2 and "tok_embeddings" not in name else no_decay).append(param)
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr,
            betas=tuple(hp.betas),
        )
        # Resolved once from the real run length (max_steps, or epochs x batches when it is -1),
        # so the lr schedule and the weight-decay stage agree on where the middle is.
        max_steps = self.trainer.max_steps
        total = max_steps if max_steps and max_steps > 0 else self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("trainer: the run length is unbounded; set trainer.max_steps or trainer.max_epochs")
        self.total_steps = total = int(total)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_multiplier(
                step, warmup_steps=hp.warmup_steps, total_steps=total, min_ratio=hp.min_lr_ratio, schedule=hp.schedule
            ),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- steps ----------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    def _lm_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch
        logits = self.model(inputs)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        return nll, torch.tensor(targets.numel(), device=nll.device)

    def _bytes_per_token(self, split: str) -> float:
        datamodule = getattr(self.trainer, "datamodule", None)
        return datamodule.bytes_per_token(split) if datamodule is not None else 1.0

    def training_step(self, batch, batch_idx: int):
        step = self.global_step
        every = self.hparams.sparsity_log_every
        measure = bool(every) and step % every == 0
        if measure:
            with recording_input_zeros(self.model):
                nll, count = self._lm_loss(batch)
                stats = account(self.model, recorded_input_sparsity(self.model))
        else:
            nll, count = self._lm_loss(batch)
        loss = nll / count
        total = loss
        for name, value in self.model.aux_losses().items():
            total = total + value
            self.log(f"train/{name}", value)
        if not torch.isfinite(total):
            last = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or "none saved yet"
            raise NonFiniteLossError(
                f"non-finite training loss ({total.item()}) at step {step}; training stopped. "
                f"Last good checkpoint: {last}. Lower model.lr or check the data."
            )
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", torch.exp(loss.detach()))
        self.log("train/bpb", loss.detach() / math.log(2) / self._bytes_per_token("train"))
        if measure:
            for site, value in stats.input_sparsity.items():
                self.log(f"sparsity/{site}", value)
            self.log("activated_params", stats.activated_params)
        for module in self.model.modules():
            counts = getattr(module, "tokens_per_expert", None)
            if counts is not None and measure:
                load = counts.float() / counts.sum().clamp(min=1)
                self.log("moe/max_expert_load", load.max())
                break
        return total

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._step_started = time.perf_counter()
        hp = self.hparams
        if hp.schedule == "bitnet" and in_second_stage(self.global_step, self.total_steps):
            for group in self.optimizers().param_groups:
                group["weight_decay"] = 0.0  # BitNet's second stage trains without weight decay

    def on_before_optimizer_step(self, optimizer) -> None:
        # Once per optimizer step, after every micro-batch of gradient accumulation: MoE bias
        # balancing sees the whole step's expert loads (all-reduced across ranks inside).
        self.model.balance_experts()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self._step_started is not None:
            elapsed = time.perf_counter() - self._step_started
            self.log("train/tokens_per_s", batch[0].numel() / max(elapsed, 1e-9), prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        nll, count = self._lm_loss(batch)
        self.val_nll.update(nll)
        self.val_tokens.update(count)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", "validation")

    def test_step(self, batch, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", "test")

    def _log_eval(self, prefix: str, split: str) -> None:
        tokens = self.val_tokens.compute()
        if tokens > 0:
            loss = self.val_nll.compute() / tokens
            self.log(f"{prefix}/loss", loss, prog_bar=True)
            self.log(f"{prefix}/ppl", torch.exp(loss))
            self.log(f"{prefix}/bpb", loss / math.log(2) / self._bytes_per_token(split), prog_bar=True)
        self.val_nll.reset()
        self.val_tokens.reset()

    def predict_step(self, batch, batch_idx: int):
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.model(inputs).argmax(-1)

    # -- checkpoints and release ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.tokenizer is not None:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint["zoo_tokenizer_json"] = self.tokenizer.save(tmp).read_text()
        # Provenance travels with the checkpoint, so `zoo export CKPT` writes the same metrics.json
        # as the release written at the end of `zoo fit` (plain JSON types: weights-only loadable).
        checkpoint["zoo_metrics"] = release_metrics(self)

    def on_fit_end(self) -> None:
        if self.trainer.global_step == 0 and not self.trainer.fast_dev_run:
            if self.trainer.is_global_zero:
                print("\nno training step ran (trainer.max_steps is 0?): no release written", file=sys.stderr)
            return
        if self.trainer.is_global_zero and self.tokenizer is not None and not self.trainer.fast_dev_run:
            release = export_release(self, Path(self.trainer.default_root_dir) / "release")
            print(f"\nrelease written to {release}")
            last = getattr(self.trainer.checkpoint_callback, "last_model_path", "")
            if last:
                print(f"last Lightning checkpoint: {last}")
            prompt = self.hparams.sample_prompt
            if prompt:
                print(
                    f"\nsample ({self.hparams.sample_tokens} tokens after {prompt!r}):\n{prompt}{sample_text(self.model, self.tokenizer, prompt, self.hparams.sample_tokens)}\n"
                )


def sample_text(
    model: Decoder, tokenizer, prompt: str, n_tokens: int, *, temperature: float = 0.8, top_k: int | None = 40, seed: int = 0
) -> str:
    from zoo.models.generate import generate

    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt)], device=device)
    new = generate(model, ids, n_tokens, temperature=temperature, top_k=top_k, seed=seed)
    return tokenizer.decode(new[0].tolist())


def release_metrics(module: ZooLitModule) -> dict[str, Any]:
    """What a release's ``metrics.json`` says of a module's training so far (plain JSON types)."""
    from zoo.bench.common import device_name

    trainer = module.trainer
    datamodule = getattr(trainer, "datamodule", None)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    batch_tokens = datamodule.batch_size * datamodule.max_seq_len * trainer.world_size if datamodule else None
    metrics = {
        "corpus": getattr(datamodule, "corpus", None),
        "tokenizer": getattr(module.tokenizer, "name", None),
        "steps": trainer.global_step,
        "tokens_seen": trainer.global_step * batch_tokens if batch_tokens else None,
        "hardware": device_name(module.device),
        "world_size": trainer.world_size,
        "val_loss": logged.get("val/loss"),
        "val_bpb": logged.get("val/bpb"),
        "hparams": {k: v for k, v in module.hparams.items() if k != "arch"},
    }
    return json.loads(json.dumps(metrics))


def export_release(module: ZooLitModule, out_dir: str | Path) -> Path:
    """Writes the release directory of a trained module (see :mod:`zoo.release`)."""
    from zoo.release import save_release

    name = Path(module.trainer.default_root_dir).name
    return save_release(module.model, module.tokenizer, out_dir, release_metrics(module), name=name)
