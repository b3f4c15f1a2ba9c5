"""Export (issue 5): LiteRT files and XLA SavedModels, checked against independent references.

References: the Keras model itself (as built, and with Kronecker layers materialised),
the pure-NumPy convolution of `tests/reference.py` (which imports nothing from the
library), and the .tflite flatbuffer read back op by op. Every registry model is
exported in float32 and int8 and run with the LiteRT interpreter on real test images.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kronecker_zoo import data, models
from kronecker_zoo.export import (
    FORBIDDEN_OPS,
    MIN_AGREEMENT,
    TFLiteOpsError,
    TFLiteRunner,
    benchmark_tflite,
    calibration_images,
    check_calibration_range,
    check_tflite_ops,
    execution_layers,
    file_size_bound,
    forced_execution,
    int8_op_noise,
    model_input_range,
    pretraining_calibration_data,
    representative_batches,
    tflite_io,
    tflite_op_counts,
    tflite_ops_by_layer,
    tflite_ops,
    tflite_quantization,
    to_tflite,
    to_xla,
    verify_tflite,
)
from kronecker_zoo.export.int8_noise import ROUNDING_FLOOR_STEPS, int8_float_op_gain
from kronecker_zoo.export.runner import run_tflite
from kronecker_zoo.export.verify import sqnr_db
from kronecker_zoo.layers import KroneckerConv2D, LowRankConv2D
from tests import reference as ref
from tests import zoo_cases
from tflite import zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_EXAMPLES = 256  # test images per parity check (the full sets run in tflite/verify.py)
CALIBRATION_EXAMPLES = 64  # int8 calibration images in the per-model sweep (default: 256)
# Post-training int8 of the Kronecker ResNets passes only thanks to the int8 rewrites
# (BatchNormalization as a per-channel depthwise conv, range equalisation; see
# kronecker_zoo/export/int8_rewrites.py). Since rewrite 4 holds the raw pixels exactly (the
# zoo's x / 127.5 - 1 put every pixel half an int8 step off), measured on the full test set
# with 256 train calibration images, centred / as before (session 35): resnet_8 99.60 / 99.24%,
# resnet_20 99.69 / 99.50%, kron_resnet_8 99.05 / 98.96%, kron_resnet_20 99.09 / 99.10%,
# resnet_20_kron5x 99.39 / 98.89%, resnet_20_lowrank5x 99.36 / 99.00%, separable_resnet_8
# 99.10 / 98.65%, lowrank_resnet_8 99.17 / 99.23%, separable_resnet_20 98.98 / 99.05% (its
# 4-epoch weights; retrained in session 42, 99.32%, it passes the bar here and is not listed).
# On the 256 test images below, with only 64 calibration images, one flipped image is
# 0.39%: the models listed sit 3 images under the 99% bar there (issue 13), with their
# full-test-set agreement (256 train calibration images) next to them.
INT8_PTQ_SHORTFALL = {
                      # full test set 99.32% (99.18% before rewrite 4); 98.83% here
                      "resnet_20_kron10x_plain_e45_lowwd": 0.98,
                      # full test set 99.16% (99.09% before); 98.83% here
                      "resnet_8_lowrank5x": 0.98,
                      # full test set 99.50% (99.31% before); 98.83% here
                      "resnet_20_lowrank5x_plain": 0.98,
                      # full test set 99.01% (98.97% before); 98.83% here
                      "resnet_20_kron10x_lowmac_plain_e45_lowwd": 0.98}
# resnet_20_kron5x, under the 20 dB bar with 64 calibration images before rewrite 4
# (19.9 dB on these 256), is at 28.5 dB since: nothing listed.
INT8_SQNR_SHORTFALL_DB = {}
# Every int8 export: the quantization noise stays 20 dB below the logits.
INT8_MIN_SQNR_DB = 20.0
# Fresh (untrained) weights give near-tied logits, so argmax agreement measures rounding
# luck more than the export; for those only a sanity floor on agreement.
FRESH_INT8_MIN_AGREEMENT = 0.9


def _task(name):
    return models.spec(name).task


@pytest.fixture(scope="module")
def test_sets():
    (xc, yc), (xs, ys) = data.fashion_mnist("test"), data.fashion_scenes("test")
    return {"classification": (xc[:EVAL_EXAMPLES], yc[:EVAL_EXAMPLES]),
            "segmentation": (xs[:EVAL_EXAMPLES], ys[:EVAL_EXAMPLES])}


@pytest.fixture(scope="module")
def kron_resnet_8():
    return models.get("kron_resnet_8", weights="fashion_mnist")


def _assert_clean_ops(path):
    ops = tflite_ops(path)
    assert check_tflite_ops(path) == []
    assert not any(op.startswith("CUSTOM") or "Flex" in op for op in ops), ops
    assert not set(ops) & set(FORBIDDEN_OPS), ops
    return ops


# -- every registry model ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", models.list_models())
def test_every_model_exports_and_verifies_in_float32_and_int8(name, test_sets, tmp_path):
    tag = zoo.default_weights(name)
    model = zoo.load_model(name, tag)
    images, labels = test_sets[_task(name)]

    f32 = to_tflite(model, tmp_path / "f32.tflite")
    _assert_clean_ops(f32)
    assert tflite_quantization(f32) == "float32"
    assert f32.input_shape == (1,) + tuple(model.input_shape[1:])
    assert tflite_io(f32)["input"] == (f32.input_shape, "FLOAT32")
    assert os.path.getsize(f32) == f32.size_bytes <= file_size_bound(model.count_params())
    report = verify_tflite(model, f32, images, labels)
    assert report.passed, str(report)
    assert report.rel_error <= 1e-4 and report.agreement >= 0.99, str(report)
    assert report.task == _task(name) and report.num_examples == len(images)
    assert report.tflite_accuracy == pytest.approx(report.keras_accuracy, abs=0.01)

    calibration = zoo.calibration_set(name, tag, count=CALIBRATION_EXAMPLES)
    int8 = to_tflite(model, tmp_path / "int8.tflite", quantization="int8",
                     representative_data=calibration)
    ops = _assert_clean_ops(int8)
    assert tflite_quantization(int8) == "int8"
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(ops)  # float32 I/O around int8 internals
    assert tflite_io(int8)["input"][1] == "FLOAT32"
    assert int8.size_bytes < f32.size_bytes
    report = verify_tflite(model, int8, images, labels)
    print(f"\n{name} ({tag or 'fresh'}):\n{report}")
    assert report.min_agreement == MIN_AGREEMENT[_task(name)]
    assert report.sqnr_db >= INT8_SQNR_SHORTFALL_DB.get(name, INT8_MIN_SQNR_DB), str(report)
    if tag is None:
        assert report.agreement >= FRESH_INT8_MIN_AGREEMENT, str(report)
    elif name in INT8_PTQ_SHORTFALL:
        assert report.agreement >= INT8_PTQ_SHORTFALL[name], str(report)
    else:
        assert report.passed, str(report)
        assert report.tflite_accuracy >= report.keras_accuracy - 0.02, str(report)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kron_resnet_8", "kron_context_net_basic"])
@pytest.mark.parametrize("quantization", ["float16", "dynamic"])
def test_float16_and_dynamic_range_exports(name, quantization, test_sets, tmp_path):
    model = zoo.load_model(name)
    images, labels = test_sets[_task(name)]
    info = to_tflite(model, tmp_path / "m.tflite", quantization=quantization)
    _assert_clean_ops(info)
    assert tflite_quantization(info) == quantization == info.quantization
    report = verify_tflite(model, info, images, labels)
    assert report.passed, str(report)
    if quantization == "float16":
        assert report.max_rel_error == 1e-2 and report.rel_error <= 1e-2
        assert report.agreement >= 0.99
        # float16 weights: about half the float32 file
        assert info.size_bytes < 0.75 * to_tflite(model, tmp_path / "f.tflite").size_bytes


def _contained(images, pool):
    """Whether every image of ``images`` is one of ``pool``'s (compared byte for byte)."""
    known = {image.tobytes() for image in pool}
    return all(image.tobytes() in known for image in images)


