"""int8 bias correction (`kronecker_zoo.export.bias_correction`) against the int8 file itself.

References: the int8 weights and scales the converter writes into the file (read back with
LiteRT), and the int8 file's own outputs against the Keras model's.
"""

import keras
import numpy as np
import pytest

from kronecker_zoo.export import to_tflite
from kronecker_zoo.export.bias_correction import int8_rounded
from kronecker_zoo.export.runner import run_tflite

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="TFLite export needs the TensorFlow backend")


def _coarse_kernel(rng, shape):
    """A kernel whose int8 rounding errors are large: one big tap per output channel."""
    kernel = rng.normal(0.0, 0.02, shape)
    kernel[0, 0, 0, :] = 1.0
    return kernel.astype("float32")


def _conv_bn_model(rng):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(5, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    model.get_layer("conv").kernel.assign(_coarse_kernel(rng, (3, 3, 3, 5)))
    bn = model.get_layer("bn")
    bn.gamma.assign(rng.uniform(0.5, 2.0, 5).astype("float32"))
    bn.beta.assign(rng.normal(0, 1, 5).astype("float32"))
    bn.moving_mean.assign(rng.normal(100, 10, 5).astype("float32"))
    bn.moving_variance.assign(rng.uniform(1.0, 4.0, 5).astype("float32"))
    return model


def _images(rng, n=48):
    # raw pixels with a large mean: a fixed weight error shifts every output the same way
    return rng.integers(100, 256, (n, 16, 16, 3)).astype("float32")


def _file_kernel(path):
    """The file's only 4-D int8 weight tensor, dequantized, as ``(kh, kw, cin, cout)``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    kernels = [d for d in interpreter.get_tensor_details()
               if d["dtype"] == np.int8 and len(d["shape"]) == 4
               and len(d["quantization_parameters"]["scales"]) > 1]
    assert len(kernels) == 1, [d["name"] for d in kernels]
    detail = kernels[0]
    scales = detail["quantization_parameters"]["scales"]
    values = interpreter.get_tensor(detail["index"]).astype(np.float64)
    return np.transpose(values * scales[:, None, None, None], (1, 2, 3, 0))


def test_int8_rounding_matches_the_weights_the_converter_writes(tmp_path):
    rng = np.random.default_rng(0)
    model = _conv_bn_model(rng)
    path = to_tflite(model, tmp_path / "m.tflite", quantization="int8",
                     representative_data=_images(rng), bias_correction=False)
    bn = model.get_layer("bn")
    folded = np.asarray(model.get_layer("conv").kernel, np.float64) * np.asarray(
        bn.gamma) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
    np.testing.assert_allclose(_file_kernel(path), int8_rounded(folded), rtol=1e-5,
                               atol=1e-7)
    # and the rounding is coarse here, or the next test would prove nothing
    assert np.abs(int8_rounded(folded) - folded).max() > 1e-3


@pytest.mark.parametrize("with_bn", [True, False])
def test_bias_correction_cancels_the_mean_output_shift_of_int8_weights(with_bn, tmp_path):
    rng = np.random.default_rng(1)
    if with_bn:
        model = _conv_bn_model(rng)
    else:
        inputs = keras.Input((16, 16, 3))
        outputs = keras.layers.Conv2D(5, 3, padding="valid", strides=2, name="conv")(inputs)
        model = keras.Model(inputs, outputs)
        model.get_layer("conv").kernel.assign(_coarse_kernel(rng, (3, 3, 3, 5)))
        model.get_layer("conv").bias.assign(rng.normal(0, 1, 5).astype("float32"))
    before = [np.array(w) for w in model.get_weights()]
    calibration, images = _images(rng), _images(rng, 32)
    keras_out = np.asarray(model.predict(images, verbose=0), np.float64)
    mean_errors = {}
    for correct in (False, True):
        path = to_tflite(model, tmp_path / f"m{correct}.tflite", quantization="int8",
                         representative_data=calibration, bias_correction=correct)
        int8_out = run_tflite(path, images).astype(np.float64)
        mean_errors[correct] = np.abs((int8_out - keras_out).mean(axis=(0, 1, 2)))
    # uncorrected: the weight rounding shifts the channels' means by more than the
    # output's rounding (at most half an int8 step) could; corrected: little remains
    output_step = (keras_out.max() - keras_out.min()) / 255
    assert mean_errors[False].max() > output_step, (mean_errors, output_step)
    assert mean_errors[True].max() < 0.2 * mean_errors[False].max(), mean_errors
    for old, new in zip(before, model.get_weights()):  # the caller's model untouched
        np.testing.assert_array_equal(old, new)


def test_bias_correction_skips_layers_without_a_bias_to_fold_into(tmp_path):
    rng = np.random.default_rng(2)
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(5, 3, use_bias=False, name="conv")(inputs)
    model = keras.Model(inputs, outputs)
    model.get_layer("conv").kernel.assign(_coarse_kernel(rng, (3, 3, 3, 5)))
    images = _images(rng)
    files = [to_tflite(model, tmp_path / f"m{c}.tflite", quantization="int8",
                       representative_data=images, bias_correction=c) for c in (False, True)]
    assert not any(f.bias_corrected for f in files)  # nothing there to correct
    a, b = (run_tflite(f, images[:4]) for f in files)
    np.testing.assert_array_equal(a, b)


def test_dense_layers_are_corrected_as_the_converter_rounds_them(tmp_path):
    rng = np.random.default_rng(4)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(5, name="dense")(x)
    model = keras.Model(inputs, outputs)
    kernel = rng.normal(0, 0.01, (72, 5))
    kernel[0, :] = 1.0
    model.get_layer("dense").kernel.assign(kernel.astype("float32"))
    calibration = rng.integers(100, 256, (48, 6, 6, 2)).astype("float32")
    reference = model.predict(calibration, verbose=0)
    mean_error = {}
    for correct in (False, True):
        path = to_tflite(model, tmp_path / f"d{correct}.tflite", quantization="int8",
                         representative_data=calibration, bias_correction=correct)
        mean_error[correct] = np.abs((run_tflite(path, calibration) - reference).mean(0))
    assert mean_error[True].max() < 0.2 * mean_error[False].max(), mean_error


def test_auto_keeps_the_uncorrected_file_when_it_is_closer(tmp_path, monkeypatch):
    from kronecker_zoo.export import tflite as tflite_module

    rng = np.random.default_rng(5)
    model = _conv_bn_model(rng)
    batches = [_images(rng, 8) for _ in range(3)]
    plain = to_tflite(model, tmp_path / "plain.tflite", quantization="int8",
                      representative_data=batches, bias_correction=False, batch_size=4)
    # pretend the corrected candidate (converted second) is the worse one
    scores = iter([1.0, 0.0])
    monkeypatch.setattr(tflite_module, "_file_sqnr_db", lambda *args: next(scores))
    auto = to_tflite(model, tmp_path / "auto.tflite", quantization="int8",
                     representative_data=(b for b in batches), batch_size=4)  # one-shot
    assert not auto.bias_corrected and auto.input_shape == (4, 16, 16, 3)
    assert open(auto, "rb").read() == open(plain, "rb").read()


def test_auto_keeps_the_file_closer_to_the_model_and_bad_values_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    model = _conv_bn_model(rng)
    calibration = _images(rng)
    files = {c: to_tflite(model, tmp_path / f"m{c}.tflite", quantization="int8",
                          representative_data=calibration, bias_correction=c)
             for c in (False, True, "auto")}
    reference = model.predict(calibration, verbose=0)
    error = {c: np.mean((run_tflite(f, calibration) - reference) ** 2)
             for c, f in files.items()}
    assert error[True] < error[False]  # here the correction helps, so auto keeps it
    assert files["auto"].bias_corrected and not files[False].bias_corrected
    assert open(files["auto"], "rb").read() == open(files[True], "rb").read()
    # float exports: nothing to correct
    assert not to_tflite(model, tmp_path / "f.tflite").bias_corrected
    with pytest.raises(ValueError, match="bias_correction"):
        to_tflite(model, tmp_path / "x.tflite", quantization="int8",
                  representative_data=calibration, bias_correction="yes")


def _factored_model(kind, rng):
    """One factored layer (coarse weights: every seventh weight 1.0) on 4 channels, then a
    BatchNormalization with a large moving mean (or the layer's own bias, "kron_bias")."""
    from kronecker_zoo.layers import KroneckerConv2D, LowRankConv2D

    with_bn = kind != "kron_bias"
    layers = {
        "kron_batch": lambda: KroneckerConv2D(6, 6, factors=[(3, 3, 2, 2), (2, 2, 2, 3)],
                                              rank=2, padding="same", use_bias=False,
                                              lowering="batch"),
        "kron_channels": lambda: KroneckerConv2D(6, 6, factors=[(3, 3, 2, 2), (2, 2, 2, 3)],
                                                 rank=2, padding="same", use_bias=False,
                                                 lowering="channels"),
        "kron_bias": lambda: KroneckerConv2D(6, 6, factors=[(3, 3, 2, 2), (2, 2, 2, 3)],
                                             rank=2, strides=2, padding="same"),
        "lowrank": lambda: LowRankConv2D(6, 3, rank=2, padding="same", use_bias=False),
        "separable": lambda: keras.layers.SeparableConv2D(6, 3, padding="same",
                                                          use_bias=False),
        "depthwise": lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2,
                                                          padding="same", use_bias=False),
    }
    inputs = keras.Input((16, 16, 4))
    layer = layers[kind]()
    outputs = layer(inputs)
    if with_bn:
        outputs = keras.layers.BatchNormalization(name="bn")(outputs)
    model = keras.Model(inputs, outputs)
    for weight in layer.weights:
        value = rng.normal(0, 0.05, weight.shape)
        value.reshape(-1)[::7] = 1.0
        weight.assign(value.astype("float32"))
    if with_bn:
        bn = model.get_layer("bn")
        c = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
        bn.beta.assign(rng.normal(0, 1, c).astype("float32"))
        bn.moving_mean.assign(rng.normal(50, 10, c).astype("float32"))
        bn.moving_variance.assign(rng.uniform(1.0, 4.0, c).astype("float32"))
    return model


@pytest.mark.parametrize("kind", ["kron_batch", "kron_channels", "kron_bias", "lowrank",
                                  "separable", "depthwise"])
def test_factored_layers_are_corrected_as_the_file_rounds_their_weights(kind, tmp_path):
    # a wrong emulation of how the exported cascade rounds each factor (wrong scale
    # groups, wrong step order, wrong place for the correction) leaves a mean error of
    # the same order as the uncorrected one
    rng = np.random.default_rng(6)
    model = _factored_model(kind, rng)
    before = [np.array(w) for w in model.get_weights()]
    calibration = rng.integers(100, 256, (48, 16, 16, 4)).astype("float32")
    reference = np.asarray(model.predict(calibration, verbose=0), np.float64)
    mean_error = {}
    for correct in (False, True):
        path = to_tflite(model, tmp_path / f"{kind}{correct}.tflite", quantization="int8",
                         representative_data=calibration, bias_correction=correct)
        assert path.bias_corrected == correct
        out = run_tflite(path, calibration).astype(np.float64)
        mean_error[correct] = np.abs((out - reference).mean(axis=(0, 1, 2))).max()
    output_step = (reference.max() - reference.min()) / 255
    assert mean_error[False] > 0.25 * output_step, (mean_error, output_step)
    assert mean_error[True] < 0.1 * mean_error[False], mean_error
    for old, new in zip(before, model.get_weights()):  # the caller's model untouched
        np.testing.assert_array_equal(old, new)


def test_targets_are_found_in_the_execution_the_file_is_traced_with(tmp_path):
    """Built materialized, a Kronecker layer without a bias ends in one convolution and
    its BatchNormalization (no beta) would fold with nothing to correct; the file traces
    it factored ("batch" lowering, ending in a transpose), where the BatchNormalization
    becomes a depthwise convolution whose bias takes the correction."""
    from kronecker_zoo.layers import KroneckerConv2D

    rng = np.random.default_rng(7)
    inputs = keras.Input((16, 16, 4))
    layer = KroneckerConv2D(6, 6, factors=[(3, 3, 2, 2), (2, 2, 2, 3)], rank=2,
                            padding="same", use_bias=False, execution="materialized",
                            lowering="batch")
    outputs = keras.layers.BatchNormalization(center=False, name="bn")(layer(inputs))
    model = keras.Model(inputs, outputs)
    for weight in layer.weights:
        value = rng.normal(0, 0.05, weight.shape)
        value.reshape(-1)[::7] = 1.0
        weight.assign(value.astype("float32"))
    calibration = rng.integers(100, 256, (48, 16, 16, 4)).astype("float32")
    corrected = to_tflite(model, tmp_path / "c.tflite", quantization="int8",
                          representative_data=calibration, bias_correction=True)
    plain = to_tflite(model, tmp_path / "p.tflite", quantization="int8",
                      representative_data=calibration, bias_correction=False)
    assert corrected.bias_corrected and not plain.bias_corrected
    reference = np.asarray(model.predict(calibration, verbose=0), np.float64)
    errors = [np.abs((run_tflite(f, calibration) - reference).mean(axis=(0, 1, 2))).max()
              for f in (plain, corrected)]
    assert errors[1] < 0.5 * errors[0], errors


@pytest.mark.parametrize("kind", ["kron_batch", "kron_channels"])
def test_auto_converts_both_candidates_from_one_private_copy(kind, tmp_path, monkeypatch):
    # "auto" traces its two candidates and checks for targets on one copy of the model:
    # each conversion must undo its rewrites (int8 rewrites, bias correction, forced
    # execution), or the second candidate differs from the same choice made alone
    from kronecker_zoo.export import tflite as tflite_module

    rng = np.random.default_rng(8)
    model = _factored_model(kind, rng)
    before = [np.array(w) for w in model.get_weights()]
    calibration = rng.integers(100, 256, (32, 16, 16, 4)).astype("float32")
    alone = {c: open(to_tflite(model, tmp_path / f"{c}.tflite", quantization="int8",
                               representative_data=calibration, bias_correction=c),
                     "rb").read() for c in (False, True)}
    copies = []
    real_copy = tflite_module.private_copy
    monkeypatch.setattr(tflite_module, "private_copy",
                        lambda m: copies.append(m) or real_copy(m))
    auto = to_tflite(model, tmp_path / "auto.tflite", quantization="int8",
                     representative_data=calibration)
    assert len(copies) == 1 and copies[0] is model
    assert open(auto, "rb").read() == alone[auto.bias_corrected]
    assert alone[True] != alone[False]  # the correction changes this file
    for old, new in zip(before, model.get_weights()):  # the caller's model untouched
        np.testing.assert_array_equal(old, new)
