"""ContextNet and Kronecker ContextNet: a front end + Yu & Koltun's context module.

Front end (output stride 2): three 3x3 conv-BN-ReLU layers of ``front_channels``
(the second with stride 2), then a 1x1 conv + ReLU to ``C = context_channels``.
Context: the identity-initialised context module on those ``C`` maps (basic: ``C``
channels; large: ``2C, 2C, 4C, ...``). Head: 1x1 conv to ``num_classes`` logits,
bilinear upsampling by 2 and a crop to the input size.

The Kronecker ContextNet replaces the dilated 3x3 layers by KroneckerConv2D layers
whose kernels are products of 3x3 factors (extents ``3 ** n``); by the seed's
identity a cascade of 3x3 kernels at dilations ``1, 3, 9`` is such a product, so
each layer covers the extent of a dilated cascade but learns the pixels a dilated
kernel skips (no gridding). The default extents ``3, 3, 9, 27, 27, 3`` give the
same receptive field as the context module (67) with six layers instead of seven.
Channels factor as ``(C -> C) (x) (m_in -> m_out)`` for widths ``m C``, so a
fresh module is the identity, exactly as Yu & Koltun's.

Input: raw pixels `(batch, H, W, channels)` in [0, 255]. Output: logits
`(batch, H, W, num_classes)`; with ``include_top=False`` the context features
`(batch, ceil(H/2), ceil(W/2), C)`.
"""

import keras

from kronecker_zoo.layers import (
    BilinearUpSampling2D,
    ContextIdentity,
    ContextModule,
    CropToMatch,
    KroneckerConv2D,
    KroneckerIdentity,
)
from kronecker_zoo.layers.context_module import VARIANTS, YU_KOLTUN_DILATIONS, context_widths
from kronecker_zoo.models.blocks import bn_relu, dense_conv, model_input, normalize_pixels

KRON_CONTEXT_FACTORS = (1, 1, 2, 3, 3, 1)


def _check_variant(variant):
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")


def front_end(x, front_channels, context_channels):
    """Stride-2 front end; returns non-negative ``context_channels`` feature maps."""
    x = dense_conv(x, front_channels, 3, name="front1_conv")
    x = bn_relu(x, "front1")
    x = dense_conv(x, front_channels, 3, strides=2, name="front2_conv")
    x = bn_relu(x, "front2")
    x = dense_conv(x, front_channels, 3, name="front3_conv")
    x = bn_relu(x, "front3")
    return keras.layers.Conv2D(context_channels, 1, activation="relu",
                               kernel_initializer="he_normal", name="front_out")(x)


def segmentation_head(x, inputs, num_classes):
    """1x1 logits, x2 bilinear upsampling, crop to the input's height and width."""
    x = keras.layers.Conv2D(num_classes, 1, name="logits")(x)
    x = BilinearUpSampling2D(2, name="upsample")(x)
    return CropToMatch(name="crop")([x, inputs])


def _context_net(inputs, context, include_top, num_classes, name):
    if not include_top:
        return keras.Model(inputs, context, name=name)
    return keras.Model(inputs, segmentation_head(context, inputs, num_classes), name=name)


def context_net(variant="basic", context_channels=None, front_channels=32,
                dilations=YU_KOLTUN_DILATIONS, input_shape=(64, 64, 1), num_classes=11,
                include_top=True, name=None):
    """ContextNet: front end + `ContextModule` (Yu & Koltun, ICLR 2016).

    ``context_channels`` defaults to 32 (basic) or 4 (large: widths 8 ... 128).
    """
    _check_variant(variant)
    c = context_channels or (32 if variant == "basic" else 4)
    inputs = model_input(input_shape)
    x = front_end(normalize_pixels(inputs), front_channels, c)
    x = ContextModule(c, variant, dilations=tuple(dilations), seed=0, name="context")(x)
    return _context_net(inputs, x, include_top, num_classes, name or f"context_net_{variant}")


def kronecker_context(x, channels, variant="basic", layer_factors=KRON_CONTEXT_FACTORS,
                      noise_stddev=None, execution="factored", name="context"):
    """Kronecker context module on ``channels`` non-negative maps (identity at init).

    Layer ``i`` is a 3x3 Conv2D (``layer_factors[i] == 1``) or a KroneckerConv2D of
    extent ``3 ** layer_factors[i]`` with factors ``(3, 3, C, C)``, ``(3, 3, 1, 1)``
    ..., ``(3, 3, m_in, m_out)``; all with ReLU; then a 1x1 conv back to ``C``.
    """
    layer_factors = tuple(layer_factors)
    if not layer_factors or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                for n in layer_factors):
        raise ValueError("`layer_factors` must be a non-empty sequence of positive ints. "
                         f"Received: layer_factors={layer_factors!r}")
    noise = noise_stddev if noise_stddev is not None else (1e-3 if variant == "large" else 0.0)
    widths = context_widths(channels, variant, len(layer_factors))
    width_in = channels
    for i, (n, width) in enumerate(zip(layer_factors, widths)):
        if n == 1:
            x = keras.layers.Conv2D(
                width, 3, padding="same", activation="relu",
                kernel_initializer=ContextIdentity(channels, noise, i), name=f"{name}_{i}")(x)
        else:
            factors = ([(3, 3, channels, channels)] + [(3, 3, 1, 1)] * (n - 2)
                       + [(3, 3, width_in // channels, width // channels)])
            x = KroneckerConv2D(
                width, 3 ** n, factors, execution=execution, activation="relu",
                kernel_initializer=KroneckerIdentity(noise, i), name=f"{name}_{i}")(x)
        width_in = width
    return keras.layers.Conv2D(channels, 1, kernel_initializer=ContextIdentity(channels, noise),
                               name=f"{name}_out")(x)


def kron_context_net(variant="basic", context_channels=None, front_channels=32,
                     layer_factors=KRON_CONTEXT_FACTORS, input_shape=(64, 64, 1),
                     num_classes=11, include_top=True, execution="factored", name=None):
    """Kronecker ContextNet: `context_net` with Kronecker-factored context layers."""
    _check_variant(variant)
    c = context_channels or (32 if variant == "basic" else 4)
    inputs = model_input(input_shape)
    x = front_end(normalize_pixels(inputs), front_channels, c)
    x = kronecker_context(x, c, variant, layer_factors, execution=execution)
    return _context_net(inputs, x, include_top, num_classes,
                        name or f"kron_context_net_{variant}")
