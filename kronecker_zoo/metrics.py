"""Classification and segmentation metrics in NumPy.

``mean_iou`` follows ``keras.metrics.MeanIoU``: per class ``TP / (TP + FP + FN)`` from
the confusion matrix of the whole set, averaged over the classes that occur in the
labels or the predictions. Sum `confusion_matrix` over batches and call
`mean_iou_from_confusion` once to get the whole set's mean IoU.
"""

import numpy as np

from kronecker_zoo.validation import check_class_ids, positive_int

__all__ = ["class_ids", "confusion_matrix", "mean_iou", "mean_iou_from_confusion"]


def confusion_matrix(labels, predictions, num_classes):
    """``(num_classes, num_classes)`` int64 counts, rows = true class, columns = predicted."""
    num_classes = positive_int(num_classes, "num_classes")
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in shape: {labels.shape} vs "
                         f"{predictions.shape}")
    labels, predictions = class_ids(labels, "labels"), class_ids(predictions, "predictions")
    for what, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{what} must lie in [0, {num_classes}); got "
                             f"[{values.min()}, {values.max()}]")
    counts = np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def class_ids(values, what="labels"):
    """``values`` flattened to int64 class ids (booleans as 0 / 1); a ValueError naming
    ``what`` if they are not whole numbers (`validation.check_class_ids`)."""
    check_class_ids(values, what)
    return np.asarray(values).reshape(-1).astype(np.int64)


def mean_iou(labels, predictions, num_classes):
    """Mean over occurring classes of ``TP / (TP + FP + FN)``."""
    return mean_iou_from_confusion(confusion_matrix(labels, predictions, num_classes))


def mean_iou_from_confusion(confusion):
    """`mean_iou` of a (summed) ``confusion_matrix``: 0.0 if it counts nothing."""
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else 0.0
