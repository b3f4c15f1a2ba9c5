"""The convolution each classification family puts in the 3x3 role of a ResNet.

Each factory returns ``conv(x, filters, strides, dilation_rate, name) -> tensor``.
The Kronecker, low-rank and separable convolutions are sized to about the same
parameter budget, so families differ only in how a kernel is parametrised.
"""

import keras

from kronecker_zoo.layers import KroneckerConv2D, LowRankConv2D
from kronecker_zoo.models.blocks import dense_conv, split_channels


def _no_dilation(family, dilation_rate):
    if dilation_rate != 1:
        raise ValueError(f"The {family} convolution does not support dilation. "
                         f"Received: dilation_rate={dilation_rate}")


def kronecker_factor_shapes(in_channels, filters, spatial_factors):
    """Factor shapes ``(kh, kw, in_k, out_k)``, outermost first, for a KroneckerConv2D.

    Spatial: one ``(k, k)`` per entry of ``spatial_factors`` (kernel extent is their
    product). Channels: ``in = a * b``, ``filters = c * d`` (see `split_channels`)
    with ``(a, c)`` on the outermost factor, ``(b, d)`` on the innermost and 1 on
    any factor in between.
    """
    a, b = split_channels(in_channels)
    c, d = split_channels(filters)
    n = len(spatial_factors)
    shapes = []
    for k, size in enumerate(spatial_factors):
        cin, cout = (a, c) if k == 0 else (b, d) if k == n - 1 else (1, 1)
        shapes.append((size, size, cin, cout))
    return shapes


def kronecker_conv_params(in_channels, filters, spatial_factors, rank):
    """Parameters of the (bias-free) KroneckerConv2D that `kronecker_conv` builds."""
    return rank * sum(kh * kw * i * o for kh, kw, i, o in
                      kronecker_factor_shapes(in_channels, filters, spatial_factors))


def dense(x, filters, strides, dilation_rate, name):
    return dense_conv(x, filters, 3, strides, dilation_rate, name=name)


def kronecker_conv(spatial_factors=(3, 3), rank=4, execution="factored"):
    """KroneckerConv2D of extent ``prod(spatial_factors)`` (9x9 by default).

    ``execution`` only changes how the same factors are run (see KroneckerConv2D):
    weights trained with one execution load into the other.
    """
    spatial_factors = tuple(spatial_factors)

    def conv(x, filters, strides, dilation_rate, name):
        _no_dilation("Kronecker", dilation_rate)
        extent = 1
        for size in spatial_factors:
            extent *= size
        return KroneckerConv2D(
            filters, extent, kronecker_factor_shapes(x.shape[-1], filters, spatial_factors),
            rank=rank, strides=strides, execution=execution, use_bias=False,
            kernel_initializer="he_normal", name=name,
        )(x)

    return conv


def low_rank_conv(rank=None, budget=None, kernel_size=3):
    """LowRankConv2D ``kernel_size`` x ``kernel_size``; ``rank=None`` matches ``budget``.

    ``budget(in, out)`` gives the parameter count to match; the rank is then
    ``round(budget / (kh * in + kw * out))``, at least 1.
    """

    def conv(x, filters, strides, dilation_rate, name):
        _no_dilation("low-rank", dilation_rate)
        in_channels = x.shape[-1]
        r = rank
        if r is None:
            r = max(1, round(budget(in_channels, filters)
                             / (kernel_size * (in_channels + filters))))
        return LowRankConv2D(filters, kernel_size, rank=r, strides=strides, use_bias=False,
                             kernel_initializer="he_normal", name=name)(x)

    return conv


def separable_conv(kernel_size=3):
    """Depthwise ``kernel_size`` x ``kernel_size`` then pointwise (MobileNet style)."""

    def conv(x, filters, strides, dilation_rate, name):
        return keras.layers.SeparableConv2D(
            filters, kernel_size, strides=strides, dilation_rate=dilation_rate,
            padding="same", use_bias=False, depthwise_initializer="he_normal",
            pointwise_initializer="he_normal", name=name,
        )(x)

    return conv
