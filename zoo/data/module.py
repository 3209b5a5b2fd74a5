"""The Lightning data module of ``zoo fit``: a corpus, a tokenizer, the token cache and the
resumable train order, wired for a Trainer. The only module of ``zoo.data`` that imports Lightning."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from filelock import FileLock
from torch.utils.data import DataLoader

from zoo.data.corpus import Corpus
from zoo.data.encoding import default_num_proc, remove_stale_temporaries, take_bytes, write_token_cache
from zoo.data.sampler import ResumableDataLoader, ResumableSampler
from zoo.data.splits import SPLITS, TOKEN_CACHE_FORMAT, check_split
from zoo.data.tokens import TokenWindows, collate_windows
from zoo.files import atomic_write_bytes, sha256_bytes, slug
from zoo.paths import cache_dir
from zoo.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, load_tokenizer


def _check_int(field: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"ZooDataModule: {field} must be an int >= {low}, got {value!r}")


def _check_optional_int(field: str, value: Any, low: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise ValueError(f"ZooDataModule: {field} must be an int >= {low} or null, got {value!r}")


def _check_bool(field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"ZooDataModule: {field} must be true or false, got {value!r}")


class ZooDataModule(L.LightningDataModule):
    """Token windows of a corpus for training and evaluation (see the module docstring).

    Args:
        corpus: ``"shakespeare"`` (default), ``"ptb"``, ``"text"`` / ``"json"`` / ``"csv"`` /
            ``"parquet"`` for local ``data_files``, or a Hugging Face hub dataset name.
        corpus_config: the hub dataset's configuration name, if it has several.
        data_files: split (``train``, ``validation``, ``test``) to a path or list of paths
            (globs allowed) for local files; passed through to ``load_dataset`` for hub names.
        text_field: the column holding the text (JSON/CSV/Parquet and hub datasets).
        tokenizer: ``"bytes"`` (vocab 256), ``"bpe"`` (byte-level BPE trained on the train
            split, cached) or the path of a saved tokenizer (its directory or tokenizer.json).
        bpe_vocab_size: vocabulary size when ``tokenizer="bpe"`` (>= 256).
        max_seq_len: tokens per training sequence ``L``; windows hold ``L + 1`` tokens.
        batch_size: sequences per batch and per device (the global batch is
            ``batch_size * data-parallel ranks``).
        num_workers: ``DataLoader`` worker processes (0: load in the main process).
        seed: seed of the training order (independent of ``seed_everything``).
        doc_separator: text put between consecutive documents of a split.
        streaming: read a ``datasets`` corpus (hub name or local builder) as a stream: rows are
            fetched as they are tokenised, nothing is downloaded or materialised whole first.
        holdout_documents: carve the held-out splits from the head of the train split, for
            corpora with a train split only: its first ``N`` documents are test, the next ``N``
            validation, the rest train (null: use the corpus's own splits).
        max_tokens: cut the train split at this many tokens (and read no further); null: all.
            Size it ``max_steps * batch_size * ranks * accumulation * max_seq_len + 1`` to see
            each train token once. A BPE is then trained on the train documents holding the first
            ``max_tokens`` bytes.
        max_eval_tokens: the same bound for validation and test each; null: all.
        num_proc: processes tokenising a split with a BPE (null: ``min(2, cpu count)``; 1:
            in-process). Splits under 16 MiB of text, and the byte tokenizer, stay in-process.
        progress: show a progress bar (tokens, documents) on stderr while tokenising, when it is a terminal.

    ``num_proc`` and ``progress`` do not change the tokens and are not part of the cache key;
    every other argument that shapes the token arrays is.
    """

    def __init__(
        self,
        corpus: str = "shakespeare",
        corpus_config: str | None = None,
        data_files: dict[str, str | list[str]] | None = None,
        text_field: str = "text",
        tokenizer: str = "bytes",
        bpe_vocab_size: int = 2048,
        max_seq_len: int = 256,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        doc_separator: str = "\n\n",
        streaming: bool = False,
        holdout_documents: int | None = None,
        max_tokens: int | None = None,
        max_eval_tokens: int | None = None,
        num_proc: int | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        _check_int("bpe_vocab_size", bpe_vocab_size, 256)
        _check_int("max_seq_len", max_seq_len, 1)
        _check_int("batch_size", batch_size, 1)
        _check_int("num_workers", num_workers, 0)
        _check_int("seed", seed, 0)
        _check_bool("streaming", streaming)
        _check_optional_int("holdout_documents", holdout_documents, 1)
        # a window holds max_seq_len + 1 >= 2 tokens
        _check_optional_int("max_tokens", max_tokens, 2)
        _check_optional_int("max_eval_tokens", max_eval_tokens, 2)
        _check_optional_int("num_proc", num_proc, 1)
        _check_bool("progress", progress)
        if not isinstance(tokenizer, str) or not tokenizer:
            raise ValueError(f"ZooDataModule: tokenizer must be 'bytes', 'bpe' or a path, got {tokenizer!r}")
        if tokenizer not in ("bytes", "bpe") and not Path(tokenizer).expanduser().exists():
            raise ValueError(f"ZooDataModule: tokenizer {tokenizer!r} is neither 'bytes', 'bpe' nor an existing path to a saved tokenizer")
        if not isinstance(doc_separator, str):
            raise ValueError(f"ZooDataModule: doc_separator must be a string, got {doc_separator!r}")
        try:
            self.source = Corpus(
                corpus,
                data_files=data_files,
                text_field=text_field,
                config=corpus_config,
                streaming=streaming,
                holdout_documents=holdout_documents,
            )
        except (ValueError, FileNotFoundError) as exc:
            raise type(exc)(f"ZooDataModule: {exc}") from None
        self.save_hyperparameters()
        self.corpus = corpus
        self.tokenizer_name = tokenizer
        self.bpe_vocab_size = bpe_vocab_size
        self.max_seq_len = max_seq_len
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.doc_separator = doc_separator
        self.streaming = streaming
        self.holdout_documents = holdout_documents
        self.max_tokens = max_tokens
        self.max_eval_tokens = max_eval_tokens
        self.num_proc = default_num_proc() if num_proc is None else num_proc
        self.progress = progress
        self._tokenizer: Tokenizer | None = None
        self._datasets: dict[str, TokenWindows] = {}
        self._meta: dict[str, dict[str, int]] = {}

    # -- tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer; a BPE is trained on the train split (and cached) on first access."""
        if self._tokenizer is None:
            if self.tokenizer_name == "bytes":
                self._tokenizer = ByteTokenizer()
            elif self.tokenizer_name == "bpe":
                self._tokenizer = self._trained_bpe()
            else:
                self._tokenizer = load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def _trained_bpe(self) -> BPETokenizer:
        recipe = {"corpus": self.source.identity, "vocab_size": self.bpe_vocab_size, "format": 1}
        if self.max_tokens is not None:
            # trained on a bounded head of the stream: another bound is another tokenizer
            recipe["max_bytes"] = self.max_tokens
        key = sha256_bytes(json.dumps(recipe, sort_keys=True).encode())
        directory = cache_dir("tokenizers", f"{slug(self.source.name)}-bpe{self.bpe_vocab_size}-{key[:16]}")
        with FileLock(str(directory / ".lock")):
            if (directory / "tokenizer.json").is_file():
                loaded = load_tokenizer(directory)
                assert isinstance(loaded, BPETokenizer)
                return loaded
            # every token covers at least one byte, so the documents holding the first max_tokens
            # bytes lie within the train split (the last one perhaps cut there): the BPE never
            # trains on text the model will not see, and ends on an endless stream
            texts = take_bytes(self.source.documents("train"), self.max_tokens)
            trained = BPETokenizer.train(texts, self.bpe_vocab_size)
            staging = directory / ".staging"
            trained.save(staging)
            os.replace(staging / "tokenizer.json", directory / "tokenizer.json")
            return trained

    # -- token caches

    def token_cache_dir(self) -> Path:
        """Where this corpus + tokenizer + separator's token arrays live."""
        key = sha256_bytes(
            json.dumps(
                {
                    "format": TOKEN_CACHE_FORMAT,
                    "corpus": self.source.identity,
                    "tokenizer": self.tokenizer.identity,
                    "separator": self.doc_separator,
                    "streaming": self.streaming,
                    "holdout_documents": self.holdout_documents,
                    "max_tokens": self.max_tokens,
                    "max_eval_tokens": self.max_eval_tokens,
                },
                sort_keys=True,
            ).encode()
        )
        name = f"{slug(self.source.name)}-{slug(self.tokenizer.identity)}-{key[:16]}"
        return cache_dir("datasets", "tokens", name)

    def _prepare_split(self, split: str) -> dict[str, int]:
        if split in self._meta:
            return self._meta[split]
        directory = self.token_cache_dir()
        meta_path, array_path = directory / f"{split}.json", directory / f"{split}.npy"
        with FileLock(str(directory / ".lock")):
            meta = None
            if meta_path.is_file() and array_path.is_file():
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta is None:
                remove_stale_temporaries(directory, array_path.name)
                meta = write_token_cache(
                    self.source.documents(split),
                    self.tokenizer,
                    self.doc_separator,
                    array_path,
                    where=f"corpus {self.source.name!r} split {split!r}",
                    max_tokens=self.max_tokens if split == "train" else self.max_eval_tokens,
                    num_proc=self.num_proc,
                    progress=self.progress,
                )
                # the array first, its counts last: counts on disk always describe a complete array
                atomic_write_bytes(meta_path, json.dumps(meta).encode("utf-8"))
        self._meta[split] = meta
        return meta

    def prepare_data(self) -> None:
        """Fetch the corpus, build the tokenizer and tokenise every split into the cache."""
        for split in self.source.splits:
            self._prepare_split(split)

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}.get(stage or "", SPLITS)
        for split in needed:
            if split in self.source.splits or split == "train":
                self.dataset(split)

    def dataset(self, split: str) -> TokenWindows:
        """The windows of ``split`` (tokenised and cached on first use)."""
        check_split(split)
        if split not in self._datasets:
            self.source.require(split)
            meta = self._prepare_split(split)
            windows = TokenWindows(self.token_cache_dir() / f"{split}.npy", self.max_seq_len)
            if windows.num_tokens != meta["num_tokens"]:
                raise ValueError(f"token cache {self.token_cache_dir()} is inconsistent for {split!r}; delete it")
            if len(windows) == 0:
                raise ValueError(
                    f"corpus {self.source.name!r} split {split!r} has {windows.num_tokens} tokens: too few for one "
                    f"window of max_seq_len + 1 = {self.max_seq_len + 1}"
                )
            self._datasets[split] = windows
        return self._datasets[split]

    def num_tokens(self, split: str) -> int:
        """Tokens in ``split`` (documents and separators)."""
        self.source.require(check_split(split))
        return self._prepare_split(split)["num_tokens"]

    def num_bytes(self, split: str) -> int:
        """UTF-8 bytes of ``split``'s text (documents and separators)."""
        self.source.require(check_split(split))
        return self._prepare_split(split)["num_bytes"]

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes per token of ``split``: bits/byte = (nats/token) / ln 2 / bytes_per_token."""
        return self.num_bytes(split) / self.num_tokens(split)

    # -- loaders

    def _loader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "collate_fn": collate_windows,
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": self.num_workers > 0,
        }

    def make_train_dataloader(self, num_replicas: int = 1, rank: int = 0) -> ResumableDataLoader:
        """The train loader of data-parallel rank ``rank`` out of ``num_replicas``."""
        sampler = ResumableSampler(self.dataset("train"), self.batch_size, num_replicas=num_replicas, rank=rank, seed=self.seed)
        return ResumableDataLoader(self.dataset("train"), sampler, **self._loader_kwargs())

    def train_dataloader(self) -> ResumableDataLoader:
        trainer = self.trainer
        if trainer is not None and trainer.overfit_batches > 0:
            # Lightning swaps in a SequentialSampler for overfit_batches by rebuilding the
            # loader, which it can only do for a plain DataLoader; resuming is moot there
            plain = DataLoader(self.dataset("train"), batch_size=self.batch_size, drop_last=True, **self._loader_kwargs())
            return plain  # type: ignore[return-value]
        sharding = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        return self.make_train_dataloader(int(sharding.get("num_replicas", 1)), int(sharding.get("rank", 0)))

    def eval_dataloader(self, split: str) -> DataLoader:
        """An evaluation loader of any split: fixed order, last batch kept."""
        return self._eval_loader(split)

    def _eval_loader(self, split: str) -> DataLoader:
        windows = self.dataset(split)
        return DataLoader(windows, batch_size=self.batch_size, shuffle=False, drop_last=False, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    # -- checkpoint state: refuse to resume onto different data or token ids

    def state_dict(self) -> dict[str, Any]:
        return {"corpus": self.source.identity, "tokenizer": self.tokenizer.identity}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key, current in (("corpus", self.source.identity), ("tokenizer", self.tokenizer.identity)):
            saved = state_dict.get(key)
            if saved is not None and saved != current:
                raise ValueError(f"ZooDataModule: the checkpoint was trained with {key} {saved!r}, this run uses {current!r}")
