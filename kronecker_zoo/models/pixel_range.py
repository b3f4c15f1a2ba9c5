"""The raw pixel range a zoo model takes, and the check that data fit it.

Zoo models normalise raw pixels (0..255) themselves, with a ``Rescaling`` by the zoo's
pixel scale and offset; images already scaled to [0, 1] or [-1, 1] run without error and
give near-chance predictions. Evaluation and int8 calibration refuse them.
"""

import numpy as np

from kronecker_zoo.models import blocks

__all__ = ["model_input_range", "pixel_range_problem"]


def _unwrap(layer):
    while hasattr(layer, "layer") and not hasattr(layer, "scale"):
        layer = layer.layer  # tfmot wrappers (tf_keras)
    return layer


def model_input_range(model):
    """``(min, max)`` raw pixel values ``model`` takes, or `None` if it cannot tell.

    A model built by the zoo (Keras 3, or its tf_keras twin from
    `kronecker_zoo.optimize`) normalises its input with a ``Rescaling`` by the
    zoo's pixel scale and offset; its range is then ``ModelSpec.input_range``.
    """
    for layer in getattr(model, "layers", ()):
        layer = _unwrap(layer)
        if type(layer).__name__ != "Rescaling":
            continue
        config = layer.get_config()
        try:
            scale, offset = (float(np.asarray(config.get(k))) for k in ("scale", "offset"))
        except (TypeError, ValueError):  # per-channel or serialized values: not the zoo's
            continue
        if np.isclose(scale, blocks.PIXEL_SCALE) and np.isclose(offset, blocks.PIXEL_OFFSET):
            return blocks.PIXEL_RANGE
    return None


def pixel_range_problem(model, batches):
    """What is wrong with ``batches`` (arrays of images) as inputs of ``model``, or `None`.

    For a model with a known input range (`model_input_range`): data that lie outside
    it, or that all lie in [-1, 1] while the range reaches 255 (images scaled to [0, 1]
    or [-1, 1]). Models of unknown range: `None`.
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
    if hi > 1.0 and -1.0 <= low and high <= 1.0:
        return (f"they lie in [{low:g}, {high:g}], as if scaled to [0, 1] or [-1, 1], but "
                f"{name!r} takes raw pixels in [{lo:g}, {hi:g}] and normalises them itself")
    if low < lo - tolerance or high > hi + tolerance:
        return (f"they lie in [{low:g}, {high:g}], outside the [{lo:g}, {hi:g}] raw pixels "
                f"{name!r} takes")
    return None
