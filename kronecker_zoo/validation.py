"""Argument checks shared across the package: errors that name the argument."""

import numbers

import numpy as np

__all__ = ["check_class_ids", "check_image_input", "int_sequence", "looks_scaled_to_unit",
           "non_negative_float", "positive_int", "positive_pair"]


def positive_int(value, name):
    """``int(value)`` if it is a positive integer (Python or NumPy), else raise a
    ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


def non_negative_float(value, name):
    """``float(value)`` if it is a finite real number ``>= 0`` (not a bool), else raise a
    ValueError naming it."""
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)
            or not np.isfinite(value) or value < 0):
        raise ValueError(f"`{name}` must be a finite float >= 0. Received: {name}={value!r}")
    return float(value)


def int_sequence(values, name, minimum=1, odd=False):
    """A tuple of Python ints if ``values`` is a non-empty sequence of integers ``>= minimum``
    (odd ones if ``odd``; Python, NumPy or a backend's integers, not floats or bools), else a
    ValueError naming ``name``."""
    kind = {0: "non-negative", 1: "positive"}.get(minimum, f">= {minimum}")
    message = (f"`{name}` must be a non-empty sequence of {'odd ' if odd else ''}{kind} ints. "
               f"Received: {name}={values!r}")
    if isinstance(values, str) or _integer_scalar(values) is not None:
        raise ValueError(message)
    try:
        ints = tuple(_integer_scalar(v) for v in values)
    except TypeError:
        raise ValueError(message) from None
    if not ints or any(v is None or v < minimum or (odd and v % 2 == 0) for v in ints):
        raise ValueError(message)
    return ints


def _integer_scalar(value):
    """``int(value)`` for an integer scalar (Python, NumPy, or a 0-d integer array of any
    backend), else `None` (floats and bools are not)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 (anything NumPy cannot read is not an int)
        return None
    if array.ndim == 0 and np.issubdtype(array.dtype, np.integer):
        return int(array)
    return None


def positive_pair(value, name):
    """``(h, w)``: a positive int ``n`` as ``(n, n)``, or a pair of positive ints (Python,
    NumPy or a backend's integer arrays; not floats or bools, as `positive_int`), else a
    ValueError naming ``name``."""
    message = (f"`{name}` must be a positive int or a pair of positive ints. "
               f"Received: {name}={value!r}")
    if _integer_scalar(value) is not None:
        value = (value, value)
    try:
        pair = int_sequence(value, name)
    except ValueError:
        raise ValueError(message) from None
    if len(pair) != 2:
        raise ValueError(message)
    return pair


def looks_scaled_to_unit(images):
    """Whether ``images`` (an array meant to hold raw pixels 0..255) look scaled to
    [0, 1]: non-integer values, all at most 1 (an empty array does not)."""
    images = np.asarray(images)
    return bool(images.size) and not np.issubdtype(images.dtype, np.integer) and \
        images.max() <= 1


def check_class_ids(values, what="labels"):
    """ValueError naming ``what`` unless ``values`` (an array) are class ids: integers,
    booleans (0 / 1) or whole-number floats (not soft labels or scores). Integer and
    boolean arrays are not read (no copy)."""
    dtype = np.asarray(values).dtype if not hasattr(values, "dtype") else np.dtype(
        getattr(values.dtype, "as_numpy_dtype", values.dtype))
    if dtype == bool or np.issubdtype(dtype, np.integer):
        return
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"{what} must be integer class ids; got dtype {dtype}")
    values = np.asarray(values)
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise ValueError(f"{what} must be integer class ids; got non-integer values "
                         "(scores or soft labels? take their argmax)")


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
