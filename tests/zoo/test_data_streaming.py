"""Tests of the scalable data path: streamed corpora, parallel tokenisation written straight to the
token cache, the held-out splits carved from a train stream, the token bounds, and the small
configs' data sections.

Offline: local Parquet and JSON-lines files stand in for the Hub (``datasets.load_dataset`` is
redirected to them where a hub name is used). Caches go to a fresh ``ZOO_HOME`` per test.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import yaml

import zoo.data.encoding as encoding
from zoo.data import Corpus, ZooDataModule
from zoo.data.encoding import take_bytes, write_token_cache
from zoo.tokenizer import BPETokenizer, ByteTokenizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SEPARATOR = "\n\n"


def make_documents(count: int, seed: int = 0) -> list[str]:
    """Documents of varied lengths, with multi-byte characters and a few empty ones."""
    rng = np.random.default_rng(seed)
    words = ["the", "quick", "brown", "fox", "jumps", "über", "naïve", "café", "日本", "✓", "over", "lazy", "dog"]
    docs = [" ".join(rng.choice(words, size=int(rng.integers(0, 40)))) for _ in range(count)]
    docs[3] = ""
    return docs


def reference_encoding(docs: list[str], tokenizer, separator: str = SEPARATOR) -> np.ndarray:
    """The plainest possible statement of what a split's tokens are: document by document, in memory."""
    ids: list[int] = []
    for index, doc in enumerate(docs):
        if index:
            ids += tokenizer.encode(separator)
        ids += tokenizer.encode(doc)
    return np.array(ids, dtype=np.uint16)


@pytest.fixture(autouse=True)
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return make_documents(120)


@pytest.fixture(scope="module")
def files(tmp_path_factory, docs) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stream")
    pd.DataFrame({"text": docs, "id": range(len(docs))}).to_parquet(root / "train.parquet")
    (root / "train.jsonl").write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")
    (root / "valid.jsonl").write_text(json.dumps({"body": "held out"}) + "\n", encoding="utf-8")
    (root / "train.csv").write_text("body\nhello\n", encoding="utf-8")
    return {"parquet": root / "train.parquet", "jsonl": root / "train.jsonl", "valid": root / "valid.jsonl", "csv": root / "train.csv"}


@pytest.fixture(scope="module")
def bpe(docs) -> BPETokenizer:
    return BPETokenizer.train(docs, 300)


def cached(dm: ZooDataModule, split: str) -> np.ndarray:
    dm.num_tokens(split)
    return np.load(dm.token_cache_dir() / f"{split}.npy", allow_pickle=False)


# ----------------------------------------------------------------------------- the writer


@pytest.mark.parametrize("tokenizer_kind", ["bytes", "bpe"])
def test_parallel_equals_sequential_equals_reference(tokenizer_kind, docs, bpe, tmp_path, monkeypatch):
    tokenizer = ByteTokenizer() if tokenizer_kind == "bytes" else bpe
    expected = reference_encoding(docs, tokenizer)
    pools = []
    real_pool_context = encoding.pool_context
    monkeypatch.setattr(encoding, "pool_context", lambda: pools.append(1) or real_pool_context())
    arrays = {}
    for num_proc in (1, 2):
        # tiny batches and no size threshold: the pool starts at once and sees many batches
        path = tmp_path / f"{num_proc}.npy"
        meta = write_token_cache(
            iter(docs), tokenizer, SEPARATOR, path, where="t", num_proc=num_proc, batch_documents=7, parallel_after_chars=0
        )
        arrays[num_proc] = np.load(path, allow_pickle=False)
        assert meta == {"num_tokens": expected.size, "num_bytes": len(SEPARATOR.join(docs).encode()), "num_documents": len(docs)}
    assert pools == [1]  # num_proc=2 did use worker processes; num_proc=1 did not
    for array in arrays.values():
        assert array.dtype == np.dtype("<u2") and np.array_equal(array, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.npy", "2.npy"]  # no temporaries left


def test_bound_cuts_the_split_and_stops_reading(docs, tmp_path):
    tokenizer = ByteTokenizer()
    full = reference_encoding(docs, tokenizer)
    read = []

    def stream():
        for doc in docs:
            read.append(doc)
            yield doc

    meta = write_token_cache(stream(), tokenizer, SEPARATOR, tmp_path / "a.npy", where="t", max_tokens=301, batch_documents=4)
    assert np.array_equal(np.load(tmp_path / "a.npy"), full[:301])
    assert meta["num_tokens"] == meta["num_bytes"] == 301
    assert len(read) < len(docs)  # the rest of the stream was never read
    parallel = write_token_cache(
        iter(docs),
        tokenizer,
        SEPARATOR,
        tmp_path / "b.npy",
        where="t",
        max_tokens=301,
        num_proc=2,
        batch_documents=4,
        parallel_after_chars=0,
    )
    assert parallel == meta and np.array_equal(np.load(tmp_path / "b.npy"), full[:301])
    # a bound the split never reaches takes it all
    assert write_token_cache(iter(docs), tokenizer, SEPARATOR, tmp_path / "c.npy", where="t", max_tokens=10**9)["num_tokens"] == full.size


@pytest.mark.parametrize("interruption", [RuntimeError("network gone"), KeyboardInterrupt()])
def test_an_interrupted_write_leaves_no_file(interruption, tmp_path):
    def stream():
        yield "one"
        yield "two"
        raise interruption

    with pytest.raises(type(interruption)):
        write_token_cache(stream(), ByteTokenizer(), SEPARATOR, tmp_path / "x.npy", where="t", batch_documents=1)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="split 'x' is empty"):
        write_token_cache(iter([""]), ByteTokenizer(), SEPARATOR, tmp_path / "x.npy", where="split 'x'")
    assert list(tmp_path.iterdir()) == []


