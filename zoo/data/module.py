"""The Lightning data module of ``zoo fit``: :class:`~zoo.data.dataset.TokenizedCorpus` wired for a
Trainer (data preparation on rank 0, per-rank train shards, checkpointed data identity). The only
module of ``zoo.data`` that imports Lightning."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from zoo.data.dataset import TokenizedCorpus
from zoo.data.sampler import ResumableDataLoader
from zoo.data.splits import SPLITS


class ZooDataModule(TokenizedCorpus, L.LightningDataModule):
    # The arguments are TokenizedCorpus's (one signature and one docstring, which LightningCLI
    # reads for the data.* options); this class adds only what a Trainer calls.
    __doc__ = TokenizedCorpus.__doc__

    def prepare_data(self) -> None:
        """Fetch the corpus, build the tokenizer and tokenise every split into the cache."""
        for split in self.source.splits:
            self.prepare_split(split)

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}.get(stage or "", SPLITS)
        for split in needed:
            if split in self.source.splits or split == "train":
                self.dataset(split)

    def train_dataloader(self) -> ResumableDataLoader:
        trainer = self.trainer
        if trainer is not None and trainer.overfit_batches > 0:
            # Lightning swaps in a SequentialSampler for overfit_batches by rebuilding the
            # loader, which it can only do for a plain DataLoader; resuming is moot there
            plain = DataLoader(self.dataset("train"), batch_size=self.batch_size, drop_last=True, **self.loader_options())
            return plain  # type: ignore[return-value]
        sharding = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        return self.make_train_dataloader(int(sharding.get("num_replicas", 1)), int(sharding.get("rank", 0)))

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("validation")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    # -- checkpoint state: refuse to resume onto different data or token ids

    def state_dict(self) -> dict[str, Any]:
        return {"corpus": self.source.identity, "tokenizer": self.tokenizer.identity}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key, current in (("corpus", self.source.identity), ("tokenizer", self.tokenizer.identity)):
            saved = state_dict.get(key)
            if saved is not None and saved != current:
                raise ValueError(f"ZooDataModule: the checkpoint was trained with {key} {saved!r}, this run uses {current!r}")
