"""Metrics and fine-tuning helpers against independent references (loops, Keras MeanIoU)."""

import keras
import numpy as np
import pytest

from examples import finetune as finetune_examples
from kronecker_zoo import evaluation, metrics
from training.evaluate import evaluate_published


def test_confusion_matrix_counts_every_pair():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 5, (7, 9)), rng.integers(0, 5, (7, 9))
    expected = np.zeros((5, 5), int)
    for t, p in zip(labels.ravel(), preds.ravel()):
        expected[t, p] += 1
    np.testing.assert_array_equal(metrics.confusion_matrix(labels, preds, 5), expected)
    np.testing.assert_array_equal(metrics.confusion_matrix(labels, preds, np.int64(5)),
                                  expected)
    for num_classes in (None, 5.5, 0, True):  # was a NumPy TypeError or a wrong count
        with pytest.raises(ValueError, match="num_classes"):
            metrics.confusion_matrix(labels, preds, num_classes)


@pytest.mark.parametrize("seed", range(4))
def test_mean_iou_matches_keras_mean_iou(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, (3, 16, 16))
    preds = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, 6, labels.shape))
    preds[preds == 5] = 4  # class 5 never predicted
    labels[labels == 3] = 2  # class 3 never true
    if seed == 0:  # class 0 absent from both: not averaged in
        labels[labels == 0], preds[preds == 0] = 1, 1
    reference = keras.metrics.MeanIoU(6)
    reference.update_state(labels, preds)
    assert metrics.mean_iou(labels, preds, 6) == pytest.approx(float(reference.result()),
                                                               abs=1e-6)
    # batch by batch: summed confusion matrices give the whole set's mean IoU
    summed = sum(metrics.confusion_matrix(t, p, 6) for t, p in zip(labels, preds))
    assert metrics.mean_iou_from_confusion(summed) == pytest.approx(
        float(reference.result()), abs=1e-6)
    assert evaluation.mean_iou is metrics.mean_iou  # the documented path keeps working


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match=r"differ in shape: \(3,\) vs \(4,\)"):
        metrics.confusion_matrix(np.zeros(3, int), np.zeros(4, int), 2)
    # same size, other layout (e.g. transposed masks): not flattened into a wrong score
    with pytest.raises(ValueError, match=r"differ in shape: \(1, 2, 3\) vs \(1, 3, 2\)"):
        metrics.mean_iou(np.zeros((1, 2, 3), int), np.zeros((1, 3, 2), int), 2)
    # soft labels or scores are not class ids (they were truncated: 1.7 scored as 1)
    for bad in (np.array([0.0, 1.7]), np.array([0.0, np.nan]), np.array(["a", "b"])):
        with pytest.raises(ValueError, match="labels must be integer class ids"):
            metrics.confusion_matrix(bad, np.zeros(2, int), 2)
    assert metrics.confusion_matrix(np.array([0.0, 1.0]), np.array([1, 1]), 2).tolist() == [
        [0, 1], [0, 1]]  # whole-number floats are class ids
    assert metrics.confusion_matrix(np.array([False, True]), np.array([1, 1]), 2).tolist() == [
        [0, 1], [0, 1]]  # and booleans: 0 / 1 (masks of a one-object model)
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 2\)"):
        metrics.confusion_matrix(np.zeros(3, int), np.array([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="No test set known"):
        evaluate_published("resnet_8", "imagenet")
    for bad in (0, 10_001, 2.5, True):
        with pytest.raises(ValueError, match=r"num_examples must be an int in \[1, 10000\]"):
            evaluate_published("resnet_8", "fashion_mnist", num_examples=bad)


def test_evaluate_scores_a_model_whose_answers_are_known():
    # A model that predicts class (pixel > 127) per pixel, and one global label.
    inputs = keras.Input((8, 8, 1))
    logits = keras.layers.Concatenate()([128.0 - inputs, inputs - 127.5])
    model = keras.Model(inputs, logits)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (5, 8, 8, 1)).astype("uint8")
    y = (x[..., 0] > 127).astype(int)
    y[0, 0, :] = 1 - y[0, 0, :]  # 8 wrong pixels
    result = evaluation.evaluate(model, x, y)
    assert result["accuracy"] == pytest.approx(1 - 8 / y.size)
    assert result["miou"] == pytest.approx(
        evaluation.mean_iou(y, (x[..., 0] > 127).astype(int), 2))


def _pixel_model():
    """Per-pixel class (pixel > 127) as two logits; input (8, 8, 1)."""
    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, keras.layers.Concatenate()([128.0 - inputs, inputs - 127.5]))


