"""Tests of zoo.tokenizer: byte and BPE round trips, save/load, and errors that name the path."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.tokenizer import BPETokenizer, ByteTokenizer, build_tokenizer, load_tokenizer

SAMPLE = (
    "From fairest creatures we desire increase,\n"
    "That thereby beauty's rose might never die,\n"
    "But as the riper should by time decease,\n"
    "His tender heir might bear his memory.\n"
) * 8
UNICODE = "naïve café, Ελληνικά, 日本語, emoji 🎭🗡️, tab\tand\r\nCRLF, nul\x00byte"


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train([SAMPLE], vocab_size=300)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_bytes_round_trip_any_unicode(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text


def test_bytes_decode_replaces_broken_utf8_and_rejects_bad_ids():
    tok = ByteTokenizer()
    ids = tok.encode("é")  # two bytes
    assert tok.decode(ids[:1]) == "\ufffd"
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tok.decode([256])


def test_bytes_decode_accepts_tensors():
    import torch

    tok = ByteTokenizer()
    assert tok.decode(torch.tensor(tok.encode(UNICODE))) == UNICODE


def test_bpe_round_trips_its_training_text_and_unseen_unicode(bpe):
    assert 256 < bpe.vocab_size <= 300
    ids = bpe.encode(SAMPLE)
    assert bpe.decode(ids) == SAMPLE
    assert len(ids) < 0.6 * len(SAMPLE.encode("utf-8"))  # merges were learnt and used
    assert bpe.decode(bpe.encode(UNICODE)) == UNICODE  # byte-level: nothing is out of vocabulary
    assert bpe.encode_batch([SAMPLE, UNICODE]) == [ids, bpe.encode(UNICODE)]


def test_bpe_training_is_deterministic(bpe):
    again = BPETokenizer.train([SAMPLE], vocab_size=300)
    assert again == bpe and again.identity == bpe.identity
    other = BPETokenizer.train([SAMPLE], vocab_size=280)
    assert other.identity != bpe.identity


@pytest.mark.parametrize("vocab_size", [255, 0, 2.5, True])
def test_bpe_rejects_bad_vocab_size(vocab_size):
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train([SAMPLE], vocab_size=vocab_size)


def test_save_load_bytes(tmp_path):
    path = ByteTokenizer().save(tmp_path / "tok")
    assert path.name == "tokenizer.json"
    assert json.loads(path.read_text())["type"] == "bytes"
    for where in (tmp_path / "tok", path):
        loaded = load_tokenizer(where)
        assert isinstance(loaded, ByteTokenizer) and loaded.vocab_size == 256


def test_save_load_bpe(tmp_path, bpe):
    path = bpe.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, BPETokenizer)
    assert loaded == bpe and loaded.vocab_size == bpe.vocab_size
    assert loaded.encode(UNICODE) == bpe.encode(UNICODE)
    # the file stays a standard tokenizers file, readable without moezoo
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(path)).encode(SAMPLE).ids == bpe.encode(SAMPLE)


def test_load_missing_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*tokenizer.json"):
        load_tokenizer(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "top level is list"),
        ('{"type": "words"}', "unrecognised tokenizer"),
        ('{"type": "bytes", "vocab_size": 300}', "vocab_size 256"),
        ('{"version": "1.0", "model": {"type": "WordPiece"}}', "model type 'WordPiece'"),
        ('{"version": "1.0", "model": {"type": "BPE", "vocab": 3}}', "tokenizers could not read it"),
    ],
)
def test_load_malformed_names_the_path_and_expectation(tmp_path, content, message):
    (tmp_path / "tokenizer.json").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_tokenizer(tmp_path)
    assert str(tmp_path / "tokenizer.json") in str(info.value)


def test_build_tokenizer(tmp_path, bpe):
    assert isinstance(build_tokenizer("bytes"), ByteTokenizer)
    trained = build_tokenizer("bpe", [SAMPLE], vocab_size=300)
    assert trained == bpe
    bpe.save(tmp_path)
    assert build_tokenizer(str(tmp_path)) == bpe
    with pytest.raises(ValueError, match="needs texts"):
        build_tokenizer("bpe")
    with pytest.raises(ValueError, match="unknown tokenizer 'gpt2'"):
        build_tokenizer("gpt2")