def test_pretraining_calibration_data_comes_from_the_published_training_set():
    mnist = pretraining_calibration_data("resnet_8", "fashion_mnist")
    assert mnist.shape == (256, 28, 28, 1) and mnist.dtype == np.uint8
    train, test = data.fashion_mnist("train")[0], data.fashion_mnist("test")[0]
    assert _contained(mnist, train) and not _contained(mnist[:5], test)
    assert len({image.tobytes() for image in mnist}) == 256  # distinct examples
    assert mnist.max() > 200  # raw pixels, as the model takes them
    assert np.array_equal(pretraining_calibration_data("resnet_8", count=256), mnist)  # only tag
    scenes = pretraining_calibration_data("context_net_basic", "fashion_scenes", count=8)
    assert scenes.shape == (8, 64, 64, 1)
    assert _contained(scenes, data.fashion_scenes("train")[0])
    assert np.array_equal(calibration_images("fashion_scenes", 8), scenes)
    with pytest.raises(ValueError, match="No published 'imagenet' weights for 'resnet_8'"):
        pretraining_calibration_data("resnet_8", "imagenet")
    with pytest.raises(ValueError, match="Unknown model"):
        pretraining_calibration_data("resnet_9", "fashion_mnist")
    with pytest.raises(ValueError, match="'fashion_mnist', 'fashion_scenes'"):
        calibration_images("imagenet")
    with pytest.raises(ValueError, match="count"):
        calibration_images("fashion_mnist", count=0)
    held_out = pretraining_calibration_data("resnet_8", count=16, split="test")
    assert _contained(held_out, test) and not _contained(held_out[:5], train)
    assert np.array_equal(calibration_images("fashion_mnist", 16, split="test"), held_out)
    with pytest.raises(ValueError, match="Unknown split 'val'"):
        calibration_images("fashion_mnist", split="val")
    with pytest.raises(ValueError, match="has 10000 images; asked for 10001"):
        calibration_images("fashion_mnist", 10001, split="test")


def test_int8_calibration_is_never_guessed_from_the_model_name(tmp_path):
    # A registry name (as a fine-tuned zoo model keeps it) gets no default data either.
    model = models.get("resnet_8")
    with pytest.raises(ValueError, match="needs `representative_data`.*"
                                         "pretraining_calibration_data"):
        to_tflite(model, tmp_path / "m.tflite", quantization="int8")
    assert not (tmp_path / "m.tflite").exists()


def test_calibration_data_outside_the_model_input_range_is_refused(tmp_path):
    model = models.get("resnet_8")
    assert model_input_range(model) == models.spec("resnet_8").input_range == (0.0, 255.0)
    pixels = calibration_images("fashion_mnist", 16).astype("float32")
    check_calibration_range(model, [pixels])  # raw 0..255 pixels: accepted
    for wrong, message in [(pixels / 255.0, r"scaled to \[0, 1\]"),
                           (pixels / 127.5 - 1.0, r"scaled to \[0, 1\] or \[-1, 1\]"),
                           (pixels * 4.0, r"outside the \[0, 255\] raw pixels"),
                           (pixels - 128.0, r"outside the \[0, 255\]")]:
        with pytest.raises(ValueError, match=message):
            to_tflite(model, tmp_path / "m.tflite", quantization="int8",
                      representative_data=wrong)
    assert not (tmp_path / "m.tflite").exists()
    # Models without the zoo's pixel normalisation have no known range: not checked.
    plain = _dilated_model()
    assert model_input_range(plain) is None
    check_calibration_range(plain, [np.full((2, 16, 16, 4), 0.5, "float32")])


def test_int8_op_noise_sits_at_the_rounding_floor_and_finds_a_clipped_range(tmp_path):
    inputs = keras.Input((12, 12, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv_a")(inputs)
    outputs = keras.layers.Conv2D(3, 1, name="conv_b")(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).uniform(-1, 1, (64, 12, 12, 2)).astype("float32")
    path = to_tflite(model, tmp_path / "m.tflite", quantization="int8",
                     representative_data=images)
    noise = int8_op_noise(model, images, images[:16])
    assert [n.op for n in noise] == ["CONV_2D"] * 2
    assert tflite_op_counts(path) == {"QUANTIZE": 1, "CONV_2D": 2, "DEQUANTIZE": 1}
    # calibrated on the data it sees: rounding only (uniform error, 1/sqrt(12) of a step)
    for n in noise:
        assert 0.5 * ROUNDING_FLOOR_STEPS < n.rmse_steps < 1.5 * ROUNDING_FLOOR_STEPS, str(n)
    # calibrated on inputs 10x smaller than those measured: the first op clips
    clipped = int8_op_noise(model, images / 10, images[:16])
    assert clipped[0].rmse_steps > 10 * ROUNDING_FLOOR_STEPS, str(clipped[0])
    assert model.get_layer("conv_a").kernel.shape == (3, 3, 2, 6)  # the model untouched


def test_int8_float_op_gain_finds_the_op_whose_weights_round_worst(tmp_path):
    rng = np.random.default_rng(0)
    inputs = keras.Input((12, 12, 8))
    x = keras.layers.Conv2D(6, 3, padding="same", name="coarse")(inputs)
    outputs = keras.layers.Conv2D(3, 1, name="fine")(x)
    model = keras.Model(inputs, outputs)
    # one big tap per output channel: the small ones lose most of their bits in int8
    coarse = rng.normal(0, 0.01, (3, 3, 8, 6))
    coarse[1, 1, 0, :] = 1.0
    model.get_layer("coarse").kernel.assign(coarse.astype("float32"))
    # smooth weights, seeded (Keras' own initialisation is not: the margin below moved by
    # 3 dB from run to run with it)
    model.get_layer("fine").kernel.assign(rng.normal(0, 0.5, (1, 1, 6, 3)).astype("float32"))
    images = rng.uniform(-1, 1, (64, 12, 12, 8)).astype("float32")
    rows = int8_float_op_gain(model, images, images[:32])
    assert rows[0].op is None and [r.op for r in rows[1:]] == ["CONV_2D"] * 2
    assert ["coarse" in r.tensor for r in rows[1:]] == [True, False]
    assert rows[1].sqnr_db > rows[0].sqnr_db + 6  # the coarse conv in float: 4x less noise
    assert rows[1].sqnr_db > rows[2].sqnr_db + 6
    # the all-int8 row is the file to_tflite writes without bias correction (the
    # debugger calibrates on its own)
    path = to_tflite(model, tmp_path / "m.tflite", quantization="int8",
                     representative_data=images, bias_correction=False)
    reference = model.predict(images[:32], verbose=0)
    error = run_tflite(path, images[:32]) - reference
    sqnr = 10 * np.log10(np.mean(reference ** 2) / np.mean(error ** 2))
    assert rows[0].sqnr_db == pytest.approx(sqnr, abs=1.0)
    # a one-shot generator of calibration batches works as well as an array
    again = int8_float_op_gain(model, (images[i:i + 16] for i in range(0, 64, 16)),
                               images[:32])
    assert [r.tensor for r in again] == [r.tensor for r in rows]


def test_registry_input_range_is_what_the_models_normalise():
    for name in ("resnet_8", "kron_context_net_basic", "pool_segnet_small"):
        model = models.get(name)
        low, high = models.spec(name).input_range
        assert model_input_range(model) == (low, high)
        normalise = model.get_layer("normalize")
        ends = np.array([low, high], "float32").reshape(1, 1, 2, 1)
        np.testing.assert_allclose(np.asarray(normalise(ends)).ravel(), [-1.0, 1.0], atol=1e-6)


def test_representative_batches_fixed_batch_and_free_sizes():
    """Fixed-size batches from any split of the data; a None size takes the data's; a
    channel-less batch gains its axis; too few examples repeat; wrong shapes are named."""
    images = np.arange(5 * 10 * 12, dtype="float32").reshape(5, 10, 12)
    batches = list(representative_batches([images[:3], (images[3:], None)], (2, None, None, 1)))
    assert [b.shape for b in batches] == [(2, 10, 12, 1)] * 3  # the fifth image repeated
    np.testing.assert_array_equal(np.concatenate(batches)[..., 0], images[[0, 1, 2, 3, 4, 4]])
    (single,) = representative_batches(images[0], (4, 10, 12, 1))
    np.testing.assert_array_equal(single[..., 0], np.stack([images[0]] * 4))
    with pytest.raises(ValueError, match=r"shape \(10, 12, 3\)"):
        list(representative_batches(images, (2, 10, 12, 3)))
    with pytest.raises(ValueError, match="empty"):
        list(representative_batches([], (2, 10, 12, 1)))
    # (images, labels) as fit takes them: the labels are not a batch
    labels = np.arange(5)
    for got, want in zip(representative_batches((images, labels), (2, 10, 12, 1)), batches):
        np.testing.assert_array_equal(got, want)
    broken = images.copy()
    broken[3, 4, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(batch 1\)"):
        list(representative_batches([images[:3], broken[3:]], (2, 10, 12, 1)))


def _two_head_model():
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # dict keys out of sorted order: the file's outputs follow tf.nest (sorted keys)
    return keras.Model(inputs, {"zz": keras.layers.Dense(3)(x), "aa": keras.layers.Dense(4)(x)})


def test_int8_export_of_dict_outputs_in_sorted_key_order(tmp_path):
    """The default int8 export ("auto" bias correction, "mse" output ranges) of a model
    with dict outputs: one file output per key, by sorted key, each close to Keras'."""
    model = _two_head_model()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (64, 12, 12, 1)).astype("float32")
    info = to_tflite(model, tmp_path / "dict.tflite", quantization="int8",
                     representative_data=images)
    assert info.quantization == "int8"
    got = run_tflite(info, images[:16])
    expected = model(images[:16])
    assert [g.shape for g in got] == [(16, 4), (16, 3)]  # "aa", then "zz"
    for key, outputs in zip(sorted(expected), got):
        assert sqnr_db(np.asarray(expected[key]), outputs) > 25.0, key


def test_non_finite_calibration_data_is_refused_before_conversion(tmp_path):
    model = _two_head_model()
    images = np.full((8, 12, 12, 1), 100.0, "float32")
    images[0, 0, 0, 0] = np.nan
    for output_range in ("minmax", "mse"):
        for correction in (False, True, "auto"):
            with pytest.raises(ValueError, match="NaN or inf"):
                to_tflite(model, tmp_path / "nan.tflite", quantization="int8",
                          representative_data=images, output_range=output_range,
                          bias_correction=correction)
    assert not (tmp_path / "nan.tflite").exists()


def test_dynamic_range_on_a_model_too_small_to_quantize_says_so(tmp_path):
    """The converter leaves weight tensors under 1,024 elements in float: the export
    says the file is float32, and warns."""
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    with pytest.warns(UserWarning, match="asked for 'dynamic'.*'float32'"):
        info = to_tflite(model, tmp_path / "small.tflite", quantization="dynamic",
                         batch_size=np.int64(2))
    assert info.quantization == tflite_quantization(info) == "float32"
    assert info.input_shape == (2, 6)
    with pytest.raises(ValueError, match="`quantization` must be one of"):
        verify_tflite(model, info, np.zeros((2, 6), "float32"), quantization="int4")
    with pytest.raises(FileNotFoundError, match="No .tflite file at"):
        verify_tflite(model, tmp_path / "missing.tflite", np.zeros((2, 6), "float32"))


def test_int8_with_pretraining_calibration_and_user_batches(test_sets, tmp_path):
    model = models.get("resnet_8", weights="fashion_mnist")
    images, labels = test_sets["classification"]
    info = to_tflite(model, tmp_path / "a.tflite", quantization="int8",
                     representative_data=pretraining_calibration_data("resnet_8",
                                                                      "fashion_mnist"))
    report = verify_tflite(model, info, images, labels)
    assert report.quantization == "int8", str(report)
    assert report.passed, str(report)  # 99.6% on the full test set (rewrite 4)
    assert report.tflite_accuracy >= report.keras_accuracy - 0.01, str(report)
    # an iterable of (images, labels) batches without the channel axis, batch_size 4
    train_x, train_y = data.fashion_mnist("train")
    batches = [(train_x[i:i + 10, ..., 0], train_y[i:i + 10]) for i in range(0, 100, 10)]
    info = to_tflite(model, tmp_path / "b.tflite", quantization="int8",
                     representative_data=batches, batch_size=4)
    assert info.input_shape == (4, 28, 28, 1)
    report = verify_tflite(model, info, images[:10], labels[:10])  # 10 = 4 + 4 + 2 padded
    assert report.num_examples == 10 and report.batch_size == 4
    assert report.agreement >= 0.9


# -- factored export vs independent references --------------------------------------------


def _kron_layer_model(padding="same", padding_mode="zeros", strides=1, size=12, seed=0):
    inputs = keras.Input((size, size, 16))
    outputs = KroneckerConv2D(16, 9, factors=[(3, 3, 4, 4), (3, 3, 4, 4)], rank=2,
                              strides=strides, padding=padding, padding_mode=padding_mode,
                              execution="materialized", name="kron")(inputs)
    model = keras.Model(inputs, outputs, name="kron_layer")
    rng = np.random.default_rng(seed)
    model.set_weights([(0.3 * rng.standard_normal(w.shape)).astype("float32")
                       for w in model.get_weights()])
    return model


@pytest.mark.parametrize("padding, padding_mode, strides", [
    ("same", "zeros", 1), ("same", "reflect", 2), ("valid", "zeros", 1)])
def test_factored_tflite_matches_numpy_reference_convolution(padding, padding_mode, strides,
                                                             tmp_path):
    """The layer is built materialised; the export must run it factored anyway and still
    equal conv2d(x, sum_r kron(F0[r], F1[r])) + b from the NumPy oracle, borders included."""
    model = _kron_layer_model(padding, padding_mode, strides)
    layer = model.get_layer("kron")
    info = to_tflite(model, tmp_path / "k.tflite")
    assert layer.resolved_execution == "materialized"  # restored after tracing
    counts = tflite_op_counts(info)
    assert counts["CONV_2D"] == 2  # inner and outer factor, not one 9x9 convolution
    x = np.random.default_rng(1).uniform(-2, 2, (3, 12, 12, 16)).astype("float32")
    got = TFLiteRunner(info)(x)
    factors = [np.asarray(f) for f in layer.factor_weights]
    expected = ref.conv2d(x, ref.kron_kernel(factors), strides=strides, padding=padding,
                          padding_mode=padding_mode) + np.asarray(layer.bias)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))