def _class_model():
    """Class 1 if the image's mean pixel is > 127, else 0; input (8, 8, 1)."""
    inputs = keras.Input((8, 8, 1))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Concatenate()([128.0 - mean, mean - 127.5]))


def _no_predict(monkeypatch, model):
    def predict(*args, **kwargs):
        raise AssertionError("predict ran before the inputs were checked")
    monkeypatch.setattr(model, "predict", predict)
    return model


@pytest.mark.parametrize("make,label_shape,match", [
    (_class_model, (50,), "differ in length: 100 images vs 50 labels"),
    (_pixel_model, (50, 8, 8), "differ in length: 100 images vs 50 labels"),
    (_pixel_model, (100, 8, 7), r"labels of shape \(100, 8, 7\) do not match"),
    (_pixel_model, (100,), r"labels of shape \(100,\) do not match"),
    (_class_model, (100, 8, 8), r"labels of shape \(100, 8, 8\) do not match"),
    (_class_model, (100, 3), r"labels of shape \(100, 3\) do not match"),
])
def test_evaluate_checks_labels_before_predicting(monkeypatch, make, label_shape, match):
    model = _no_predict(monkeypatch, make())
    x = np.zeros((100, 8, 8, 1), "uint8")
    with pytest.raises(ValueError, match=match):
        evaluation.evaluate(model, x, np.zeros(label_shape, int))


@pytest.mark.parametrize("image_shape", [(10, 8, 9, 1), (10, 8, 8, 3), (10, 64)])
def test_evaluate_checks_images_before_predicting(monkeypatch, image_shape):
    model = _no_predict(monkeypatch, _class_model())
    with pytest.raises(ValueError, match=r"do not fit the model's input shape \(None, 8, 8, 1\)"):
        evaluation.evaluate(model, np.zeros(image_shape, "uint8"), np.zeros(10, int))


def test_evaluate_accepts_column_labels_and_channelless_images():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (20, 8, 8, 1)).astype("uint8")
    y = (x.mean(axis=(1, 2, 3)) > 127).astype(int)
    y[:5] = 1 - y[:5]  # 5 of 20 wrong
    model = _class_model()
    # (N, 1) labels must not broadcast against (N,) predictions into an (N, N) comparison.
    assert evaluation.evaluate(model, x, y[:, None])["accuracy"] == pytest.approx(0.75)
    assert evaluation.evaluate(model, x[..., 0], y)["accuracy"] == pytest.approx(0.75)
    seg_y = (x[..., 0] > 127).astype(int)
    result = evaluation.evaluate(_pixel_model(), x, seg_y[..., None])
    assert result["accuracy"] == 1.0 and result["miou"] == 1.0


def test_evaluate_refuses_labels_a_model_cannot_predict(monkeypatch):
    x = np.random.default_rng(3).integers(0, 256, (20, 8, 8, 1)).astype("uint8")
    y = (x.mean(axis=(1, 2, 3)) > 127).astype(int)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\) for a model with 2 "
                                         r"classes; got \[1, 2\]"):
        evaluation.evaluate(_class_model(), x, y + 1)  # 1-based ids
    with pytest.raises(ValueError, match="labels must be integer class ids"):
        evaluation.evaluate(_no_predict(monkeypatch, _class_model()), x, y + 0.3)
    inputs = keras.Input((8, 8, 1))
    sigmoid = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.GlobalAveragePooling2D()(inputs)))
    with pytest.raises(ValueError, match="1 score per example.*not a single sigmoid"):
        evaluation.evaluate(sigmoid, x, y)


