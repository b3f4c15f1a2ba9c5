"""Exporting users' own models (not zoo ones) to LiteRT: a binary classifier with one
output unit, a mixed-precision model, a model with two outputs. Each file is checked
against the Keras model it came from, output by output."""

import keras
import numpy as np
import pytest

from kronecker_zoo.export import run_tflite, to_tflite, verify_tflite
from kronecker_zoo.layers import KroneckerConv2D

IMAGES = np.random.default_rng(0).uniform(0, 255, (32, 8, 8, 3)).astype("float32")


def _binary_classifier(seed, bias):
    """A sigmoid unit whose bias decides every answer (all no for -20, all yes for 20)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs / 255.0)
    x = keras.layers.GlobalAveragePooling2D()(x)
    unit = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, unit(x))
    unit.bias.assign([bias])
    return model


def test_a_single_output_unit_is_verified_by_its_decision(tmp_path):
    """argmax over one unit is always 0: a file of another model must still fail."""
    yes, no = _binary_classifier(1, 20.0), _binary_classifier(0, -20.0)
    assert (yes.predict(IMAGES, verbose=0) > 0.5).all()
    assert (no.predict(IMAGES, verbose=0) < 0.5).all()
    path = to_tflite(yes, tmp_path / "yes.tflite", quantization="int8",
                     representative_data=IMAGES)
    assert verify_tflite(yes, path, IMAGES).passed
    wrong = verify_tflite(no, path, IMAGES)
    assert wrong.agreement == 0.0 and not wrong.passed
    labels = np.ones(len(IMAGES), np.int64)
    report = verify_tflite(yes, path, IMAGES, labels)
    assert report.keras_accuracy == report.tflite_accuracy == 1.0


def test_a_mixed_precision_model_exports_computing_in_float32(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((8, 8, 3))
        x = KroneckerConv2D(8, 9, factors=[(3, 3, 1, 2), (3, 3, 3, 4)], rank=2)(inputs / 255.0)
        x = keras.layers.BatchNormalization()(x)
        block = keras.Sequential([keras.Input((8, 8, 8)),
                                  keras.layers.Conv2D(8, 3, padding="same", name="inner")],
                                 name="block")
        x = keras.layers.GlobalAveragePooling2D()(block(keras.layers.ReLU()(x)))
        model = keras.Model(inputs, keras.layers.Dense(5, dtype="float32")(x))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for quantization, data in ((None, None), ("int8", IMAGES)):
        path = to_tflite(model, tmp_path / f"{quantization}.tflite", quantization=quantization,
                         representative_data=data)
        assert verify_tflite(model, path, IMAGES).passed
    assert model.get_layer("block").get_layer("inner").dtype_policy.name == "mixed_float16"
    # the float32 file equals the model run in float32 (its variables' precision)
    reference = keras.models.clone_model(
        model, clone_function=lambda layer: layer.__class__.from_config(
            {**layer.get_config(), **({"dtype": "float32"} if "dtype" in layer.get_config()
                                      else {})}), recursive=True)
    reference.set_weights(model.get_weights())
    expected = reference.predict(IMAGES, verbose=0)
    got = run_tflite(tmp_path / "None.tflite", IMAGES)
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_a_model_with_two_outputs_exports_each_in_order(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs / 255.0))
    late = keras.layers.Dense(7, name="late")(keras.layers.GlobalAveragePooling2D()(x))
    early = keras.layers.Conv2D(2, 1, name="early")(inputs / 255.0)
    model = keras.Model(inputs, [late, early])
    expected = model.predict(IMAGES, verbose=0)
    for quantization, data, tolerance in ((None, None, 1e-5), ("int8", IMAGES, 0.05)):
        path = to_tflite(model, tmp_path / f"{quantization}.tflite", quantization=quantization,
                         representative_data=data)  # int8: "auto" compares both outputs
        got = run_tflite(path, IMAGES)
        assert [g.shape for g in got] == [e.shape for e in expected]
        for g, e in zip(got, expected):
            assert np.abs(g - e).max() <= tolerance * np.abs(e).max()
        with pytest.raises(ValueError, match="compares files with one output.*has 2"):
            verify_tflite(model, path, IMAGES)