def test_factored_file_is_small_and_materialised_would_be_far_bigger(tmp_path):
    model = _kron_layer_model()
    params = model.count_params()  # 2 * 2 * 3*3*4*4 + 16 = 592
    dense_params = 9 * 9 * 16 * 16
    factored = to_tflite(model, tmp_path / "f.tflite")
    materialized = to_tflite(model, tmp_path / "m.tflite", execution="materialized")
    assert factored.size_bytes <= file_size_bound(params)
    assert materialized.size_bytes >= 4 * dense_params > 5 * factored.size_bytes
    assert tflite_op_counts(materialized)["CONV_2D"] == 1


@pytest.mark.slow
def test_kron_resnet_export_equals_materialised_keras_model(kron_resnet_8, test_sets,
                                                            tmp_path):
    images, labels = test_sets["classification"]
    factored = to_tflite(kron_resnet_8, tmp_path / "f.tflite")
    report = verify_tflite(kron_resnet_8, factored, images, labels,
                           reference_execution="materialized")
    assert report.passed and report.rel_error <= 1e-4, str(report)
    kron_layers = execution_layers(kron_resnet_8)
    assert len(kron_layers) == 6 and all(isinstance(k, KroneckerConv2D) for k in kron_layers)
    assert {k.resolved_execution for k in kron_layers} == {"factored"}
    params = kron_resnet_8.count_params()
    assert factored.size_bytes <= file_size_bound(params)
    materialized = to_tflite(kron_resnet_8, tmp_path / "m.tflite", execution="materialized")
    dense_kernels = sum(k.dense_equivalent_params() for k in kron_layers)
    assert materialized.size_bytes >= 4 * dense_kernels > 10 * factored.size_bytes
    assert "TRANSPOSE" in factored.ops and "TRANSPOSE" not in materialized.ops


@pytest.mark.parametrize("fails", [False, True])
def test_export_never_touches_the_users_model(fails, test_sets, tmp_path, monkeypatch):
    """While the converter runs (and after, even when it fails), the user's model keeps
    its executions, its BatchNormalization calls and its weights bit for bit."""
    model = models.get("kron_resnet_8", weights="fashion_mnist", execution="materialized")
    krons = [layer for layer in model.layers if isinstance(layer, KroneckerConv2D)]
    bns = [layer for layer in model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    weights = [np.array(w) for w in model.weights]
    images = test_sets["classification"][0][:8]
    expected = np.asarray(model(images.astype("float32"), training=False))
    convert = tf.lite.TFLiteConverter.convert
    seen = []

    def checked_convert(self):
        assert {k.resolved_execution for k in krons} == {"materialized"}
        assert not any("call" in vars(bn) for bn in bns)  # no rewritten call
        for w, before in zip(model.weights, weights):
            np.testing.assert_array_equal(np.array(w), before)
        seen.append(True)
        if fails:
            raise RuntimeError("converter failed")
        return convert(self)

    monkeypatch.setattr(tf.lite.TFLiteConverter, "convert", checked_convert)
    calibration = zoo.calibration_set("kron_resnet_8", "fashion_mnist", count=16)
    if fails:
        with pytest.raises(RuntimeError, match="converter failed"):
            to_tflite(model, tmp_path / "m.tflite", quantization="int8",
                      representative_data=calibration)
    else:
        to_tflite(model, tmp_path / "m.tflite", quantization="int8",
                  representative_data=calibration)
    assert seen
    assert {k.resolved_execution for k in krons} == {"materialized"}
    assert not any("call" in vars(bn) for bn in bns)
    for w, before in zip(model.weights, weights):
        np.testing.assert_array_equal(np.array(w), before)
    np.testing.assert_array_equal(np.asarray(model(images.astype("float32"), training=False)),
                                  expected)


def test_forced_execution_restores_even_on_error():
    model = _kron_layer_model()
    layer = model.get_layer("kron")
    with pytest.raises(RuntimeError):
        with forced_execution(model, "factored") as switched:
            assert switched == [layer] and layer.resolved_execution == "factored"
            raise RuntimeError("boom")
    assert layer.resolved_execution == "materialized"
    with forced_execution(model, "as_built") as switched:
        assert switched == []
    with pytest.raises(ValueError, match="'factored', 'materialized', 'as_built'"):
        with forced_execution(model, "fast"):
            pass


def test_tf_keras_model_is_accepted(tmp_path):
    from kronecker_zoo import tf_keras_bridge as bridge

    model = _kron_layer_model()
    twin = bridge.to_tf_keras(model)
    assert [k.name for k in execution_layers(twin)] == ["kron"]
    info = to_tflite(twin, tmp_path / "t.tflite")
    assert tflite_op_counts(info)["CONV_2D"] == 2  # factored through the bridge too
    x = np.random.default_rng(2).uniform(-2, 2, (5, 12, 12, 16)).astype("float32")
    for reference in (model, twin):
        report = verify_tflite(reference, info, x, task="segmentation")
        assert report.passed and report.rel_error <= 1e-4, str(report)


# -- op checks ---------------------------------------------------------------------------


def _dilated_model():
    inputs = keras.Input((16, 16, 4))
    x = keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, x, name="dilated")


