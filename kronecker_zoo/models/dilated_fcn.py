"""Dilated FCN: no pooling and no striding, so translation-equivariant by construction.

A 3x3 conv-BN-ReLU stem, residual blocks of two 3x3 convs at ``dilations`` (the
receptive field grows exponentially at full resolution), two degridding 3x3
conv-BN-ReLU layers at dilations 2 and 1 without residual (DRN-C), and a 1x1
classifier. Shifting the input shifts the output by the same amount, away from
borders (zero padding breaks it within one receptive field of the edge).

Input: raw pixels `(batch, H, W, channels)` in [0, 255]. Output: logits
`(batch, H, W, num_classes)`; with ``include_top=False`` the features
`(batch, H, W, width)`.
"""

import keras

from kronecker_zoo.models import convs
from kronecker_zoo.models.blocks import (
    basic_block,
    bn_relu,
    channels_last,
    dense_conv,
    model_input,
    normalize_pixels,
)
from kronecker_zoo.validation import int_sequence

DEFAULT_DILATIONS = (1, 2, 4, 8)


@channels_last
def dilated_fcn(width=16, dilations=DEFAULT_DILATIONS, input_shape=(64, 64, 1),
                num_classes=11, include_top=True, name=None):
    """Builds the dilated FCN (see module docstring); receptive field
    ``3 + 4 * sum(dilations) + 6`` (69 by default)."""
    dilations = int_sequence(dilations, "dilations")
    inputs = model_input(input_shape)
    x = normalize_pixels(inputs)
    x = dense_conv(x, width, 3, name="stem_conv")
    x = bn_relu(x, "stem")
    for i, rate in enumerate(dilations, start=1):
        x = basic_block(x, convs.dense, width, 1, rate, name=f"block{i}")
    for i, rate in enumerate((2, 1), start=1):
        x = dense_conv(x, width, 3, dilation_rate=rate, name=f"degrid{i}_conv")
        x = bn_relu(x, f"degrid{i}")
    if include_top:
        x = keras.layers.Conv2D(num_classes, 1, name="logits")(x)
    return keras.Model(inputs, x, name=name or f"dilated_fcn_w{width}")
