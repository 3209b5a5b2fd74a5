"""Tokenizers of the zoo: raw UTF-8 bytes (vocab 256, the default) and a byte-level BPE.

Both share one small interface: ``encode(text) -> list[int]``, ``decode(ids) -> str``,
``encode_batch(texts)``, ``vocab_size``, ``identity`` (a string that changes whenever the
token ids a text maps to could change; data caches are keyed by it) and ``save(directory)``,
which writes ``tokenizer.json``:

- bytes: ``{"type": "bytes", "vocab_size": 256}``;
- BPE: the standard Hugging Face ``tokenizers`` file, exactly as ``tokenizers`` writes it, so
  that ``tokenizers.Tokenizer.from_file`` and ``transformers`` read it too. Its marker is the
  ``"model": {"type": "BPE", ...}`` object that every such file carries: ``tokenizers``
  rejects unknown top-level keys, so a key of our own would make the file unreadable to it.

:func:`load_tokenizer` reads either kind back, :func:`build_tokenizer` makes one by name.
BPE training is deterministic (same texts and vocab size give the same file), so it needs
no seed. No Lightning here: the tokenizers are plain objects usable from any layer above.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from zoo.files import sha256_bytes

__all__ = [
    "ByteTokenizer",
    "BPETokenizer",
    "Tokenizer",
    "TOKENIZER_FILE",
    "build_tokenizer",
    "load_tokenizer",
]

TOKENIZER_FILE = "tokenizer.json"


def _ids_to_ints(ids: Iterable) -> list[int]:
    # accepts lists, numpy arrays and tensors alike; tensors iterate as 0-d tensors
    return [int(i) for i in ids]


class ByteTokenizer:
    """One token per UTF-8 byte: ids 0..255, lossless on any text, nothing to train."""

    name = "bytes"
    vocab_size = 256
    identity = "bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable) -> str:
        values = _ids_to_ints(ids)
        bad = [i for i in values if not 0 <= i < 256]
        if bad:
            raise ValueError(f"ByteTokenizer.decode: ids must be in [0, 256), got {bad[:5]}")
        # a generated sequence can stop inside a multi-byte character: replace, don't raise
        return bytes(values).decode("utf-8", errors="replace")

    def save(self, directory: str | Path) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        target = path / TOKENIZER_FILE
        target.write_text(json.dumps({"type": "bytes", "vocab_size": 256}) + "\n", encoding="utf-8")
        return target

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteTokenizer)

    def __hash__(self) -> int:
        return hash(self.identity)

    def __repr__(self) -> str:
        return "ByteTokenizer()"


class BPETokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenisation) backed by Hugging Face ``tokenizers``.

    Byte-level means every byte has a token, so any text encodes and decodes losslessly.
    """

    name = "bpe"

    def __init__(self, tokenizer) -> None:
        import tokenizers

        if not isinstance(tokenizer, tokenizers.Tokenizer):
            raise TypeError(f"BPETokenizer wants a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        self._tok = tokenizer
        self._json = tokenizer.to_str()
        self.identity = "bpe-" + sha256_bytes(self._json.encode("utf-8"))[:16]

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2048, *, min_frequency: int = 2) -> BPETokenizer:
        """Train on ``texts`` (an iterable of documents) up to ``vocab_size`` tokens.

        The vocabulary starts from the 256 byte symbols, hence ``vocab_size >= 256``. A small
        corpus can run out of merges first: :attr:`vocab_size` reports the size reached.
        """
        from tokenizers import Tokenizer as _HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"BPETokenizer.train: vocab_size must be an int >= 256 (the byte alphabet), got {vocab_size!r}")
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"BPETokenizer.train: min_frequency must be an int >= 1, got {min_frequency!r}")
        if isinstance(texts, str):
            raise TypeError("BPETokenizer.train: texts must be an iterable of documents, not one string")
        tok = _HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts))]

    def decode(self, ids: Iterable) -> str:
        values = _ids_to_ints(ids)
        bad = [i for i in values if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"BPETokenizer.decode: ids must be in [0, {self.vocab_size}), got {bad[:5]}")
        return self._tok.decode(values)

    def to_json(self) -> str:
        """The ``tokenizers`` JSON serialisation (what :meth:`save` writes)."""
        return self._json

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        from tokenizers import Tokenizer as _HFTokenizer

        return cls(_HFTokenizer.from_str(text))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        target = path / TOKENIZER_FILE
        target.write_text(self._json, encoding="utf-8")
        return target

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and other._json == self._json

    def __hash__(self) -> int:
        return hash(self.identity)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, identity={self.identity!r})"


Tokenizer = ByteTokenizer | BPETokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer saved by ``save``: ``path`` is its directory or the ``tokenizer.json`` itself."""
    path = Path(path).expanduser()
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer at {file}: expected a directory holding {TOKENIZER_FILE} or the file itself")
    expected = 'expected {"type": "bytes"} or a Hugging Face tokenizers JSON with a BPE model'
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed tokenizer file {file}: not JSON ({exc}); {expected}") from None
    if not isinstance(data, dict):
        raise ValueError(f"malformed tokenizer file {file}: top level is {type(data).__name__}; {expected}")
    if data.get("type") == "bytes":
        if data.get("vocab_size", 256) != 256:
            raise ValueError(f"malformed tokenizer file {file}: a bytes tokenizer has vocab_size 256, got {data['vocab_size']!r}")
        return ByteTokenizer()
    model = data.get("model")
    if isinstance(model, dict) and "version" in data:
        if model.get("type") != "BPE":
            raise ValueError(f"unsupported tokenizer in {file}: model type {model.get('type')!r}; {expected}")
        try:
            return BPETokenizer.from_json(json.dumps(data))
        except Exception as exc:  # tokenizers raises a bare Exception on schema errors
            raise ValueError(f"malformed tokenizer file {file}: tokenizers could not read it ({exc}); {expected}") from None
    raise ValueError(f"unrecognised tokenizer file {file}: {expected}")


def build_tokenizer(name: str, texts: Iterable[str] | None = None, vocab_size: int = 2048) -> Tokenizer:
    """Make a tokenizer by name: ``"bytes"``, ``"bpe"`` (trained on ``texts``), or a saved tokenizer's path."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"tokenizer must be 'bytes', 'bpe' or a path to a saved tokenizer, got {name!r}")
    if name == "bytes":
        return ByteTokenizer()
    if name == "bpe":
        if texts is None:
            raise ValueError("tokenizer 'bpe' needs texts to train on (texts=None)")
        return BPETokenizer.train(texts, vocab_size)
    if Path(name).expanduser().exists():
        return load_tokenizer(name)
    raise ValueError(
        f"unknown tokenizer {name!r}: expected 'bytes', 'bpe' or the path of a saved tokenizer "
        f"(a directory with {TOKENIZER_FILE}, or the file)"
    )