def test_dynamic_batch_would_bring_space_to_batch_and_fixed_batch_does_not(tmp_path):
    model = _dilated_model()
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec((None, 16, 16, 4), tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()],
                                                                model)
    converter.experimental_lower_to_saved_model = False
    dynamic = tmp_path / "dynamic.tflite"
    dynamic.write_bytes(converter.convert())
    assert {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} <= set(tflite_ops(dynamic))
    with pytest.raises(TFLiteOpsError, match="SPACE_TO_BATCH_ND"):
        check_tflite_ops(dynamic)
    assert check_tflite_ops(dynamic, raise_error=False) == ["BATCH_TO_SPACE_ND",
                                                             "SPACE_TO_BATCH_ND"]
    fixed = to_tflite(model, tmp_path / "fixed.tflite", batch_size=2)
    assert tflite_ops(fixed) == ["CONV_2D"]  # one dilated conv, ReLU fused


def test_flex_ops_are_reported(tmp_path):
    fn = tf.function(lambda x: tf.linalg.det(x),
                     input_signature=[tf.TensorSpec((1, 3, 3), tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    path = tmp_path / "flex.tflite"
    path.write_bytes(converter.convert())
    bad = check_tflite_ops(path, raise_error=False)
    assert bad and all(op.startswith("CUSTOM:Flex") for op in bad), bad
    with pytest.raises(TFLiteOpsError, match="Flex"):
        check_tflite_ops(path)
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        tflite_ops(__file__)


# -- refusals and bad arguments ----------------------------------------------------------


def test_existing_files_and_directories_are_not_overwritten(tmp_path):
    model = _dilated_model()
    path = tmp_path / "m.tflite"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        to_tflite(model, path)
    assert path.read_bytes() == b"precious"
    info = to_tflite(model, path, overwrite=True)
    assert os.fspath(info) == str(path) and path.read_bytes()[4:8] == b"TFL3"
    folder = tmp_path / "xla"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        to_xla(model, folder)
    assert os.listdir(folder) == ["keep.txt"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_bad_arguments_name_the_problem(tmp_path):
    model = _dilated_model()
    out = tmp_path / "x.tflite"
    cases = [
        (dict(quantization="int4"), "'float16', 'dynamic'"),
        (dict(quantization="float16", representative_data=np.zeros((2, 16, 16, 4))),
         "only used with quantization='int8'"),
        (dict(quantization="int8"), "needs `representative_data`"),
        (dict(quantization="int8", representative_data=np.zeros((2, 8, 8, 4))),
         r"shape \(16, 16, 4\)"),
        (dict(quantization="int8", representative_data=np.zeros((0, 16, 16, 4))), "empty"),
        (dict(quantization="int8", representative_data=5), "representative_data must be"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=True), "batch_size"),
        (dict(execution="fast"), "'factored', 'materialized', 'as_built'"),
        (dict(overwrite="yes"), "overwrite"),
        (dict(input_shape=(8, 8)), "input_shape"),
        (dict(input_shape=(8, 8, 4)), "disagrees"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            to_tflite(model, out, **kwargs)
    assert not out.exists()
    with pytest.raises(ValueError, match="directory"):
        to_tflite(model, tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_tflite(model, tmp_path / "missing" / "x.tflite")
    # unknown spatial size: refused without input_shape, fine with it
    fcn = models.get("dilated_fcn_small", input_shape=(None, None, 1))
    with pytest.raises(ValueError, match="input_shape=\\(H, W, C\\)"):
        to_tflite(fcn, out)
    info = to_tflite(fcn, out, input_shape=(32, 32, 1))
    assert info.input_shape == (1, 32, 32, 1)
    with pytest.raises(ValueError, match="task"):
        verify_tflite(fcn, info, np.zeros((2, 32, 32, 1)), task="detection")
    with pytest.raises(ValueError, match="to match the file's input"):
        verify_tflite(fcn, info, np.zeros((2, 28, 28, 1)))
    with pytest.raises(ValueError, match="labels"):
        verify_tflite(fcn, info, np.zeros((2, 32, 32, 1)), labels=np.zeros((3, 32, 32)))
    with pytest.raises(ValueError, match="num_threads"):
        TFLiteRunner(info, num_threads=0)
    with pytest.raises(FileExistsError):
        to_xla(fcn, tmp_path)  # holds x.tflite
    with pytest.raises(ValueError, match="is a file"):
        to_xla(fcn, out)


def test_summary_names_the_execution_only_with_kronecker_layers(tmp_path):
    plain = to_tflite(_dilated_model(), tmp_path / "d.tflite")
    assert plain.kronecker_layers == 0
    assert "execution" not in plain.summary() and "Kronecker" not in plain.summary()
    kron = to_tflite(_kron_layer_model(), tmp_path / "k.tflite")
    assert kron.kronecker_layers == 1
    assert "float32, input (1, 12, 12, 16), factored execution of 1 Kronecker layer, ops:" in (
        kron.summary())


def test_runner_pads_the_last_batch_and_times_invokes(tmp_path):
    model = _dilated_model()
    info = to_tflite(model, tmp_path / "b3.tflite", batch_size=3)
    x = np.random.default_rng(0).uniform(0, 255, (7, 16, 16, 4)).astype("float32")
    np.testing.assert_allclose(TFLiteRunner(info)(x), model(x).numpy(), rtol=1e-5, atol=1e-4)
    latency = benchmark_tflite(info, threads=(1, 2), runs=5, warmup=1)
    assert set(latency) == {1, 2}
    assert all(v["median_ms"] > 0 and v["batch_size"] == 3 for v in latency.values())


# -- XLA ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kron_resnet_8", "kron_context_net_basic"])
def test_xla_saved_model_reloads_with_keras_outputs(name, test_sets, tmp_path):
    model = zoo.load_model(name)
    images = test_sets[_task(name)][0][:4].astype("float32")
    info = to_xla(model, tmp_path / "xla", batch_size=2)
    assert info.backend == "tensorflow" and info.input_shape[0] == 2
    with open(info.hlo_path) as f:
        hlo = f.read()
    assert "HloModule" in hlo and "convolution" in hlo
    with open(info.stablehlo_path) as f:
        assert "stablehlo.convolution" in f.read()
    with open(os.path.join(info.directory, "xla_export.json")) as f:
        meta = json.load(f)
    assert meta["jit_compile"] and meta["input_shape"] == list(info.input_shape)
    loaded = tf.saved_model.load(info.directory)
    for start in (0, 2):
        batch = images[start:start + 2]
        expected = model(batch, training=False).numpy()
        got = loaded.serve(tf.constant(batch)).numpy()
        assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))
        signature = loaded.signatures["serving_default"](images=tf.constant(batch))
        np.testing.assert_allclose(list(signature.values())[0].numpy(), got, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed")
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="this is the outer (TensorFlow) run")
def test_xla_export_under_the_jax_backend(tmp_path):
    script = (
        "import numpy as np, tensorflow as tf\n"
        "from kronecker_zoo import models\n"
        "from kronecker_zoo.export import to_xla\n"
        "m = models.get('kron_resnet_8')\n"
        f"info = to_xla(m, {str(tmp_path / 'jx')!r})\n"
        "x = np.random.default_rng(0).uniform(0, 255, (1, 28, 28, 1)).astype('float32')\n"
        "want = np.asarray(m(x, training=False))\n"
        "loaded = tf.saved_model.load(info.directory)  # keep it alive: it owns the variables\n"
        "got = loaded.serve(x).numpy()\n"
        "assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want)), (got, want)\n"
        "assert 'stablehlo' in open(info.stablehlo_path).read()\n"
        "assert 'HloModule' in open(info.hlo_path).read()\n"
        "print('JAX-XLA-OK', info.backend)\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert "JAX-XLA-OK jax" in result.stdout, result.stderr[-3000:]


# -- XLA training ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo_cases.ONE_PER_FAMILY)
def test_jit_compiled_training_steps(name):
    keras.utils.set_random_seed(0)
    model = models.get(name)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4,) + tuple(model.input_shape[1:])).astype("float32")
    label_shape = (4,) if _task(name) == "classification" else (4,) + x.shape[1:3]
    y = rng.integers(0, model.output_shape[-1], label_shape)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    assert model.jit_compile
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)  # 2 steps
    assert np.all(np.isfinite(history.history["loss"]))
    changed = [not np.array_equal(b, np.array(w)) for b, w in zip(before, model.trainable_weights)]
    assert sum(changed) >= 0.9 * len(changed)


# -- command-line tools ------------------------------------------------------------------


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"tflite_{name}",
                                                  os.path.join(ROOT, "tflite", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_tool_errors_name_its_flags(tmp_path, capsys):
    convert = _tool("convert").main
    out = tmp_path / "r8.tflite"
    out.write_bytes(b"precious")
    assert convert(["--model", "resnet_8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "Pass --overwrite" in err and "overwrite=True" not in err
    assert out.read_bytes() == b"precious"
    new = str(tmp_path / "new.tflite")
    int8 = ["--model", "resnet_8", "--weights", "none", "--quantization", "int8", "--out", new]
    assert convert(int8) == 2  # fresh weights: no calibration set is known
    assert "needs --calibration-data FILE.npy" in capsys.readouterr().err
    scaled = tmp_path / "scaled.npy"
    np.save(scaled, calibration_images("fashion_mnist", 8) / 255.0)
    assert convert(int8 + ["--calibration-data", str(scaled)]) == 2
    assert "scaled to [0, 1]" in capsys.readouterr().err
    assert convert(["--model", "resnet_8", "--out", new, "--calibration-data", str(scaled)]) == 2
    assert "int8 only" in capsys.readouterr().err
    assert not os.path.exists(new)


@pytest.mark.slow
def test_command_line_tools(tmp_path, capsys):
    out = str(tmp_path / "r8.tflite")
    # lowrank_resnet_8: an int8 file that passes with margin (resnet_8 sits on the bar)
    assert _tool("convert").main(["--model", "lowrank_resnet_8", "--weights", "fashion_mnist",
                                  "--quantization", "int8", "--out", out,
                                  "--calibration-examples", "64", "--verify", "100"]) == 0
    text = capsys.readouterr().out
    assert "int8" in text and "op check: OK" in text and "PASSED" in text
    assert _tool("convert").main(["--model", "resnet_8", "--out", out]) == 2  # exists
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "overwrite=True" not in err
    assert _tool("verify").main(["--model", "lowrank_resnet_8", "--tflite", out,
                                 "--examples", "100"]) == 0
    assert "CONV_2D" in capsys.readouterr().out
    assert _tool("benchmark").main(["--tflite", out, "--runs", "3", "--warmup", "1"]) == 0
    assert "| r8.tflite | int8 |" in capsys.readouterr().out
    status = _tool("benchmark").main(["--compare", "resnet_8", "lowrank_resnet_8",
                                      "--examples", "64", "--runs", "3", "--warmup", "1"])
    table, err = capsys.readouterr()
    # 64 images: one int8 flip is 98.4%, under the 99% bar; the status says so
    assert status == (1 if "(64 images, FAILED)" in table else 0)
    assert ("parity with Keras FAILED" in err) == (status == 1)
    assert "| | `resnet_8` | `lowrank_resnet_8` |" in table
    for row in ("float32 file size", "int8 latency, 2 threads", "int8 accuracy (LiteRT)"):
        assert f"| {row} |" in table


def test_benchmark_compare_exits_1_naming_an_export_that_fails_parity(monkeypatch, capsys):
    tool = _tool("benchmark")
    rows = [{"model": m, "column": m, "weights": "fashion_mnist", "params": 10,
             "quantization": q, "size_bytes": 100, "latency_ms": {1: 0.1},
             "keras_accuracy": 0.9, "tflite_accuracy": 0.9, "agreement": a,
             "rel_error": 0.05 if q == "int8" else 1e-6, "passed": a >= 0.99}
            for m, q, a in [("resnet_8", "float32", 1.0), ("resnet_8", "int8", 0.985),
                            ("lowrank_resnet_8", "int8", 0.995)]]
    monkeypatch.setattr(tool.zoo, "compare_litert", lambda names, **kw: rows)
    assert tool.main(["--compare", "resnet_8", "lowrank_resnet_8"]) == 1
    out, err = capsys.readouterr()
    assert "| | `resnet_8` | `lowrank_resnet_8` |" in out
    assert "FAILED" in err and "resnet_8 int8 (98.50% agreement, relative error 0.05)" in err
    assert "lowrank_resnet_8" not in err and "float32" not in err
    rows[1]["passed"] = True
    assert tool.main(["--compare", "resnet_8", "lowrank_resnet_8"]) == 0
    assert capsys.readouterr().err == ""


def test_convert_tool_materialises_the_named_layers(tmp_path, capsys):
    out, full = str(tmp_path / "m.tflite"), str(tmp_path / "f.tflite")
    assert _tool("convert").main(["--model", "resnet_8_kron5x_lowmac", "--weights", "none",
                                  "--out", full]) == 0
    capsys.readouterr()
    assert _tool("convert").main(["--model", "resnet_8_kron5x_lowmac", "--weights", "none",
                                  "--out", out, "--materialize", "stage3_block1_conv1"]) == 0
    assert ("materialized: stage3_block1_conv1; others factored execution"
            in capsys.readouterr().out)
    layer = models.get("resnet_8_kron5x_lowmac").get_layer("stage3_block1_conv1")
    kernel = int(np.prod(layer.kernel.shape))  # now stored whole, in float32
    factored = max(layer.lowering_constants(lowering) for lowering in ("batch", "channels"))
    assert kernel > 2 * factored
    assert os.path.getsize(out) - os.path.getsize(full) > 4 * (kernel - factored) - 1024
    assert _tool("convert").main(["--model", "resnet_8_kron5x_lowmac", "--weights", "none",
                                  "--out", str(tmp_path / "x.tflite"),
                                  "--materialize", "stem_conv"]) == 2
    assert "not layers of the model that choose their execution" in capsys.readouterr().err
    assert _tool("convert").main(["--model", "resnet_8_kron5x_lowmac", "--weights", "none",
                                  "--out", str(tmp_path / "y.tflite"), "--execution",
                                  "materialized", "--materialize", "stage3_block1_conv1"]) == 2
    assert "does not combine" in capsys.readouterr().err
    assert not (tmp_path / "x.tflite").exists() and not (tmp_path / "y.tflite").exists()
    # --execution planned: the layers LiteRT's cost model materialises, named in the summary
    from kronecker_zoo.export.execution import describe_execution, resolve_execution

    expected = resolve_execution(models.get("resnet_20_kron5x_lowmac"), "planned", "litert")
    assert isinstance(expected, dict)  # it materialises some layer
    assert _tool("convert").main(["--model", "resnet_20_kron5x_lowmac", "--weights", "none",
                                  "--out", str(tmp_path / "p.tflite"),
                                  "--execution", "planned"]) == 0
    assert f"{describe_execution(expected)} execution" in capsys.readouterr().out


def test_resize_nearest_is_a_block_repeat():
    images = np.random.default_rng(5).integers(0, 256, (3, 28, 28, 1)).astype("uint8")
    big = zoo.resize_nearest(images, (224, 224))
    expected = np.stack([np.kron(im[..., 0], np.ones((8, 8), "uint8")) for im in images])
    np.testing.assert_array_equal(big[..., 0], expected)
    masks = images[..., 0]
    np.testing.assert_array_equal(zoo.resize_nearest(masks, (14, 56)),
                                  masks[:, ::2][:, :, np.arange(56) // 2])


@pytest.mark.slow
def test_compare_at_another_input_size(tmp_path):
    rows = zoo.compare_litert(["resnet_8_lowrank5x"], quantizations=(None,), threads=(1,),
                              runs=2, warmup=1, examples=4, directory=tmp_path,
                              input_hw=(56, 56))
    (row,) = rows
    assert tflite_io(row["path"])["input"][0] == (1, 56, 56, 1)
    assert row["agreement"] == 1.0 and row["rel_error"] <= 1e-4


@pytest.mark.slow
def test_compare_times_each_execution_of_a_kronecker_model(tmp_path):
    """execution=("factored", "planned"): a model with Kronecker layers is exported once
    per execution (one column each), a model without them once; the planned file is
    the one `to_tflite(execution="planned")` writes."""
    rows = zoo.compare_litert(["resnet_8", "resnet_8_kron5x_lowmac"], weights="fashion_mnist",
                              quantizations=(None,), threads=(1,), runs=2, warmup=1,
                              examples=4, directory=tmp_path,
                              execution=("factored", "planned"))
    assert [row["column"] for row in rows] == [
        "resnet_8", "resnet_8_kron5x_lowmac (factored)", "resnet_8_kron5x_lowmac (planned)"]
    assert all(row["agreement"] == 1.0 and row["rel_error"] <= 1e-4 for row in rows)
    model = zoo.load_model("resnet_8_kron5x_lowmac", "fashion_mnist")
    info = to_tflite(model, tmp_path / "planned.tflite", execution="planned")
    with open(rows[2]["path"], "rb") as f:
        assert f.read() == (tmp_path / "planned.tflite").read_bytes()
    table = zoo.litert_table(rows)
    assert "`resnet_8_kron5x_lowmac (planned)`" in table and table.count("`resnet_8`") == 1
    assert info.kronecker_layers > 0


@pytest.mark.slow
def test_int8_parity_tool(tmp_path, capsys):
    parity = _tool("int8_parity")
    with pytest.raises(SystemExit):
        parity.main(["resnet_8", "--calibration", "val:10"])
    assert "split:count" in capsys.readouterr().err
    status = parity.main(["lowrank_resnet_8", "--calibration", "train:32", "test:32",
                          "--examples", "100", "--keep", str(tmp_path),
                          "--bias-correction", "both"])
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| `lowrank_resnet_8`")]
    assert [row.split("|")[2].strip() for row in rows] == ["32 train"] * 2 + ["32 test"] * 2
    assert [row.split("|")[9].strip() for row in rows] == ["off", "on"] * 2
    assert [row.split("|")[10].strip() for row in rows] == ["mse"] * 4  # the default
    # the table's agreement is that of the kept file, checked here independently
    model = zoo.load_model("lowrank_resnet_8")
    images, labels = zoo.test_set("lowrank_resnet_8", 100)
    ours = np.argmax(model.predict(images.astype("float32"), verbose=0), -1)
    for row, file in [(rows[2], "test32_uncorrected"), (rows[3], "test32_corrected")]:
        kept = tmp_path / f"lowrank_resnet_8_int8_{file}_mse.tflite"
        theirs = np.argmax(TFLiteRunner(kept)(images.astype("float32")), -1)
        assert f"{100 * float((ours == theirs).mean()):.2f}%" == row.split("|")[4].strip()
    assert status == (0 if all(r.split("|")[8].strip() == "yes" for r in rows) else 1)


def test_int8_noise_tool(capsys):
    tool = _tool("int8_noise")
    with pytest.raises(SystemExit):
        tool.main(["not_a_model"])
    assert "no published weights" in capsys.readouterr().err
    assert tool.main(["lowrank_resnet_8", "--calibration", "train:32", "--examples", "64"]) == 0
    out = capsys.readouterr().out
    ops = [line.split()[0] for line in out.splitlines() if " steps (step " in line]
    assert ops and "FULLY_CONNECTED" in ops and "QUANTIZE" not in ops
    agreement = {line.split(":")[0].strip(): line for line in out.splitlines()
                 if "% agreement" in line}
    assert sorted(agreement) == ["dynamic", "float32", "int8"]
    assert agreement["float32"].split(":")[1].startswith(" 100.00%")


def test_int8_parity_calibrates_on_the_asked_split_count_and_seed(monkeypatch):
    parity = _tool("int8_parity")
    asked = []

    class Asked(Exception):
        pass

    def record(name, tag=None, count=None, seed=None, split=None):
        asked.append((name, tag, count, seed, split))
        raise Asked

    monkeypatch.setattr(parity, "pretraining_calibration_data", record)
    with pytest.raises(Asked):
        parity.parity_rows(["resnet_8"], [("test", 7)], examples=5, seed=3)
    assert asked == [("resnet_8", "fashion_mnist", 7, 3, "test")]


def test_low_rank_shaped_kronecker_exports_as_low_rank_conv(tmp_path):
    """The planner runs ``(3 x 1, 16 -> 1) (x) (1 x 3, 1 -> 24)`` outer factor first, each
    convolution padding its own axis: the same two convolutions as LowRankConv2D, no
    TRANSPOSE, RESHAPE or PAD."""
    counts = {}
    for name, layer in [
            ("kron", KroneckerConv2D(24, 3, [(3, 1, 16, 1), (1, 3, 1, 24)], rank=4,
                                     execution="factored")),
            ("lowrank", LowRankConv2D(24, 3, rank=4))]:
        inputs = keras.Input((20, 20, 16), batch_size=1)
        model = keras.Model(inputs, layer(inputs))
        info = to_tflite(model, tmp_path / f"{name}.tflite")
        counts[name] = tflite_op_counts(info)
        x = np.random.default_rng(0).standard_normal((1, 20, 20, 16)).astype("float32")
        assert verify_tflite(model, info, x).rel_error <= 1e-5
    assert counts["lowrank"] == {"CONV_2D": 2}
    assert counts["kron"] == counts["lowrank"]


def test_ops_by_layer_names_what_each_layer_costs(tmp_path):
    """Every op of the file is counted once, under the layer whose scope produced it: the
    grouped Kronecker layer's TRANSPOSEs under it, the plain convolution's CONV_2D under it."""
    inputs = keras.Input((12, 12, 8), batch_size=1)
    h = keras.layers.Conv2D(16, 3, padding="same", name="plain")(inputs)
    h = KroneckerConv2D(16, 3, [(1, 1, 4, 4), (3, 3, 4, 4)], execution="factored",
                        lowering="batch", name="kron")(h)
    h = keras.layers.ReLU(name="act")(h)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(h))
    info = to_tflite(model, tmp_path / "m.tflite")
    by_layer = tflite_ops_by_layer(info, [layer.name for layer in model.layers])
    total = {}
    for ops in by_layer.values():
        for op, n in ops.items():
            total[op] = total.get(op, 0) + n
    assert total == tflite_op_counts(info)
    assert by_layer["plain"] == {"CONV_2D": 1}
    assert by_layer["kron"]["CONV_2D"] == 2 and by_layer["kron"]["TRANSPOSE"] >= 1
    assert "TRANSPOSE" not in by_layer.get("(other)", {})


@pytest.mark.parametrize("factors, rank, strides, padding, expected_ops", [
    # grouped 3x3 (the fast axis, 4 groups sharing the factor) and (3x3 (x) I) dilated
    ([(3, 3, 4, 2), (3, 3, 4, 8)], 2, 1, "same", {"CONV_2D": 2, "PAD": 1}),
    # one input channel per group: a depthwise convolution; strided, "valid"
    ([(1, 1, 4, 8), (3, 3, 1, 2)], 1, 2, "valid", {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1}),
])
def test_channels_lowering_exports_without_moving_data(factors, rank, strides, padding,
                                                       expected_ops, tmp_path):
    """lowering="channels" keeps the channel layout: no TRANSPOSE, RESHAPE or TILE in the
    file, only the two convolutions, and the float32 and int8 files equal the NumPy
    oracle conv2d(x, sum_r kron(F0[r], F1[r])) + b."""
    cin = factors[0][2] * factors[1][2]
    cout = factors[0][3] * factors[1][3]
    kernel = (factors[0][0] * factors[1][0], factors[0][1] * factors[1][1])
    inputs = keras.Input((14, 13, cin))
    layer = KroneckerConv2D(cout, kernel, factors, rank=rank, strides=strides,
                            padding=padding, lowering="channels", name="kron")
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(5)
    model.set_weights([(0.3 * rng.standard_normal(w.shape)).astype("float32")
                       for w in model.get_weights()])
    info = to_tflite(model, tmp_path / "c.tflite")
    assert tflite_op_counts(info) == expected_ops
    x = rng.uniform(-2, 2, (4, 14, 13, cin)).astype("float32")
    expected = ref.conv2d(x, ref.kron_kernel([np.asarray(f) for f in layer.factor_weights]),
                          strides=strides, padding=padding) + np.asarray(layer.bias)
    got = TFLiteRunner(info)(x)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))
    int8 = to_tflite(model, tmp_path / "c8.tflite", quantization="int8",
                     representative_data=rng.uniform(-2, 2, (64, 14, 13, cin)).astype("float32"))
    assert "TRANSPOSE" not in int8.ops and "TILE" not in int8.ops
    report = verify_tflite(model, int8, x)
    assert report.sqnr_db >= 25, str(report)


def _two_factor_model():
    inputs = keras.Input((28, 28, 16))
    h = KroneckerConv2D(32, 3, [(1, 1, 16, 16), (3, 3, 1, 2)], rank=3, strides=2,
                        name="a")(inputs)
    h = KroneckerConv2D(32, 3, [(1, 1, 32, 2), (3, 3, 1, 16)], rank=8, name="b")(h)
    h = KroneckerConv2D(64, 3, [(1, 1, 16, 32), (3, 3, 2, 2)], rank=6, strides=2,
                        name="c")(h)
    return keras.Model(inputs, h)


def test_export_plans_each_lowering_for_litert_within_the_size_budget(tmp_path, monkeypatch):
    """Layers with lowering="auto" are planned for LiteRT's measured costs when exported,
    on the export's copy only: each takes its cheaper lowering (here "channels" for all
    three), then the layers saving least per extra stored weight go back to "batch" until
    the extra weights fit `extra_weights_budget`; with no budget every layer is "batch"."""
    from kronecker_zoo import ops as kz_ops
    from kronecker_zoo.export import execution as export_execution

    model = _two_factor_model()
    layers = [model.get_layer(n) for n in "abc"]
    before = [layer.resolved_lowering for layer in layers]
    for layer in layers:
        costs = {lw: kz_ops.factored_conv_cost(layer.built_input_hw, layer.factors,
                                               layer.rank, layer.strides, layer.padding, lw,
                                               "litert") for lw in kz_ops.LOWERINGS}
        assert layer.lowering_for("litert") == min(costs, key=costs.get) == "channels"
    plan = export_execution.planned_lowerings(model, layers, "litert")
    extra = {layer: layer.lowering_constants("channels") - layer.lowering_constants("batch")
             for layer in layers}
    kept = [layer for layer in layers if plan[layer] == "channels"]
    dropped = [layer for layer in layers if plan[layer] == "batch"]
    assert kept and sum(extra[layer] for layer in kept) <= export_execution.extra_weights_budget(
        model.count_params()) < sum(extra.values())
    value = {layer: layer.lowering_saving("litert") / extra[layer] for layer in layers}
    assert min(value[layer] for layer in kept) >= max(value[layer] for layer in dropped)

    info = to_tflite(model, tmp_path / "auto.tflite")
    assert [layer.resolved_lowering for layer in layers] == before
    assert info.size_bytes <= file_size_bound(model.count_params())
    x = np.random.default_rng(0).standard_normal((2, 28, 28, 16)).astype("float32")
    assert verify_tflite(model, info, x).rel_error <= 1e-5

    monkeypatch.setattr(export_execution, "extra_weights_budget",
                        lambda params, bytes_per_weight=4: 0)
    assert set(export_execution.planned_lowerings(model, layers, "litert").values()) == {"batch"}
    batch = to_tflite(model, tmp_path / "batch.tflite")
    assert "TRANSPOSE" in batch.ops and "DEPTHWISE_CONV_2D" not in batch.ops
    assert batch.size_bytes < info.size_bytes


def _tiny_group_model():
    """"tiny": factored, one grouped convolution of 8 groups of 2 -> 3 channels (3x3) and a
    1x1; "wide": (3x3, 4 -> 4) (x) (3x3, 4 -> 4), far fewer MACs factored."""
    inputs = keras.Input((28, 28, 16))
    h = KroneckerConv2D(32, 3, [(1, 1, 8, 32), (3, 3, 2, 1)], rank=3, strides=2,
                        name="tiny")(inputs)
    h = KroneckerConv2D(32, 9, [(3, 3, 4, 4), (3, 3, 8, 8)], rank=2, name="wide")(h)
    return keras.Model(inputs, h)


def test_planned_execution_materialises_what_the_cost_model_finds_cheaper(tmp_path,
                                                                          monkeypatch):
    """execution="planned": a layer runs materialised exactly where the runtime's cost
    model prices its full kernel below its factored execution, within the file-size
    budget. With LiteRT's cost tiled (XNNPACK computes each group in whole blocks) the
    layer of tiny groups is materialised, the other stays factored; untiled, neither.
    The file is byte for byte the one the same per-layer dict gives, equals the model,
    and the model's own executions are untouched."""
    from kronecker_zoo import ops as kz_ops
    from kronecker_zoo.export import execution as export_execution

    model = _tiny_group_model()
    layers = {n: model.get_layer(n) for n in ("tiny", "wide")}
    before = {n: layer.resolved_execution for n, layer in layers.items()}
    monkeypatch.setitem(kz_ops.COST_WEIGHTS, "litert",
                        {"grouped_mac": 1.6, "moved": 30.0, "tile": (8, 16)})
    costs = {n: layer.execution_costs("litert") for n, layer in layers.items()}
    assert costs["tiny"]["materialized"] < costs["tiny"]["factored"]
    assert costs["wide"]["materialized"] > 2 * costs["wide"]["factored"]
    # the costs, from the plan's own terms: the factored lowering `lowering_for` picks
    tiny = layers["tiny"]
    plain, grouped, moved = kz_ops.factored_conv_cost_terms(
        (28, 28), tiny.factors, 3, (2, 2), "same", tiny.lowering_for("litert"), (8, 16))
    assert costs["tiny"]["factored"] == pytest.approx(plain + 1.6 * grouped + 30.0 * moved)
    assert costs["tiny"]["materialized"] == 14 * 14 * 9 * 16 * 32  # multiples of the tile

    assert export_execution.resolve_execution(model, "planned", "litert") == {
        "tiny": "materialized"}
    planned = to_tflite(model, tmp_path / "p.tflite", execution="planned")
    explicit = to_tflite(model, tmp_path / "e.tflite", execution={"tiny": "materialized"})
    assert planned.execution == {"tiny": "materialized"}
    assert "materialized: tiny; others factored" in planned.summary()
    assert (tmp_path / "p.tflite").read_bytes() == (tmp_path / "e.tflite").read_bytes()
    assert planned.size_bytes <= file_size_bound(model.count_params())
    assert {n: layer.resolved_execution for n, layer in layers.items()} == before
    x = np.random.default_rng(0).standard_normal((2, 28, 28, 16)).astype("float32")
    assert verify_tflite(model, planned, x).rel_error <= 1e-5
    # int8 files are planned on the int8 costs, traced after the int8 rewrites: the same
    monkeypatch.setitem(kz_ops.COST_WEIGHTS, "litert_int8",
                        {"grouped_mac": 1.6, "moved": 30.0, "tile": (8, 16)})
    calibration = np.random.default_rng(1).uniform(0, 1, (16, 28, 28, 16)).astype("float32")
    int8 = {"quantization": "int8", "representative_data": calibration,
            "bias_correction": False}
    planned8 = to_tflite(model, tmp_path / "p8.tflite", execution="planned", **int8)
    to_tflite(model, tmp_path / "e8.tflite", execution={"tiny": "materialized"}, **int8)
    assert planned8.execution == {"tiny": "materialized"}
    assert (tmp_path / "p8.tflite").read_bytes() == (tmp_path / "e8.tflite").read_bytes()

    # no room for the full kernel in the file: factored
    monkeypatch.setattr(export_execution, "extra_weights_budget",
                        lambda params, bytes_per_weight=4: 0)
    assert export_execution.resolve_execution(model, "planned", "litert") == "factored"
    monkeypatch.undo()
    monkeypatch.setitem(kz_ops.COST_WEIGHTS, "litert",
                        {"grouped_mac": 1.6, "moved": 30.0, "tile": (1, 1)})
    assert export_execution.resolve_execution(model, "planned", "litert") == "factored"
    with pytest.raises(ValueError, match="'planned'"):
        to_tflite(model, tmp_path / "z.tflite", execution="plan")


def test_the_extra_weights_budget_is_bytes_so_int8_files_hold_four_times_the_weights(
        tmp_path, monkeypatch):
    """The planner's budget is ``0.8 * params + 32 KiB`` bytes: ``int(0.2 * params) + 8192``
    float32 weights (the float32 bound), four times as many in an int8 file. A full kernel
    too large for a float32 file's budget (15,144 extra weights against 8,862) is
    materialised in the int8 file, which stays within `file_size_bound` and equals Keras."""
    from kronecker_zoo import ops as kz_ops
    from kronecker_zoo.export import execution as export_execution

    for params in (0, 1, 3, 15_568, 26_802, 273_754):
        float32 = export_execution.extra_weights_budget(params)
        assert float32 == int(0.2 * params) + 8192
        assert 0 <= export_execution.extra_weights_budget(params, 1) - 4 * float32 < 4
    assert export_execution.weight_bytes("litert_int8") == 1
    assert {export_execution.weight_bytes(r) for r in ("litert", "tensorflow", "jax", None)} == {4}

    inputs = keras.Input((14, 14, 32))
    outputs = KroneckerConv2D(64, 3, [(1, 1, 16, 32), (3, 3, 2, 2)], rank=6, name="c")(inputs)
    model = keras.Model(inputs, outputs)
    layer = model.get_layer("c")
    params = model.count_params()
    extra = layer.materializing_extra_weights()
    assert layer.lowering_constants("batch") == 6 * (16 * 32 + 3 * 3 * 2 * 2)  # its factors
    assert extra == 3 * 3 * 32 * 64 - 6 * (16 * 32 + 3 * 3 * 2 * 2)
    assert export_execution.extra_weights_budget(params) < extra <= (
        export_execution.extra_weights_budget(params, 1))
    weights = {"grouped_mac": 1.6, "moved": 30.0, "tile": (8, 16)}
    for runtime in ("litert", "litert_int8"):
        monkeypatch.setitem(kz_ops.COST_WEIGHTS, runtime, weights)
        costs = layer.execution_costs(runtime)
        assert costs["materialized"] < costs["factored"]
    assert export_execution.resolve_execution(model, "planned", "litert") == "factored"
    assert export_execution.resolve_execution(model, "planned", "litert_int8") == {
        "c": "materialized"}

    calibration = np.random.default_rng(1).uniform(0, 1, (16, 14, 14, 32)).astype("float32")
    int8 = {"quantization": "int8", "representative_data": calibration,
            "bias_correction": False}
    planned = to_tflite(model, tmp_path / "p8.tflite", execution="planned", **int8)
    factored = to_tflite(model, tmp_path / "f8.tflite", **int8)
    assert planned.execution == {"c": "materialized"}
    assert tflite_op_counts(planned)["CONV_2D"] == 1 and "TRANSPOSE" not in planned.ops
    assert factored.size_bytes < planned.size_bytes <= file_size_bound(params)
    assert to_tflite(model, tmp_path / "p.tflite", execution="planned").execution == "factored"
    x = np.random.default_rng(0).uniform(0, 1, (8, 14, 14, 32)).astype("float32")
    assert verify_tflite(model, planned, x).sqnr_db >= 30


def test_int8_plans_give_the_channels_lowerings_the_int8_budget(monkeypatch):
    """With the same cost weights for float32 and int8 files, the int8 plan keeps every
    "channels" lowering (16,722 extra weights: over the float32 budget of 9,372, within the
    int8 one of 37,489) where the float32 plan keeps one; factored and planned exports
    alike ("planned": the budget left after the full kernels it stores)."""
    from kronecker_zoo import ops as kz_ops
    from kronecker_zoo.export import execution as export_execution

    model = _two_factor_model()
    layers = [model.get_layer(n) for n in "abc"]
    monkeypatch.setitem(kz_ops.COST_WEIGHTS, "litert_int8", dict(kz_ops.COST_WEIGHTS["litert"]))
    extra = {layer.name: layer.lowering_constants("channels") - layer.lowering_constants("batch")
             for layer in layers}
    params = model.count_params()
    assert (export_execution.extra_weights_budget(params) < sum(extra.values())
            <= export_execution.extra_weights_budget(params, 1))
    float32 = export_execution.planned_lowerings(model, layers, "litert")
    int8 = export_execution.planned_lowerings(model, layers, "litert_int8")
    assert "batch" in float32.values() and set(int8.values()) == {"channels"}
    with export_execution.forced_execution(model, "factored", runtime="litert_int8"):
        assert [layer.resolved_lowering for layer in layers] == ["channels"] * 3

    chosen, stored = export_execution.planned_executions(model, layers, "litert_int8")
    materialized = [layer.name for layer in layers if chosen[layer] == "materialized"]
    assert "b" not in materialized and stored > export_execution.extra_weights_budget(params)
    with export_execution.forced_execution(model, "planned", runtime="litert_int8"):
        b = model.get_layer("b")
        assert b.resolved_execution == "factored" and b.resolved_lowering == "channels"
    with export_execution.forced_execution(model, "planned", runtime="litert"):
        assert b.resolved_lowering == "batch"  # within the float32 budget: "batch"


def test_planned_is_never_dearer_than_all_factored_by_the_cost_model(monkeypatch):
    """A full kernel can crowd "channels" lowerings that save more out of the budget:
    with LiteRT's int8 weights (pinned here as fitted in session 30), materialising
    `kron_resnet_8`'s `stage2_block1_conv1` (a 9x9 kernel, 39,744 extra weights) leaves no
    room for the stage-1 lowerings, a plan the cost model prices above all factored. The
    planner then keeps every layer factored; on every model and runtime below, the plan
    it runs costs at most the all-factored one."""
    from kronecker_zoo import ops as kz_ops
    from kronecker_zoo.export import execution as export_execution

    monkeypatch.setitem(kz_ops.COST_WEIGHTS, "litert_int8",
                        {"grouped_mac": 2.0, "moved": 165.1, "tile": (16, 16)})
    monkeypatch.setitem(kz_ops.COST_WEIGHTS, "litert",
                        {"grouped_mac": 1.4, "moved": 30.6, "tile": (8, 16)})
    kron8 = models.get("kron_resnet_8")
    layers = export_execution.execution_layers(kron8)
    first, extra = export_execution.planned_executions(kron8, layers, "litert_int8")
    assert [layer.name for layer in layers if first[layer] == "materialized"] == [
        "stage2_block1_conv1"]
    budget = export_execution.extra_weights_budget(kron8.count_params(), 1)
    crowded = export_execution.planned_lowerings(
        kron8, [layer for layer in layers if first[layer] == "factored"], "litert_int8",
        budget - extra)
    alone = export_execution.planned_lowerings(kron8, layers, "litert_int8", budget)
    factored = {layer: "factored" for layer in layers}
    assert (export_execution.modeled_cost(factored, alone, "litert_int8")
            < export_execution.modeled_cost(first, crowded, "litert_int8"))
    assert export_execution.resolve_execution(kron8, "planned", "litert_int8") == "factored"
    for name in ("kron_resnet_8", "resnet_8_kron5x", "resnet_20_kron5x"):
        model = models.get(name)
        layers = export_execution.execution_layers(model)
        for runtime, bytes_per_weight in (("litert", 4), ("litert_int8", 1)):
            budget = export_execution.extra_weights_budget(model.count_params(),
                                                           bytes_per_weight)
            all_factored = export_execution.modeled_cost(
                {layer: "factored" for layer in layers},
                export_execution.planned_lowerings(model, layers, runtime, budget), runtime)
            chosen, lowerings = export_execution.planned_plan(model, layers, runtime)
            assert export_execution.modeled_cost(chosen, lowerings, runtime) <= all_factored


def test_per_layer_execution_materialises_only_the_named_layers(tmp_path):
    """execution={name: "materialized"}: that layer becomes one CONV_2D with its full
    kernel (stored: the file grows by its dense weights less its factors), the others
    stay factored; the file still equals the model, the model's own executions are
    restored, and a name or value the model does not have is refused, naming them."""
    model = _two_factor_model()
    layers = {n: model.get_layer(n) for n in "abc"}
    before = {n: layer.resolved_execution for n, layer in layers.items()}
    factored = to_tflite(model, tmp_path / "f.tflite")
    mixed = to_tflite(model, tmp_path / "m.tflite", execution={"a": "materialized"})
    assert {n: layer.resolved_execution for n, layer in layers.items()} == before
    a = layers["a"]
    grown = mixed.size_bytes - factored.size_bytes
    dense = 4 * int(np.prod(a.kernel.shape))
    from kronecker_zoo.export import execution as export_execution

    plan = export_execution.planned_lowerings(model, list(layers.values()), "litert")
    stored = 4 * a.lowering_constants(plan[a])  # what the factored file keeps of "a"
    assert abs(grown - (dense - stored)) < 1024, (grown, dense, stored)
    counts = {"f": tflite_op_counts(factored), "m": tflite_op_counts(mixed)}
    # "a" was two or more ops (a cascade), now one CONV_2D
    assert sum(counts["m"].values()) < sum(counts["f"].values())
    assert "materialized: a; others factored execution of 3 Kronecker layers" in (
        mixed.summary())
    x = np.random.default_rng(0).standard_normal((2, 28, 28, 16)).astype("float32")
    assert verify_tflite(model, mixed, x).rel_error <= 1e-5
    calibration = np.random.default_rng(1).uniform(0, 1, (16, 28, 28, 16)).astype("float32")
    int8 = to_tflite(model, tmp_path / "q.tflite", quantization="int8",
                     representative_data=calibration, execution={"a": "materialized"})
    assert tflite_op_counts(int8)["CONV_2D"] == counts["m"]["CONV_2D"]
    with pytest.raises(ValueError, match=r"names \['z'\].*Those are: \['a', 'b', 'c'\]"):
        to_tflite(model, tmp_path / "z.tflite", execution={"z": "materialized"})
    with pytest.raises(ValueError, match="'factored' or 'materialized'"):
        to_tflite(model, tmp_path / "y.tflite", execution={"a": "as_built"})
    assert not (tmp_path / "z.tflite").exists() and not (tmp_path / "y.tflite").exists()


def test_a_file_that_appears_during_the_export_is_kept(tmp_path, monkeypatch):
    """overwrite=False holds at the moment of writing, not only when the export starts."""
    from kronecker_zoo.export import tflite as tflite_module

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    path = tmp_path / "late.tflite"
    convert = tflite_module._convert

    def convert_while_someone_writes(*args, **kwargs):
        result = convert(*args, **kwargs)
        path.write_bytes(b"the user's file")
        return result

    monkeypatch.setattr(tflite_module, "_convert", convert_while_someone_writes)
    with pytest.raises(FileExistsError, match="appeared while exporting"):
        to_tflite(model, path)
    assert path.read_bytes() == b"the user's file"
    assert [p.name for p in tmp_path.iterdir()] == ["late.tflite"]  # no temporary left
