"""The raw pixel range a zoo model takes, and the check that data fit it.

Zoo models normalise raw pixels (0..255) themselves, with a ``Rescaling`` by the zoo's
pixel scale and offset; images already scaled to [0, 1] or [-1, 1] run without error and
give near-chance predictions. Evaluation and int8 calibration refuse them.
"""

import numpy as np

from kronecker_zoo.models import blocks

__all__ = ["model_input_range", "pixel_range_problem", "rescaling_scale_offset"]


def _unwrap(layer):
    while hasattr(layer, "layer") and not hasattr(layer, "scale"):
        layer = layer.layer  # tfmot wrappers (tf_keras)
    return layer


def rescaling_scale_offset(layer):
    """``(scale, offset)`` of a ``Rescaling`` layer with scalar ones, else `None`."""
    if type(layer).__name__ != "Rescaling":
        return None
    config = layer.get_config()
    try:
        return tuple(float(np.asarray(config.get(k))) for k in ("scale", "offset"))
    except (TypeError, ValueError):  # per-channel or serialized values
        return None


def _maps_bytes_to_unit(scale, offset):
    """Whether ``x * scale + offset`` is ``x / 255`` or ``x / 127.5 - 1``: the
    normalisations of 8-bit pixels (0..255) to [0, 1] or [-1, 1]."""
    return ((np.isclose(scale * 255, 1) and np.isclose(offset, 0))
            or (np.isclose(scale * 255, 2) and np.isclose(offset, -1)))


def model_input_range(model):
    """``(min, max)`` raw pixel values ``model`` takes, or `None` if it cannot tell.

    A model built by the zoo (Keras 3, or its tf_keras twin from
    `kronecker_zoo.optimize`) normalises its input with a ``Rescaling`` by the
    zoo's pixel scale and offset; its range is then ``ModelSpec.input_range``. Any
    other model whose first layer is a ``Rescaling`` of 8-bit pixels to [0, 1] or
    [-1, 1] (``x / 255``, ``x / 127.5 - 1``) takes raw pixels in [0, 255] too.
    """
    # (tfmot's QuantizeLayer, which a QAT twin starts with, quantizes the input as it is)
    layers = [layer for layer in map(_unwrap, getattr(model, "layers", ()))
              if type(layer).__name__ not in ("InputLayer", "QuantizeLayer")]
    for layer in layers:
        rescaling = rescaling_scale_offset(layer)
        if rescaling is not None and np.allclose(rescaling,
                                                 (blocks.PIXEL_SCALE, blocks.PIXEL_OFFSET)):
            return blocks.PIXEL_RANGE
    first = rescaling_scale_offset(layers[0]) if layers else None
    if first is not None and _maps_bytes_to_unit(*first):
        return blocks.PIXEL_RANGE
    return None


def pixel_range_problem(model, batches):
    """What is wrong with ``batches`` (arrays of images) as inputs of ``model``, or `None`.

    For a model with a known input range (`model_input_range`): data that lie outside
    it, or float data that all lie in [-1, 1] while the range reaches 255 (images scaled
    to [0, 1] or [-1, 1]; integer images, e.g. dark uint8 ones, are raw pixels). Models
    of unknown range: `None`.
    """
    expected = model_input_range(model)
    batches = [b for b in batches if np.size(b)]
    if expected is None or not batches:
        return None
    low = float(min(np.min(b) for b in batches))
    high = float(max(np.max(b) for b in batches))
    lo, hi = expected
    tolerance = 1e-3 * (hi - lo)
    name = getattr(model, "name", "the model")
    integers = all(np.issubdtype(np.asarray(b).dtype, np.integer) for b in batches)
    if hi > 1.0 and -1.0 <= low and high <= 1.0 and not integers:  # 8-bit dark images are raw
        return (f"they lie in [{low:g}, {high:g}], as if scaled to [0, 1] or [-1, 1], but "
                f"{name!r} takes raw pixels in [{lo:g}, {hi:g}] and normalises them itself")
    if low < lo - tolerance or high > hi + tolerance:
        return (f"they lie in [{low:g}, {high:g}], outside the [{lo:g}, {hi:g}] raw pixels "
                f"{name!r} takes")
    return None
