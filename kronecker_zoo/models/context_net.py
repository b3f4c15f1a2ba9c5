"""ContextNet and Kronecker ContextNet: Yu & Koltun's front end + context module.

As in Yu & Koltun (ICLR 2016), the front end ends in class scores and the context
module refines those score maps: it runs at ``C = num_classes`` channels.

Front end (output stride 2): three 3x3 conv-BN-ReLU layers of ``front_channels``
(the second with stride 2), then a 1x1 conv to ``C`` class scores (no activation,
as the paper's ``final`` layer). Context (variant "basic" or "large"): the
identity-initialised context module on those ``C`` score maps (basic: ``C``
channels throughout; large: ``2C, 2C, 4C, 8C, 16C, 32C, 32C``, then ``C``); its
output is the logits. Variant "frontend": no module, the scores are the logits
(the ablation's baseline). Head: bilinear upsampling by 2 and a crop to the input
size.

The first context layer's ReLU acts on the scores (as in the paper's code), so a
fresh module maps scores ``s`` to ``max(s, 0)``: the front end's prediction is kept
wherever its top score is positive.

The Kronecker ContextNet replaces the dilated 3x3 layers by KroneckerConv2D layers
whose kernels are products of 3x3 factors (extents ``3 ** n``); by the seed's
identity a cascade of 3x3 kernels at dilations ``1, 3, 9`` is such a product, so
each layer covers the extent of a dilated cascade but learns the pixels a dilated
kernel skips (no gridding). The default extents ``3, 3, 9, 27, 27, 3`` give the
same receptive field as the context module (67) with six layers instead of seven.
Channels factor as ``(C -> C) (x) (m_in -> m_out)`` for widths ``m C``, so a
fresh module is the identity on non-negative maps, exactly as Yu & Koltun's.

Input: raw pixels `(batch, H, W, channels)` in [0, 255]. Output: logits
`(batch, H, W, num_classes)`; with ``include_top=False`` the logits at the front
end's resolution, `(batch, ceil(H/2), ceil(W/2), num_classes)`, before upsampling.
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
from kronecker_zoo.models.blocks import (
    bn_relu,
    channels_last,
    dense_conv,
    model_input,
    normalize_pixels,
)
from kronecker_zoo.validation import int_sequence, positive_int

KRON_CONTEXT_FACTORS = (1, 1, 2, 3, 3, 1)
FRONTEND = "frontend"


def _check_variant(variant, allowed):
    if variant not in allowed:
        raise ValueError(f"`variant` must be one of {allowed}. Received: variant={variant!r}")


def front_end(x, front_channels, num_classes):
    """Stride-2 front end: ``(batch, H, W, ch)`` -> class scores ``(batch, H/2, W/2, C)``."""
    x = dense_conv(x, front_channels, 3, name="front1_conv")
    x = bn_relu(x, "front1")
    x = dense_conv(x, front_channels, 3, strides=2, name="front2_conv")
    x = bn_relu(x, "front2")
    x = dense_conv(x, front_channels, 3, name="front3_conv")
    x = bn_relu(x, "front3")
    return keras.layers.Conv2D(num_classes, 1, kernel_initializer="he_normal",
                               name="front_out")(x)


def segmentation_head(logits, inputs):
    """x2 bilinear upsampling of the logits, crop to the input's height and width."""
    x = BilinearUpSampling2D(2, name="upsample")(logits)
    return CropToMatch(name="crop")([x, inputs])


def _context_net(inputs, logits, include_top, name):
    outputs = segmentation_head(logits, inputs) if include_top else logits
    return keras.Model(inputs, outputs, name=name)


@channels_last
def context_net(variant="basic", front_channels=32, dilations=YU_KOLTUN_DILATIONS,
                input_shape=(64, 64, 1), num_classes=11, include_top=True, name=None,
                kernel_sizes=None):
    """ContextNet: front end (+ `ContextModule` at ``C = num_classes``; Yu & Koltun 2016).

    ``variant``: "frontend" (no module), "basic" or "large"; ``dilations`` and
    ``kernel_sizes`` (default all 3) of the module's layers.
    """
    _check_variant(variant, (FRONTEND,) + VARIANTS)
    num_classes = positive_int(num_classes, "num_classes")
    inputs = model_input(input_shape)
    x = front_end(normalize_pixels(inputs), front_channels, num_classes)
    if variant != FRONTEND:
        x = ContextModule(num_classes, variant, dilations=dilations,
                          kernel_sizes=kernel_sizes, seed=0, name="context")(x)
    return _context_net(inputs, x, include_top, name or f"context_net_{variant}")


def context_layer_widths(channels, variant, num_layers, width_multipliers=None):
    """Output widths of the Kronecker module's layers: ``m_i C`` for ``width_multipliers``
    (one positive int per layer), else the variant's (`context_widths`)."""
    if width_multipliers is None:
        return context_widths(channels, variant, num_layers)
    multipliers = int_sequence(width_multipliers, "width_multipliers", minimum=1)
    if len(multipliers) != num_layers:
        raise ValueError(
            f"`width_multipliers` needs one entry per layer of `layer_factors` ({num_layers}). "
            f"Received: width_multipliers={width_multipliers!r}")
    return [channels * m for m in multipliers]


def kronecker_context(x, channels, variant="basic", layer_factors=KRON_CONTEXT_FACTORS,
                      noise_stddev=None, execution="factored", name="context",
                      width_multipliers=None):
    """Kronecker context module on ``channels`` maps (identity on non-negative maps at init).

    Layer ``i`` has extent ``3 ** n`` for ``n = layer_factors[i]`` and width
    ``m_i C`` (``width_multipliers``, default the variant's: all 1 for basic): a 1x1
    (``n == 0``) or 3x3 (``n == 1``) Conv2D, or a KroneckerConv2D with factors
    ``(3, 3, C, C)``, ``(3, 3, 1, 1)`` ..., ``(3, 3, m_in, m_out)`` (``n >= 2``); all with
    ReLU; then a 1x1 conv back to ``C``. A module with a layer wider than ``C`` starts
    with noise (default ``1e-3``) on its identity: without it the copies of a channel
    would stay equal.
    """
    layer_factors = int_sequence(layer_factors, "layer_factors", minimum=0)
    widths = context_layer_widths(channels, variant, len(layer_factors), width_multipliers)
    widened = any(width != channels for width in widths)
    noise = noise_stddev if noise_stddev is not None else (1e-3 if widened else 0.0)
    width_in = channels
    for i, (n, width) in enumerate(zip(layer_factors, widths)):
        if n <= 1:
            x = keras.layers.Conv2D(
                width, 3 ** n, padding="same", activation="relu",
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


@channels_last
def kron_context_net(variant="basic", front_channels=32, layer_factors=KRON_CONTEXT_FACTORS,
                     input_shape=(64, 64, 1), num_classes=11, include_top=True,
                     execution="factored", name=None, width_multipliers=None):
    """Kronecker ContextNet: `context_net` with Kronecker-factored context layers.

    ``layer_factors`` and ``width_multipliers``: see `kronecker_context`.
    """
    _check_variant(variant, VARIANTS)
    num_classes = positive_int(num_classes, "num_classes")
    inputs = model_input(input_shape)
    x = front_end(normalize_pixels(inputs), front_channels, num_classes)
    x = kronecker_context(x, num_classes, variant, layer_factors, execution=execution,
                          width_multipliers=width_multipliers)
    return _context_net(inputs, x, include_top, name or f"kron_context_net_{variant}")
