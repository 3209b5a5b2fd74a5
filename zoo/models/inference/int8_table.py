"""The token embedding and LM head of the inference form in int8: one absmax scale per row
(weight-only, the inputs stay fp32), half the bytes of bf16. At a 128k vocabulary the tied table is
the largest tensor a decoding step reads (BitNet b1.58 2B4T, arXiv 2504.12285: 657 MB in bf16
against 521 MB for all its ternary projections), so its bytes decide much of the speed. An option
(``to_inference(model, embedding_dtype=torch.int8)``), not the default: it rounds every weight of
the table to 1/254 of its row's largest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def quantize_rows(weight: torch.Tensor, rows_per_slice: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 ``[V, D]``, fp32 scale ``[V]``): each row rounded to a multiple of its absmax / 127, a
    slice of rows at a time (a 128k-row table is never whole in fp32)."""
    values = torch.empty(weight.shape, dtype=torch.int8)
    scale = torch.empty(weight.shape[0], dtype=torch.float32)
    for start in range(0, weight.shape[0], rows_per_slice):
        rows = weight[start : start + rows_per_slice].detach().float()
        step = rows.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        values[start : start + rows_per_slice] = (rows / step[:, None]).round().clamp(-127, 127).to(torch.int8)
        scale[start : start + rows_per_slice] = step
    return values, scale


class Int8Embedding(nn.Module):
    """``nn.Embedding``'s lookup over an int8 table: row ``t`` is ``weight[t] · row_scale[t]``."""

    def __init__(self, weight: torch.Tensor, row_scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("row_scale", row_scale)

    @classmethod
    def of(cls, table: torch.Tensor) -> Int8Embedding:
        return cls(*quantize_rows(table))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.weight[tokens].float() * self.row_scale[tokens, None]


class Int8Head(nn.Module):
    """The LM head over an int8 table (the embedding's own tensors when tied): ``x · (W · s)ᵀ``,
    a slice of rows at a time so that a prompt never holds the whole table in fp32."""

    ROWS_PER_SLICE = 16384

    def __init__(self, weight: torch.Tensor, row_scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("row_scale", row_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        slices = []
        for start in range(0, self.weight.shape[0], self.ROWS_PER_SLICE):
            rows = slice(start, start + self.ROWS_PER_SLICE)
            slices.append(F.linear(x, self.weight[rows].float()) * self.row_scale[rows])
        return torch.cat(slices, dim=-1)


def int8_table(model: nn.Module) -> None:
    """Replaces ``model``'s embedding and LM head (one table when tied) by their int8 forms, in place."""
    embedding = Int8Embedding.of(model.tok_embeddings.weight)
    tied = model.lm_head.weight is model.tok_embeddings.weight
    head = (embedding.weight, embedding.row_scale) if tied else quantize_rows(model.lm_head.weight)
    model.tok_embeddings, model.lm_head = embedding, Int8Head(*head)
