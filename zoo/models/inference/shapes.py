"""The shapes of the public models people run, with the zoo's variants on them, as inference-form
decoders with random weights: for speed work at real sizes (``zoo bench peer``), where no trained
weights of the zoo exist.

- ``bitnet-2b4t``: BitNet b1.58 2B4T (Ma et al. 2025, arXiv 2504.12285; the b1.58 recipe of arXiv
  2402.17764): dim 2560, 30 layers, FFN 6912, 20 query / 5 KV heads, a 128,256-token vocabulary,
  tied embeddings;
- ``llama-3.2-1b``: Llama 3.2 1B: dim 2048, 16 layers, FFN 8192, 32 / 8 heads, the same vocabulary.

The variants are the zoo's four ways of spending fewer bytes a token: ``bitnet`` (ternary weights,
int8 inputs, sub-norms), ``bitnet-qsparse`` (and top-K 70 % inputs, Q-Sparse, arXiv 2407.10969),
``qsparse`` (full precision, top-K 70 %) and ``dense``. Every variant runs SwiGLU and plain RoPE:
llama.cpp's graphs are SiLU-gated and its GGUF export here writes no Llama 3 RoPE scaling; neither
choice changes the bytes or the work of a decoding step (2B4T itself trains a squared-ReLU GLU).

Why a builder of its own: the training form of 2B4T in fp32 is 10 GB of latent weights. Here the
decoder starts on the meta device and each block is made, initialised, converted (packed) and
put in place one after another, so at most one block's training form exists at a time; the
embedding and LM head (one tied table) are made directly in ``embedding_dtype``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.models.config import ModelConfig
from zoo.models.decoder import Block, Decoder
from zoo.models.inference.convert import fuse_norms, replace_modules
from zoo.models.inference.decode_step import forget_decode_step
from zoo.models.inference.int8_table import int8_table
from zoo.models.inference.layers import FullPrecisionLinear, SparseInputLinear
from zoo.models.initialization import init_weights
from zoo.models.norm import RMSNorm

PUBLIC_SHAPES: dict[str, dict[str, Any]] = {
    "bitnet-2b4t": dict(dim=2560, n_layers=30, n_heads=20, n_kv_heads=5, ffn_dim=6912, vocab_size=128256, rope_theta=500000.0),
    "llama-3.2-1b": dict(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192, vocab_size=128256, rope_theta=500000.0),
}
VARIANTS: dict[str, dict[str, Any]] = {
    "bitnet": dict(weight_quant="ternary", act_quant="int8"),
    "bitnet-qsparse": dict(weight_quant="ternary", act_quant="int8", sparsity="topk", k_ratio=0.7),
    "qsparse": dict(sparsity="topk", k_ratio=0.7),
    "dense": {},
}


def shape_config(shape: str, variant: str, *, max_seq_len: int = 2048, **overrides: Any) -> ModelConfig:
    """The config of ``variant`` on a public ``shape``; unknown names are refused in one line."""
    if shape not in PUBLIC_SHAPES:
        raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(PUBLIC_SHAPES)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; variants: {', '.join(VARIANTS)}")
    fields = {**PUBLIC_SHAPES[shape], **VARIANTS[variant], "ffn_act": "swiglu", "max_seq_len": max_seq_len, **overrides}
    return ModelConfig(**fields)


@torch.no_grad()
def random_inference_model(
    config: ModelConfig, *, seed: int = 0, embedding_dtype: torch.dtype = torch.bfloat16, weight_dtype: torch.dtype = torch.bfloat16
) -> Decoder:
    """The inference form of ``config`` with random weights (GPT-2's initialisation, as
    ``zoo.models.initialization``), built block by block (see the module docstring); the table in
    ``embedding_dtype`` (bf16, or int8 rows with a scale each). Full-precision
    projections hold ``weight_dtype`` (bf16: what a released checkpoint of these models holds);
    packed ternary ones are 2-bit whatever it is. The same seed gives the same weights whatever
    the input rule, so a Q-Sparse variant and its dense-input twin share them."""
    torch.manual_seed(seed)
    model = Decoder.on_meta(config)
    table_dtype = torch.bfloat16 if embedding_dtype == torch.int8 else embedding_dtype  # int8: quantised below
    model.tok_embeddings = nn.Embedding(config.vocab_size, config.dim, dtype=table_dtype)
    nn.init.normal_(model.tok_embeddings.weight, std=config.init_std)
    model.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False, dtype=table_dtype)
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_embeddings.weight
    else:
        nn.init.normal_(model.lm_head.weight, std=config.init_std)
    model.norm = RMSNorm(config.dim, config.norm_eps, config.kernel)
    for index in range(config.n_layers):
        block = Block(config)
        init_weights(block, config)
        replace_modules(block)
        for module in block.modules():
            if isinstance(module, FullPrecisionLinear):
                module.weight.data = module.weight.data.to(weight_dtype)
            elif isinstance(module, SparseInputLinear):
                module.weight_t = module.weight_t.to(weight_dtype)
                module.forget_prepared()
        model.layers[index] = block
    if embedding_dtype == torch.int8:
        int8_table(model)
    fuse_norms(model)
    forget_decode_step(model)
    return model.eval()
