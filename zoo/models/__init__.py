"""zoo.models: layer 1, plain ``nn.Module``s and their config; no Lightning here.

One decoder (:class:`Decoder`) with composable parts: Q-Sparse top-K activations
(arXiv 2407.10969), BitNet b1.58 ternary weights (arXiv 2402.17764), dropless MoE (MegaBlocks).
"""

from zoo.models.config import ModelConfig
from zoo.models.decoder import Decoder
from zoo.models.linear import ZooLinear

__all__ = ["Decoder", "ModelConfig", "ZooLinear"]
