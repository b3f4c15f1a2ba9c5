"""The int8 range of a model's outputs (`kronecker_zoo.export.output_range`), checked
against TensorFlow's own fake quantization and a brute-force search on the raw values,
and in a converted file (the scale of the tensor its DEQUANTIZE reads)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kronecker_zoo.export import to_tflite
from kronecker_zoo.export.output_range import (
    SHRINK_FACTORS,
    check_output_range,
    mse_range,
    quantization_error,
)


def _tf_error(values, low, high, num_bits=8):
    """Squared error of TensorFlow's fake quantization on [low, high]."""
    quantized = tf.quantization.fake_quant_with_min_max_args(
        tf.constant(values, tf.float32), min=float(low), max=float(high), num_bits=num_bits)
    return float(np.sum((quantized.numpy().astype(np.float64) - values) ** 2))


def _heavy_tailed(seed=0, n=50_000):
    """Logit-like values: most near zero, a long tail of confident ones."""
    return np.random.default_rng(seed).laplace(0.0, 1.0, n).astype(np.float32)


@pytest.mark.parametrize("low, high", [(-3.0, 7.0), (-12.5, 4.0), (0.0, 5.0)])
def test_quantization_error_is_tensorflows_fake_quant(low, high):
    values = np.random.default_rng(1).uniform(-15, 10, 5000).astype(np.float32)
    assert quantization_error(values, low, high) == pytest.approx(
        _tf_error(values, low, high), rel=1e-3)


@pytest.mark.parametrize("num_bits", [8, 4])
def test_mse_range_is_the_best_of_its_grid_on_the_raw_values(num_bits):
    """The histogram search picks (to within 1%) the range a brute-force search over the
    same candidates finds best with TensorFlow's fake quantization of every value; on a
    long-tailed distribution and a coarse (4-bit) grid that range clips the tail."""
    values = _heavy_tailed()
    low, high = mse_range(values, num_bits)
    lo0, hi0 = min(values.min(), 0), values.max()
    errors = {f: _tf_error(values, f * lo0, f * hi0, num_bits) for f in SHRINK_FACTORS}
    assert _tf_error(values, low, high, num_bits) <= 1.01 * min(errors.values())
    assert lo0 <= low < 0 < high <= hi0
    if num_bits == 4:  # clipping pays: the optimum is inside the grid
        assert high < 0.8 * hi0
        assert _tf_error(values, low, high, num_bits) < 0.7 * errors[1.0]


def test_mse_range_keeps_min_max_without_outliers_and_zero_inside():
    uniform = np.random.default_rng(2).uniform(-4, 9, 100_000)
    low, high = mse_range(uniform)
    assert (low, high) == pytest.approx((uniform.min(), uniform.max()), rel=0.03)
    assert mse_range(np.array([2.0, 3.0]))[0] == 0.0  # zero representable
    assert mse_range(np.zeros(4)) == (0.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mse_range(np.array([]))
    with pytest.raises(ValueError, match="NaN or inf"):
        mse_range(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="'minmax', 'mse'.*percentile"):
        check_output_range("percentile")
    assert quantization_error(np.array([1.0, -2.0]), 0.0, 0.0, counts=np.array([3, 1])) == 7.0


def _output_scale(path):
    """Scale of the int8 tensor the file's final DEQUANTIZE reads."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.Model.GetRootAs(f.read(), 0)
    graph = model.Subgraphs(0)
    output = graph.Outputs(0)
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        name = model.OperatorCodes(op.OpcodeIndex()).BuiltinCode()
        if name == schema.BuiltinOperator.DEQUANTIZE and op.Outputs(0) == output:
            return float(graph.Tensors(op.Inputs(0)).Quantization().ScaleAsNumpy()[0])
    raise AssertionError("no DEQUANTIZE produces the output")


def test_int8_file_gives_its_output_the_mse_range(tmp_path):
    """A model with long-tailed outputs: "mse" stores the output on the grid of
    `mse_range` over the calibration data, "minmax" on the calibration's min and max."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs / 255.0)
    outputs = keras.layers.Conv2D(5, 1, name="scores")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(3)
    images = np.minimum(rng.exponential(15.0, (64, 8, 8, 1)), 255).astype("float32")  # tails
    reference = model.predict(images, verbose=0)
    files = {r: to_tflite(model, tmp_path / f"{r}.tflite", quantization="int8",
                          representative_data=images, output_range=r, bias_correction=False)
             for r in ("mse", "minmax")}
    low, high = mse_range(reference)
    assert _output_scale(files["mse"]) == pytest.approx((high - low) / 255, rel=0.01)
    lo0, hi0 = min(reference.min(), 0), max(reference.max(), 0)
    assert _output_scale(files["minmax"]) == pytest.approx((hi0 - lo0) / 255, rel=0.01)
    assert _output_scale(files["mse"]) < 0.98 * _output_scale(files["minmax"])  # distinct
    with pytest.raises(ValueError, match="output_range"):
        to_tflite(model, tmp_path / "bad.tflite", quantization="int8",
                  representative_data=images, output_range="percentile")


def test_the_bias_corrected_file_gets_the_range_of_what_it_computes(tmp_path):
    """bias_correction="auto" converts twice on one copy of the model: the corrected file's
    output range is that of the corrected function (as a single corrected conversion
    gives it), not of the function the first conversion ran."""
    from kronecker_zoo import data, models

    # its rewritten BatchNormalizations take the correction (an attribute of the rewrite)
    model = models.get("kron_resnet_8", weights="fashion_mnist")
    images = data.fashion_mnist("train")[0][:64].astype("float32")
    auto = to_tflite(model, tmp_path / "auto.tflite", quantization="int8",
                     representative_data=images)
    assert auto.bias_corrected and auto.output_range == "mse"  # the case in question
    corrected = to_tflite(model, tmp_path / "on.tflite", quantization="int8",
                          representative_data=images, bias_correction=True)
    assert _output_scale(auto) == pytest.approx(_output_scale(corrected), rel=1e-5)


def test_an_output_that_is_always_zero_keeps_the_calibration_range(tmp_path):
    inputs = keras.Input((6, 6, 1))
    live = keras.layers.Conv2D(3, 3, name="live")(inputs)
    dead = keras.layers.Conv2D(2, 1, kernel_initializer="zeros", name="dead")(inputs)
    model = keras.Model(inputs, [live, dead])
    images = np.random.default_rng(5).uniform(0, 255, (16, 6, 6, 1)).astype("float32")
    info = to_tflite(model, tmp_path / "m.tflite", quantization="int8",
                     representative_data=images)
    from kronecker_zoo.export import run_tflite

    outputs = run_tflite(info, images)
    assert any(np.all(np.asarray(o) == 0) for o in outputs)
