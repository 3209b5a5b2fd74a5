"""The LightningModule of zoo training: a thin wrapper that trains the plain decoder.

Optimisation follows the papers' recipes: AdamW (β = 0.9, 0.95) with the schedules of
:mod:`zoo.train.schedule` (cosine, or BitNet b1.58's two stages, arXiv 2402.17764). MoE auxiliary
losses (MegaBlocks arXiv 2211.15841 / Switch) are added to the loss and logged; MoE bias balancing
moves once per optimizer step. Losses are reported as perplexity and bits per byte. What is not
the optimisation itself (release export, the sample, sparsity and expert-load logging, tokens/s)
lives in :mod:`zoo.train.callbacks`.
"""

from __future__ import annotations

import json
import math
import tempfile
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.aggregation import SumMetric

from zoo.models.config import ModelConfig
from zoo.models.decoder import Decoder
from zoo.train.schedule import SCHEDULES, lr_multiplier, weight_decay_at


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN or infinite; the last saved checkpoint is the last good one."""


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
        init_from: continue-training: any model source (a zoo name, a release or transformers
            folder, a ``.ckpt``, ``hf:org/name``; see :mod:`zoo.interop.loader`) whose weights initialise
            this model (Q-Sparse §2.3: a dense checkpoint trained on with top-K switched on).
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
        # Every argument is a hyper-parameter; arch as plain types, so checkpoints load with
        # torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["arch"])
        self.hparams["arch"] = arch.to_dict()
        self.hparams["betas"] = list(betas)
        self.arch = arch
        self.model = Decoder(arch)
        if init_from:
            self._initialise_from(init_from)
        self.val_nll = SumMetric()
        self.val_tokens = SumMetric()
        self.total_steps = 0  # the run's length in optimizer steps, resolved in configure_optimizers
        self.tokenizer = None

    # -- set-up ---------------------------------------------------------------------------------
    def _initialise_from(self, source: str) -> None:
        from zoo.hub.release import load_weights
        from zoo.interop.loader import load_source

        donor, _, _ = load_source(source)
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

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes per token of ``split`` (1 without a data module): turns nats into bits per byte."""
        datamodule = getattr(self.trainer, "datamodule", None)
        return datamodule.bytes_per_token(split) if datamodule is not None else 1.0

    def training_step(self, batch, batch_idx: int):
        nll, count = self._lm_loss(batch)
        loss = nll / count
        total = loss
        for name, value in self.model.aux_losses().items():
            total = total + value
            self.log(f"train/{name}", value)
        if not torch.isfinite(total):
            last = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or "none saved yet"
            raise NonFiniteLossError(
                f"non-finite training loss ({total.item()}) at step {self.global_step}; training stopped. "
                f"Last good checkpoint: {last}. Lower model.lr or check the data."
            )
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", torch.exp(loss.detach()))
        self.log("train/bpb", loss.detach() / math.log(2) / self.bytes_per_token("train"))
        return total

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        hp = self.hparams
        decay = weight_decay_at(self.global_step, self.total_steps, hp.weight_decay, hp.schedule)
        self.optimizers().param_groups[0]["weight_decay"] = decay  # group 1 (norms, embeddings) stays at 0

    def on_before_optimizer_step(self, optimizer) -> None:
        # Once per optimizer step, after every micro-batch of gradient accumulation: MoE bias
        # balancing sees the whole step's expert loads (all-reduced across ranks inside).
        self.model.balance_experts()

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
            self.log(f"{prefix}/bpb", loss / math.log(2) / self.bytes_per_token(split), prog_bar=True)
        self.val_nll.reset()
        self.val_tokens.reset()

    def predict_step(self, batch, batch_idx: int):
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.model(inputs).argmax(-1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.tokenizer is not None:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint["zoo_tokenizer_json"] = self.tokenizer.save(tmp).read_text()
        # Provenance travels with the checkpoint, so `zoo export CKPT` writes the same metrics.json
        # as the release written at the end of `zoo fit` (plain JSON types: weights-only loadable).
        checkpoint["zoo_metrics"] = release_metrics(self)


def release_metrics(module: ZooLitModule) -> dict[str, Any]:
    """What a release's ``metrics.json`` says of a module's training so far (plain JSON types)."""
    from zoo.machine import device_name

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
