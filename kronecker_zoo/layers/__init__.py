"""Keras 3 layers of kronecker_zoo (TensorFlow and JAX backends, channels last)."""

from kronecker_zoo.layers.context_module import ContextIdentity, ContextModule
from kronecker_zoo.layers.crop_to_match import CropToMatch
from kronecker_zoo.layers.dilated_stack import DilatedStack
from kronecker_zoo.layers.kronecker_conv import KroneckerConv2D
from kronecker_zoo.layers.kronecker_dense import KroneckerDense
from kronecker_zoo.layers.kronecker_identity import KroneckerIdentity
from kronecker_zoo.layers.low_rank_conv import LowRankConv2D
from kronecker_zoo.layers.upsampling import BilinearUpSampling2D

__all__ = [
    "BilinearUpSampling2D",
    "ContextIdentity",
    "ContextModule",
    "CropToMatch",
    "DilatedStack",
    "KroneckerConv2D",
    "KroneckerDense",
    "KroneckerIdentity",
    "LowRankConv2D",
]
