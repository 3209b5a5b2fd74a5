"""2-bit packing of ternary weights along the output dimension (BitNet b1.58, arXiv 2402.17764)."""
from zoo.kernels.pack.reference import pack_ternary, unpack_ternary

__all__ = ["pack_ternary", "unpack_ternary"]