class DyingTokenizer:
    """Encodes in the parent, dies in a worker: a worker killed mid-split (say, out of memory)."""

    vocab_size = 300

    def __init__(self) -> None:
        self.parent = os.getpid()

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if os.getpid() != self.parent:
            os._exit(3)
        return [self.encode(t) for t in texts]


def test_a_dead_worker_is_an_error_not_a_hang(tmp_path):
    with pytest.raises(RuntimeError, match="worker process died.*num_proc=1"):
        write_token_cache(
            iter(["abc"] * 20),
            DyingTokenizer(),
            SEPARATOR,
            tmp_path / "d.npy",
            where="t",
            num_proc=2,
            batch_documents=2,
            parallel_after_chars=0,
        )
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_only_on_a_terminal(monkeypatch, tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stderr, enabled, shown in [(Terminal(), True, True), (Terminal(), False, False), (io.StringIO(), True, False)]:
        monkeypatch.setattr("sys.stderr", stderr)
        write_token_cache(iter(["abc", "def"]), ByteTokenizer(), SEPARATOR, tmp_path / "p.npy", where="split 'p'", progress=enabled)
        assert ("tokenising split 'p'" in stderr.getvalue()) is shown
        assert not shown or "docs=2" in stderr.getvalue()


def test_take_bytes_takes_whole_documents():
    assert list(take_bytes(["ab", "cdé", "f"], 4)) == ["ab", "cdé"]
    assert list(take_bytes(["ab", "c"], None)) == ["ab", "c"]


# ----------------------------------------------------------------------------- streamed corpora


def test_streamed_local_parquet_with_holdout_and_bound(docs, files):
    n = 10
    dm = ZooDataModule(
        corpus="parquet", data_files={"train": str(files["parquet"])}, streaming=True, holdout_documents=n, max_tokens=500, max_seq_len=8
    )
    tokenizer = ByteTokenizer()
    assert np.array_equal(cached(dm, "test"), reference_encoding(docs[:n], tokenizer))
    assert np.array_equal(cached(dm, "validation"), reference_encoding(docs[n : 2 * n], tokenizer))
    assert np.array_equal(cached(dm, "train"), reference_encoding(docs[2 * n :], tokenizer)[:500])
    assert dm.num_tokens("train") == 500 and dm.source.splits == ("train", "validation", "test")
    # the same stream, read without streaming, gives the same tokens (in another cache)
    whole = ZooDataModule(corpus="parquet", data_files={"train": str(files["parquet"])}, holdout_documents=n, max_tokens=500, max_seq_len=8)
    assert whole.token_cache_dir() != dm.token_cache_dir()
    assert np.array_equal(cached(whole, "train"), cached(dm, "train"))
    x, y = next(iter(dm.make_train_dataloader()))
    assert x.shape == y.shape == (16, 8)


def test_streamed_local_json_lines_and_bpe(docs, files):
    dm = ZooDataModule(
        corpus="json", data_files={"train": str(files["jsonl"])}, text_field="body", streaming=True, tokenizer="bpe", bpe_vocab_size=280
    )
    assert np.array_equal(cached(dm, "train"), reference_encoding(docs, dm.tokenizer))
    # a bound also bounds what the BPE trains on, and makes it another tokenizer
    bounded = ZooDataModule(
        corpus="json",
        data_files={"train": str(files["jsonl"])},
        text_field="body",
        streaming=True,
        tokenizer="bpe",
        bpe_vocab_size=280,
        max_tokens=200,
    )
    assert bounded.tokenizer != dm.tokenizer and bounded.num_tokens("train") == 200


def test_hub_name_is_streamed_through_load_dataset(docs, files, monkeypatch):
    calls = []
    real_load_dataset = datasets.load_dataset

    def redirect(name, config=None, **kwargs):
        calls.append((name, config, kwargs))
        return real_load_dataset("json", data_files={"train": [str(files["jsonl"])]}, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", redirect)
    dm = ZooDataModule(
        corpus="HuggingFaceFW/fineweb-edu",
        corpus_config="sample-10BT",
        text_field="body",
        streaming=True,
        holdout_documents=5,
        max_tokens=300,
        max_seq_len=8,
    )
    assert calls == []  # construction reads nothing
    assert np.array_equal(cached(dm, "validation"), reference_encoding(docs[5:10], ByteTokenizer()))
    assert np.array_equal(cached(dm, "train"), reference_encoding(docs[10:], ByteTokenizer())[:300])
    assert calls == [("HuggingFaceFW/fineweb-edu", "sample-10BT", {"streaming": True})]  # loaded once, streamed
    identity = dm.source.identity
    assert identity.startswith("hub:HuggingFaceFW/fineweb-edu:sample-10BT:body:") and identity.endswith(":streaming:holdout=5")
    assert "stream:" in identity
    assert Corpus("HuggingFaceFW/fineweb-edu", config="sample-10BT", text_field="body", streaming=True).identity != identity


def test_streamed_csv_without_the_text_field(files):
    dm = ZooDataModule(corpus="csv", data_files={"train": str(files["csv"])}, streaming=True)
    with pytest.raises(ValueError, match="no text field 'text'; its fields are \\['body'\\]"):
        dm.prepare_data()
    assert not list(dm.token_cache_dir().glob("*.npy")) and not list(dm.token_cache_dir().glob(".*.tmp"))


def test_cache_identity_follows_every_setting_that_shapes_tokens(files):
    base = {"corpus": "parquet", "data_files": {"train": str(files["parquet"])}}
    reference = ZooDataModule(**base).token_cache_dir()
    for change in ({"streaming": True}, {"holdout_documents": 3}, {"max_tokens": 100}, {"max_eval_tokens": 100}):
        assert ZooDataModule(**base, **change).token_cache_dir() != reference, change
    assert ZooDataModule(**base, holdout_documents=4).token_cache_dir() != ZooDataModule(**base, holdout_documents=3).token_cache_dir()
    # how the tokens are made does not change them: same cache
    assert ZooDataModule(**base, num_proc=1, progress=False).token_cache_dir() == reference


def test_leftovers_of_a_killed_writer_are_removed(files):
    dm = ZooDataModule(corpus="parquet", data_files={"train": str(files["parquet"])}, max_seq_len=8)
    leftover = dm.token_cache_dir() / ".train.npy.killed.tmp"
    leftover.write_bytes(b"half")
    dm.prepare_data()
    assert not leftover.exists() and (dm.token_cache_dir() / "train.npy").is_file()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"streaming": "yes"}, "streaming must be true or false"),
        ({"progress": 1}, "progress must be true or false"),
        ({"holdout_documents": 0}, "holdout_documents must be an int >= 1 or null"),
        ({"holdout_documents": True}, "holdout_documents must be an int >= 1"),
        ({"max_tokens": 1}, "max_tokens must be an int >= 2 or null"),
        ({"max_eval_tokens": 2.5}, "max_eval_tokens must be an int >= 2"),
        ({"num_proc": 0}, "num_proc must be an int >= 1 or null"),
        ({"streaming": True}, "streaming is for Hugging Face datasets; the built-in corpus 'shakespeare'"),
        ({"corpus": "ptb", "holdout_documents": 5}, "holdout_documents is for train-only corpora; the built-in corpus 'ptb'"),
        ({"corpus": "json", "holdout_documents": 5, "validation": True}, "data_files must name train only"),
    ],
)
def test_bad_values_name_the_field_in_one_line(kwargs, message, files):
    kwargs = dict(kwargs)
    if kwargs.pop("validation", False):
        kwargs["data_files"] = {"train": str(files["jsonl"]), "validation": str(files["valid"])}
    with pytest.raises(ValueError) as info:
        ZooDataModule(**kwargs)
    assert str(info.value).startswith("ZooDataModule: ") and message in str(info.value)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- the small configs


