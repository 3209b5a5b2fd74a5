"""Token windows of a tokenised split: the arrays the token cache holds, cut into windows of
``L + 1`` tokens, and the batch collation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.tokenizer import ByteTokenizer, Tokenizer


def encode_documents(documents: Iterator[str], tokenizer: Tokenizer, separator: str, where: str) -> tuple[np.ndarray, dict[str, int]]:
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

    def __init__(self, tokens: np.ndarray | str | Path, seq_len: int) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
        self.seq_len = seq_len
        self._path: Path | None = None
        self._tokens: np.ndarray | None = None
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
