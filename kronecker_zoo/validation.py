"""Argument checks shared across the package: errors that name the argument."""

import numbers

import numpy as np

__all__ = ["check_image_input", "positive_int", "positive_pair"]


def positive_int(value, name):
    """``int(value)`` if it is a positive integer (Python or NumPy), else raise a
    ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


def positive_pair(value, name):
    """``(h, w)``: a positive int ``n`` as ``(n, n)``, or a pair of positive ints (Python
    or NumPy; not floats or bools, as `positive_int`), else a ValueError naming ``name``."""
    message = (f"`{name}` must be a positive int or a pair of positive ints. "
               f"Received: {name}={value!r}")
    if isinstance(value, numbers.Number) or isinstance(value, (np.generic, np.ndarray)) and \
            np.ndim(value) == 0:
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        raise ValueError(message) from None
    if len(pair) != 2 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v >= 1
            for v in pair):
        raise ValueError(message)
    return tuple(int(v) for v in pair)


def check_image_input(layer, input_shape, known_channels=True):
    """ValueError unless ``input_shape`` is a 4-D channels_last image batch (with known
    channels when ``known_channels``): the zoo's image layers are channels_last, whatever
    ``keras.config.image_data_format()`` says."""
    import keras

    name = type(layer).__name__
    if len(input_shape) != 4:
        raise ValueError(f"{name} expects a 4-D input (batch, height, width, channels). "
                         f"Received input_shape={tuple(input_shape)}")
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(f"{name} works on channels_last images (batch, height, width, "
                         "channels), but keras.config.image_data_format() is "
                         f"{keras.config.image_data_format()!r}: set it to 'channels_last' "
                         "(keras.config.set_image_data_format) and transpose the images")
    if known_channels and input_shape[-1] is None:
        raise ValueError(f"{name} needs the input's channels to build its weights. Received "
                         f"input_shape={tuple(input_shape)}")