def merged(base: dict, layer: dict) -> dict:
    out = dict(base)
    for key, value in layer.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def composed_config(path: Path) -> dict:
    """A small config as ``zoo fit`` sees it: the shared size base first (where there is one), then the entry."""
    config: dict = {}
    for layer in (CONFIGS / "sizes" / "small.yaml", path):
        if layer.is_file():
            config = merged(config, yaml.safe_load(layer.read_text()) or {})
    return config


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*-small.yaml")), ids=lambda p: p.stem)
def test_small_config_data_sections_construct(path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("constructing the data module must not load the dataset")

    monkeypatch.setattr(datasets, "load_dataset", no_download)
    config = composed_config(path)
    arch = config["model"]["arch"]

    def resolved(value):  # the one interpolation the data sections use: ${model.arch.<field>}
        match = re.fullmatch(r"\$\{model\.arch\.(\w+)\}", value) if isinstance(value, str) else None
        return arch[match.group(1)] if match else value

    dm = ZooDataModule(**{key: resolved(value) for key, value in config["data"].items()})
    assert dm.source.kind == "hub" and dm.streaming and dm.holdout_documents
    # the train bound covers every step once: no epoch of the train data is seen twice
    steps = config["trainer"]["max_steps"] * config["trainer"].get("accumulate_grad_batches", 1)
    assert dm.max_tokens >= steps * dm.batch_size * dm.max_seq_len + 1
    assert dm.max_seq_len == arch["max_seq_len"]
