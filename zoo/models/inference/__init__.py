"""The inference form of a zoo decoder: BitNet b1.58 ternary projections (arXiv 2402.17764)
packed at 2 bits, Q-Sparse top-K inputs (arXiv 2407.10969) that read only the kept channels'
weights, a dropless MoE (MegaBlocks) that reads only the chosen experts, and the compiled decode
step that runs one token through the whole decoder as one C call.

- :mod:`~zoo.models.inference.layers`: the prepared projections;
- :mod:`~zoo.models.inference.moe`: the MoE FFN built from them;
- :mod:`~zoo.models.inference.convert`: ``to_inference(model)``, in place, and ``tensor_bytes``;
- :mod:`~zoo.models.inference.decode_step`: the compiled step, found by ``decode_step_for(model)``.
"""

from zoo.models.inference.convert import tensor_bytes, to_inference
from zoo.models.inference.decode_step import DecodeStep, decode_step_for
from zoo.models.inference.layers import FullPrecisionLinear, PackedTernaryLinear, PreparedProjection, SparseInputLinear
from zoo.models.inference.moe import InferenceMoE

__all__ = [
    "DecodeStep",
    "FullPrecisionLinear",
    "InferenceMoE",
    "PackedTernaryLinear",
    "PreparedProjection",
    "SparseInputLinear",
    "decode_step_for",
    "tensor_bytes",
    "to_inference",
]
