"""A corpus as token windows, without Lightning: the corpus, its tokenizer, the token cache of
each split, and the loaders (the resumable train order, fixed-order evaluation). ``zoo eval``
and the leaderboard use it directly; :class:`zoo.data.module.ZooDataModule` wires it for a Trainer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch.utils.data import DataLoader

from zoo.data.corpus import Corpus
from zoo.data.encoding import default_num_proc, remove_stale_temporaries, take_bytes, write_token_cache
from zoo.data.sampler import ResumableDataLoader, ResumableSampler
from zoo.data.splits import TOKEN_CACHE_FORMAT, check_split
from zoo.data.tokens import TokenWindows, collate_windows
from zoo.files import atomic_write_bytes, sha256_bytes, slug
from zoo.paths import cache_dir
from zoo.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, load_tokenizer


def _check_int(owner: str, field: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}: {field} must be an int >= {low}, got {value!r}")


def _check_optional_int(owner: str, field: str, value: Any, low: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise ValueError(f"{owner}: {field} must be an int >= {low} or null, got {value!r}")


def _check_bool(owner: str, field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {field} must be true or false, got {value!r}")


class TokenizedCorpus:
    """Token windows of a corpus for training and evaluation (see :mod:`zoo.data`).

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
        super().__init__()  # cooperative: ZooDataModule adds Lightning's data module after this class
        owner = type(self).__name__  # errors name the class the user configured
        _check_int(owner, "bpe_vocab_size", bpe_vocab_size, 256)
        _check_int(owner, "max_seq_len", max_seq_len, 1)
        _check_int(owner, "batch_size", batch_size, 1)
        _check_int(owner, "num_workers", num_workers, 0)
        _check_int(owner, "seed", seed, 0)
        _check_bool(owner, "streaming", streaming)
        _check_optional_int(owner, "holdout_documents", holdout_documents, 1)
        # a window holds max_seq_len + 1 >= 2 tokens
        _check_optional_int(owner, "max_tokens", max_tokens, 2)
        _check_optional_int(owner, "max_eval_tokens", max_eval_tokens, 2)
        _check_optional_int(owner, "num_proc", num_proc, 1)
        _check_bool(owner, "progress", progress)
        if not isinstance(tokenizer, str) or not tokenizer:
            raise ValueError(f"{owner}: tokenizer must be 'bytes', 'bpe' or a path, got {tokenizer!r}")
        if tokenizer not in ("bytes", "bpe") and not Path(tokenizer).expanduser().exists():
            raise ValueError(f"{owner}: tokenizer {tokenizer!r} is neither 'bytes', 'bpe' nor an existing path to a saved tokenizer")
        if not isinstance(doc_separator, str):
            raise ValueError(f"{owner}: doc_separator must be a string, got {doc_separator!r}")
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
            raise type(exc)(f"{owner}: {exc}") from None
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

    def prepare_split(self, split: str) -> dict[str, int]:
        """Tokenises ``split`` into the cache once (under a file lock); its token and byte counts."""
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

    def dataset(self, split: str) -> TokenWindows:
        """The windows of ``split`` (tokenised and cached on first use)."""
        check_split(split)
        if split not in self._datasets:
            self.source.require(split)
            meta = self.prepare_split(split)
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
        return self.prepare_split(split)["num_tokens"]

    def num_bytes(self, split: str) -> int:
        """UTF-8 bytes of ``split``'s text (documents and separators)."""
        self.source.require(check_split(split))
        return self.prepare_split(split)["num_bytes"]

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes per token of ``split``: bits/byte = (nats/token) / ln 2 / bytes_per_token."""
        return self.num_bytes(split) / self.num_tokens(split)

    # -- loaders

    def loader_options(self) -> dict[str, Any]:
        """DataLoader settings shared by every loader of this corpus."""
        return {
            "num_workers": self.num_workers,
            "collate_fn": collate_windows,
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": self.num_workers > 0,
        }

    def make_train_dataloader(self, num_replicas: int = 1, rank: int = 0) -> ResumableDataLoader:
        """The train loader of data-parallel rank ``rank`` out of ``num_replicas``."""
        sampler = ResumableSampler(self.dataset("train"), self.batch_size, num_replicas=num_replicas, rank=rank, seed=self.seed)
        return ResumableDataLoader(self.dataset("train"), sampler, **self.loader_options())

    def eval_dataloader(self, split: str) -> DataLoader:
        """An evaluation loader of any split: fixed order, last batch kept."""
        windows = self.dataset(split)
        return DataLoader(windows, batch_size=self.batch_size, shuffle=False, drop_last=False, **self.loader_options())
