"""Small building blocks shared by the model builders (functions on KerasTensors).

Every sublayer is named from the block's name (``f"{name}_conv1"``) so weight
files keep stable names.
"""

import functools
import math
import numbers

import keras
import numpy as np

# Raw pixels in PIXEL_RANGE = [0, 255] -> [-1, 1], inside the model (no separate
# preprocessing). Every registry model takes this range (`ModelSpec.input_range`).
PIXEL_RANGE = (0.0, 255.0)
PIXEL_SCALE = 2.0 / (PIXEL_RANGE[1] - PIXEL_RANGE[0])
PIXEL_OFFSET = -1.0 - PIXEL_RANGE[0] * PIXEL_SCALE


def channels_last(builder):
    """Decorates a model builder: its layers are channels_last (images ``(height, width,
    channels)``, as ``input_shape`` says) whatever `keras.config.image_data_format()` is;
    the global setting is restored after the build."""
    @functools.wraps(builder)
    def build(*args, **kwargs):
        previous = keras.config.image_data_format()
        keras.config.set_image_data_format("channels_last")
        try:
            return builder(*args, **kwargs)
        finally:
            keras.config.set_image_data_format(previous)

    return build


def model_input(input_shape, name="pixels"):
    """`keras.Input` for raw pixels with a validated ``(height, width, channels)``."""
    message = ("`input_shape` must be (height, width, channels) with positive ints (height "
               f"and width may be None for any size). Received: input_shape={input_shape!r}")
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(message) from None
    if len(shape) != 3 or any(
            d is not None and (isinstance(d, (bool, np.bool_))
                               or not isinstance(d, numbers.Integral) or d < 1)
            for d in shape) or shape[2] is None:
        raise ValueError(message)
    shape = tuple(None if d is None else int(d) for d in shape)  # NumPy ints as ints
    return keras.Input(shape=shape, name=name)


def normalize_pixels(x, name="normalize"):
    """Maps raw pixel values 0..255 to [-1, 1]: ``x / 127.5 - 1``."""
    return keras.layers.Rescaling(PIXEL_SCALE, offset=PIXEL_OFFSET, name=name)(x)


def bn_relu(x, name, relu=True):
    """BatchNormalization (+ ReLU)."""
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def dense_conv(x, filters, kernel_size=3, strides=1, dilation_rate=1, name=None):
    """Plain bias-free Conv2D with "same" padding and He initialisation."""
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, dilation_rate=dilation_rate, padding="same",
        use_bias=False, kernel_initializer="he_normal", name=name,
    )(x)


def split_channels(channels):
    """``channels = outer * inner`` with ``outer <= inner`` as close as possible.

    >>> split_channels(64), split_channels(32), split_channels(11)
    ((8, 8), (4, 8), (1, 11))
    """
    outer = max(d for d in range(1, math.isqrt(channels) + 1) if channels % d == 0)
    return outer, channels // outer


def basic_block(x, conv, filters, strides, dilation_rate, name):
    """ResNet basic block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    ``conv(x, filters, strides, dilation_rate, name)`` is the family's 3x3-role
    convolution. The shortcut is the identity, or a strided 1x1 Conv2D + BN when
    the shape changes (the same in every family).
    """
    in_channels = x.shape[-1]
    shortcut = x
    if strides != 1 or in_channels != filters:
        shortcut = dense_conv(x, filters, 1, strides, name=f"{name}_shortcut_conv")
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    y = conv(x, filters, strides, dilation_rate, f"{name}_conv1")
    y = bn_relu(y, f"{name}_1")
    y = conv(y, filters, 1, dilation_rate, f"{name}_conv2")
    y = bn_relu(y, f"{name}_2", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)
