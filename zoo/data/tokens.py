"""Token windows of a tokenised split: the arrays the token cache holds (written by
:mod:`zoo.data.encoding`), cut into windows of ``L + 1`` tokens, and the batch collation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


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
