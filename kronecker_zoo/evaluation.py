"""Test-set metrics of zoo models: accuracy and mean IoU, in NumPy.

``mean_iou`` follows ``keras.metrics.MeanIoU``: per class ``TP / (TP + FP + FN)`` from
the confusion matrix of the whole set, averaged over the classes that occur in the
labels or the predictions.
"""

import numpy as np

from kronecker_zoo import data, models

TEST_SETS = {
    "fashion_mnist": lambda: data.fashion_mnist("test"),
    "fashion_scenes": lambda: data.fashion_scenes("test"),
}


def confusion_matrix(labels, predictions, num_classes):
    """``(num_classes, num_classes)`` int64 counts, rows = true class, columns = predicted."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in size: {labels.size} vs "
                         f"{predictions.size}")
    for what, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{what} must lie in [0, {num_classes}); got "
                             f"[{values.min()}, {values.max()}]")
    counts = np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def mean_iou(labels, predictions, num_classes):
    """Mean over occurring classes of ``TP / (TP + FP + FN)``."""
    cm = confusion_matrix(labels, predictions, num_classes).astype(np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else 0.0


def evaluate(model, images, labels, batch_size=256):
    """``{"accuracy"}`` (and ``"miou"`` for per-pixel outputs) of ``model`` on raw pixels."""
    logits = np.asarray(model.predict(np.asarray(images, "float32"), batch_size=batch_size,
                                      verbose=0))
    predictions = np.argmax(logits, axis=-1)
    result = {"accuracy": float((predictions == np.asarray(labels)).mean())}
    if predictions.ndim > 1:
        result["miou"] = mean_iou(labels, predictions, logits.shape[-1])
    return result


def evaluate_published(name, tag):
    """Metrics of the published ``tag`` weights of ``name`` on the full test split."""
    if tag not in TEST_SETS:
        raise ValueError(f"No test set known for weights tag {tag!r}; known: {sorted(TEST_SETS)}")
    images, labels = TEST_SETS[tag]()
    return evaluate(models.get(name, weights=tag), images, labels)
