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


def _small_classifier(seed, first=None, classes=5, input_dtype="float32"):
    """A tiny CNN on 8x8x3 raw pixels; ``first``: its first layer (a normalisation)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), dtype=input_dtype)
    x = (first or keras.layers.Rescaling(1 / 255.0))(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x))


def test_verify_fails_an_int8_file_whose_logits_are_off_though_their_argmax_agrees(tmp_path):
    """Logits scaled by 1/100 keep every argmax: agreement alone would pass the file."""
    model = _small_classifier(0)
    scaled = _small_classifier(0)
    kernel, bias = scaled.layers[-1].get_weights()
    scaled.layers[-1].set_weights([kernel / 100, bias / 100])
    path = to_tflite(scaled, tmp_path / "scaled.tflite", quantization="int8",
                     representative_data=IMAGES)
    report = verify_tflite(model, path, IMAGES)
    assert report.agreement == 1.0
    assert report.sqnr_db < 1 and report.min_sqnr_db == 15.0 and not report.passed
    assert "threshold 15 dB" in str(report)
    own = verify_tflite(scaled, path, IMAGES)  # the file against its own model passes
    assert own.passed and own.sqnr_db >= 15.0


def test_verify_names_a_file_with_another_output_shape(tmp_path):
    path = to_tflite(_small_classifier(0, classes=3), tmp_path / "three.tflite")
    with pytest.raises(ValueError, match=r"output has shape \(3,\).*model's \(5,\)"):
        verify_tflite(_small_classifier(0, classes=5), path, IMAGES)


def test_int8_calibration_reads_an_endless_dataset_up_to_its_limit(tmp_path):
    import tensorflow as tf

    from kronecker_zoo.export import representative_batches

    model = _small_classifier(0)
    endless = tf.data.Dataset.from_tensor_slices((IMAGES, np.zeros(32))).batch(8).repeat()
    with pytest.warns(UserWarning, match="first 40 examples"):
        batches = list(representative_batches(endless, (4, 8, 8, 3), 40))
    assert len(batches) == 10
    np.testing.assert_array_equal(np.concatenate(batches), np.concatenate([IMAGES, IMAGES[:8]]))
    assert len(list(representative_batches(IMAGES, (4, 8, 8, 3), None))) == 8  # all
    with pytest.warns(UserWarning, match="first 16 examples"):
        path = to_tflite(model, tmp_path / "endless.tflite", quantization="int8",
                         representative_data=endless, max_calibration_examples=16)
    assert verify_tflite(model, path, IMAGES).passed
    with pytest.raises(ValueError, match="max_calibration_examples"):
        to_tflite(model, tmp_path / "zero.tflite", quantization="int8",
                  representative_data=IMAGES, max_calibration_examples=0)


def test_int8_calibration_takes_the_converters_list_form_and_names_text_input():
    from kronecker_zoo.export import representative_batches

    def converter_style():  # as tf.lite.TFLiteConverter.representative_dataset yields
        for start in range(0, 32, 8):
            yield [IMAGES[start:start + 8]]

    batches = list(representative_batches(converter_style, (8, 8, 8, 3)))
    np.testing.assert_array_equal(np.concatenate(batches), IMAGES)
    with pytest.raises(ValueError, match="representative_data must hold numeric images"):
        list(representative_batches(np.full((2, 8, 8, 3), "pixel"), (1, 8, 8, 3)))


@pytest.mark.parametrize("first, takes_bytes", [
    (keras.layers.Rescaling(1 / 255.0), True),
    (keras.layers.Rescaling(1 / 127.5, offset=-1.0), True),
    (keras.layers.Rescaling(2.0), False),
    (keras.layers.Identity(), False),
])
def test_a_user_model_normalising_bytes_refuses_calibration_images_scaled_to_unit(
        tmp_path, first, takes_bytes):
    from kronecker_zoo.export import model_input_range

    model = _small_classifier(0, first=first)
    assert model_input_range(model) == ((0.0, 255.0) if takes_bytes else None)
    unit = IMAGES / 255.0
    if takes_bytes:
        with pytest.raises(ValueError, match=r"as if scaled to \[0, 1\]"):
            to_tflite(model, tmp_path / "unit.tflite", quantization="int8",
                      representative_data=unit)
        assert not (tmp_path / "unit.tflite").exists()
    else:  # nothing to tell the range by: taken as given
        to_tflite(model, tmp_path / "unit.tflite", quantization="int8",
                  representative_data=unit)


def test_a_uint8_input_model_exports_a_float32_file_read_as_float32(tmp_path):
    import warnings

    from kronecker_zoo.export import tflite_io, tflite_quantization

    model = _small_classifier(0, input_dtype="uint8")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "the converter wrote int8"
        info = to_tflite(model, tmp_path / "u8.tflite")
    assert info.quantization == tflite_quantization(info.path) == "float32"
    assert tflite_io(info.path)["input"] == ((1, 8, 8, 3), "FLOAT32")
    pixels = IMAGES.astype("uint8")
    report = verify_tflite(model, info.path, pixels)
    assert report.max_rel_error == 1e-4 and report.passed