def test_evaluate_refuses_images_scaled_for_a_zoo_model(monkeypatch):
    """A zoo model normalises raw pixels itself: [0, 1] images gave a near-chance
    accuracy without a word."""
    from kronecker_zoo import models

    model = _no_predict(monkeypatch, models.get("resnet_8", weights=None))
    x = np.random.default_rng(4).integers(0, 256, (8, 28, 28, 1)).astype("float32")
    for scaled, shown in ((x / 255.0, r"\[0, 1\]"), (x / 127.5 - 1, r"\[-1, 1\]")):
        with pytest.raises(ValueError, match=r"images cannot be what the model sees: they lie "
                                             r"in .*as if scaled to .*raw pixels in \[0, 255\]"):
            evaluation.evaluate(model, scaled, np.zeros(8, int))
    with pytest.raises(ValueError, match=r"outside the \[0, 255\] raw pixels"):
        evaluation.evaluate(model, x * 4, np.zeros(8, int))
    monkeypatch.undo()
    result = evaluation.evaluate(model, x, np.zeros(8, int))  # raw pixels: evaluated
    assert 0.0 <= result["accuracy"] <= 1.0
    dark = np.minimum(x, 1).astype("uint8")  # 8-bit images that happen to be dark: raw
    result = evaluation.evaluate(model, dark, np.zeros(8, int))
    assert 0.0 <= result["accuracy"] <= 1.0
    # a user's model without the zoo's Rescaling: its range is unknown, nothing refused
    assert evaluation.evaluate(_class_model(), x[:, :8, :8] / 255.0, np.zeros(8, int))[
        "accuracy"] == 1.0


def test_trivial_baselines_refuse_scaled_images_for_a_raw_pixel_threshold():
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[:, :2] = 3
    images = np.where(masks > 0, 200, 0).astype(np.uint8)
    raw = evaluation.trivial_segmentation_baselines(images, masks, 4)
    assert raw["threshold"] == 1.0  # the bright pixels are exactly class 3
    with pytest.raises(ValueError, match=r"as if scaled to \[0, 1\], but threshold=32"):
        evaluation.trivial_segmentation_baselines(images / 255.0, masks, 4)
    scaled = evaluation.trivial_segmentation_baselines(images / 255.0, masks, 4,
                                                       threshold=32 / 255)
    assert scaled == raw


def test_foreground_iou_by_hand():
    true = np.zeros((2, 4, 4), int)
    pred = np.zeros((2, 4, 4), int)
    true[0, :2, :2] = 1  # 4 px
    pred[0, :2, :3] = 3  # 6 px, 4 shared; any non-zero label is foreground
    assert finetune_examples.foreground_iou(true, pred) == pytest.approx(4 / 6)
    assert finetune_examples.foreground_iou(true * 0, pred * 0) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        finetune_examples.foreground_iou(true, pred[:1])


def test_dihedral_augment_gives_the_eight_orientations_with_matching_masks():
    rng = np.random.default_rng(2)
    masks = rng.integers(0, 2, (3, 5, 5)).astype("uint8")
    images = (masks * 200 + rng.integers(0, 50, masks.shape)).astype("uint8")[..., None]
    x, y = finetune_examples.dihedral_augment(images, masks)
    assert x.shape == (24, 5, 5, 1) and y.shape == (24, 5, 5)
    np.testing.assert_array_equal(x[..., 0] >= 200, y.astype(bool))  # moved together
    for i in range(3):
        orientations = {x[k * 3 + i, ..., 0].tobytes() for k in range(8)}
        assert len(orientations) == 8  # a random 5x5 image has no symmetry
        expected = {np.rot90(m, k).tobytes() for m in (images[i, ..., 0], images[i, :, ::-1, 0])
                    for k in range(4)}
        assert orientations == expected
    with pytest.raises(ValueError, match="square"):
        finetune_examples.dihedral_augment(images[:, :4], masks[:, :4])
