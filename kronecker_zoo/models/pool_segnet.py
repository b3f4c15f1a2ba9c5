"""Pooling encoder-decoder (SegNet / U-Net spirit): the non-equivariant baseline.

Encoder: at each of ``levels`` levels two 3x3 conv-BN-ReLU layers then 2x2 max
pooling (widths ``width * 2**level``); a bottleneck of two conv-BN-ReLU layers;
decoder: bilinear upsampling by 2, crop to the skip's size, concatenation with the
skip, two conv-BN-ReLU layers; 1x1 classifier. Max pooling makes the output depend
on the input's position modulo ``2**levels``: a 1-pixel shift does not simply shift
the output.

Input: raw pixels `(batch, H, W, channels)` in [0, 255], any H and W. Output:
logits `(batch, H, W, num_classes)`; with ``include_top=False`` the last decoder
features `(batch, H, W, width)`.
"""

import keras

from kronecker_zoo.layers import BilinearUpSampling2D, CropToMatch
from kronecker_zoo.models.blocks import (
    bn_relu,
    channels_last,
    dense_conv,
    model_input,
    normalize_pixels,
)


def _double_conv(x, filters, name):
    for i in (1, 2):
        x = dense_conv(x, filters, 3, name=f"{name}_conv{i}")
        x = bn_relu(x, f"{name}_{i}")
    return x


@channels_last
def pool_segnet(width=16, levels=2, input_shape=(64, 64, 1), num_classes=11,
                include_top=True, name=None):
    """Builds the pooling encoder-decoder (see module docstring)."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"`levels` must be a positive int. Received: levels={levels!r}")
    inputs = model_input(input_shape)
    x = normalize_pixels(inputs)
    skips = []
    for level in range(levels):
        x = _double_conv(x, width * 2 ** level, f"enc{level + 1}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"enc{level + 1}_pool")(x)
    x = _double_conv(x, width * 2 ** levels, "bottleneck")
    for level in reversed(range(levels)):
        skip = skips[level]
        x = BilinearUpSampling2D(2, name=f"dec{level + 1}_up")(x)
        x = CropToMatch(name=f"dec{level + 1}_crop")([x, skip])
        x = keras.layers.Concatenate(name=f"dec{level + 1}_concat")([x, skip])
        x = _double_conv(x, width * 2 ** level, f"dec{level + 1}")
    if include_top:
        x = keras.layers.Conv2D(num_classes, 1, name="logits")(x)
    return keras.Model(inputs, x, name=name or f"pool_segnet_w{width}")
