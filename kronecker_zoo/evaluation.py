"""Test-set metrics of zoo models: accuracy and mean IoU (`kronecker_zoo.metrics`)."""

import numpy as np

from kronecker_zoo.metrics import confusion_matrix, mean_iou  # noqa: F401 (public here too)
from kronecker_zoo.models.pixel_range import pixel_range_problem
from kronecker_zoo.validation import check_class_ids, looks_scaled_to_unit

def _known_shape(model, attribute):
    """``model.input_shape`` / ``output_shape`` as a tuple, or `None` if not one known."""
    try:
        shape = getattr(model, attribute)
    except (AttributeError, ValueError):
        return None
    if not isinstance(shape, tuple) or not all(d is None or isinstance(d, int) for d in shape):
        return None  # several inputs/outputs, or not built yet
    return shape


def _matches(shape, expected):
    return len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape, expected))


def _check_inputs(model, images, labels):
    """``(images, labels)`` checked against each other and the model before predicting;
    a missing channel axis of size 1 is added, a trailing label axis of 1 dropped."""
    if images.ndim == 0 or labels.ndim == 0:
        raise ValueError(f"images and labels must be arrays with one entry per example; "
                         f"got shapes {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length: {len(images)} images vs "
                         f"{len(labels)} labels")
    if len(images) == 0:
        raise ValueError("images and labels are empty")
    expected_in = _known_shape(model, "input_shape")
    if expected_in is not None:
        if expected_in[-1] == 1 and images.ndim == len(expected_in) - 1:
            images = images[..., None]  # (N, H, W) grey images
        if not _matches(images.shape[1:], expected_in[1:]):
            raise ValueError(f"images of shape {images.shape} do not fit the model's input "
                             f"shape {expected_in}")
    out = _known_shape(model, "output_shape")
    if out is not None:
        labels = _labels_like(labels, (len(labels),) + tuple(out[1:-1]))
        if out[-1] is not None:
            _check_class_range(labels, out[-1])
    return images, labels


def _check_class_range(labels, num_classes):
    if num_classes < 2:
        raise ValueError(f"the model gives {num_classes} score per example: evaluate takes "
                         "one logit or probability per class (argmax), not a single sigmoid "
                         "output")
    low, high = int(np.min(labels)), int(np.max(labels))
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) for a model with "
                         f"{num_classes} classes; got [{low}, {high}]")


def _labels_like(labels, predictions_shape):
    """``labels`` shaped like the predictions (class ids): a trailing axis of 1 dropped,
    then the shapes checked (``None`` in ``predictions_shape``: any size)."""
    if labels.ndim == len(predictions_shape) + 1 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if not _matches(labels.shape, predictions_shape):
        raise ValueError(f"labels of shape {labels.shape} do not match the model's "
                         f"predictions, shape {tuple(predictions_shape)}")
    return labels


def evaluate(model, images, labels, batch_size=256):
    """``{"accuracy"}`` (and ``"miou"`` for per-pixel outputs) of ``model`` on raw pixels.

    ``labels``: class ids in ``[0, num_classes)``, one per image ``(N,)`` or per pixel
    ``(N, H, W)`` (a trailing axis of size 1 is dropped). Lengths and shapes are checked
    first; ``(N, H, W)`` images get the channel axis of a one-channel model; images outside
    the raw pixel range of a zoo model, or of a model whose first layer rescales 8-bit
    pixels (`pixel_range.model_input_range`), e.g. scaled to [0, 1], are refused.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    check_class_ids(labels)  # whole numbers, before predicting
    images, labels = _check_inputs(model, images, labels)
    problem = pixel_range_problem(model, [images])
    if problem is not None:
        raise ValueError(f"images cannot be what the model sees: {problem}. Pass the "
                         "images exactly as the model was trained on them (unscaled pixels).")
    logits = np.asarray(model.predict(images.astype("float32"), batch_size=batch_size,
                                      verbose=0))
    predictions = np.argmax(logits, axis=-1)
    labels = _labels_like(labels, predictions.shape)  # (model shapes unknown before)
    _check_class_range(labels, logits.shape[-1])
    result = {"accuracy": float((predictions == labels).mean())}
    if predictions.ndim > 1:
        result["miou"] = mean_iou(labels, predictions, logits.shape[-1])
    return result


def trivial_segmentation_baselines(images, masks, num_classes, threshold=32):
    """Mean IoU of two predictions that learn nothing, on ``images`` ``(N, H, W[, 1])``
    and per-pixel class ids ``masks`` ``(N, H, W)`` (class 0 = background).

    ``"background"``: class 0 everywhere. ``"threshold"``: pixels brighter than
    ``threshold`` get the most frequent foreground class of ``masks``, the others
    background (the objects' shapes without their classes). A published segmentation
    model must clearly beat both.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim == masks.ndim + 1 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.shape != masks.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} must have the same "
                         "(N, H, W) shape")
    if threshold >= 1 and looks_scaled_to_unit(images):
        raise ValueError(f"images lie in [{images.min():g}, {images.max():g}], as if scaled "
                         f"to [0, 1], but threshold={threshold!r} is on raw pixels 0..255: "
                         "pass raw pixels, or a threshold on the images' scale")
    check_class_ids(masks, "masks")
    counts = np.bincount(masks.reshape(-1).astype(np.int64), minlength=num_classes)
    if counts.size > num_classes:
        raise ValueError(f"masks hold class ids up to {counts.size - 1}, more than "
                         f"num_classes={num_classes} allows")
    majority = int(np.argmax(counts[1:])) + 1 if num_classes > 1 else 0
    return {
        "background": mean_iou(masks, np.zeros_like(masks), num_classes),
        "threshold": mean_iou(masks, np.where(images > threshold, majority, 0), num_classes),
    }
