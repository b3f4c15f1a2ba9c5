"""Float-exact int8 rewrites (BatchNormalization as a depthwise conv, Kronecker range
equalisation), checked against np.kron and the unrewritten model."""

import keras
import numpy as np
import tensorflow as tf
import pytest

from kronecker_zoo import kernels, models
from kronecker_zoo.export import (
    pretraining_calibration_data,
    tflite_op_counts,
    to_tflite,
    verify_tflite,
)
from kronecker_zoo.export.execution import forced_execution
from kronecker_zoo.export.int8_rewrites import int8_rewrites, unfoldable_batchnorms
from kronecker_zoo.layers import KroneckerConv2D


def test_channel_scales_recover_an_additive_log_grid():
    rng = np.random.default_rng(0)
    a0, a1, a2 = rng.normal(size=4), rng.normal(size=3), rng.normal(size=2)
    log_values = (a0[:, None, None] + a1[None, :, None] + a2[None, None, :] + 0.7).ravel()
    scales = kernels.kronecker_channel_scales(log_values, (4, 3, 2))
    assert [s.shape for s in scales] == [(4,), (3,), (2,)]
    product = np.kron(np.kron(scales[0], scales[1]), scales[2])
    np.testing.assert_allclose(product, np.exp(log_values - log_values.mean()), rtol=1e-12)
    for s in scales:
        assert np.exp(np.log(s).mean()) == pytest.approx(1.0)


def test_channel_scales_are_the_least_squares_fit():
    rng = np.random.default_rng(1)
    log_values = rng.normal(size=12)
    scales = kernels.kronecker_channel_scales(log_values, (3, 4))
    fit = np.log(np.kron(scales[0], scales[1]))
    # least squares of log_values - mean over the additive model: compare with lstsq
    design = np.concatenate([np.kron(np.eye(3), np.ones((4, 1))),
                             np.kron(np.ones((3, 1)), np.eye(4)),
                             np.ones((12, 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, log_values, rcond=None)
    np.testing.assert_allclose(fit, design @ coef - (design @ coef).mean(), atol=1e-12)


def _kron_bn_model(seed=0, lowering="batch"):
    inputs = keras.Input((12, 12, 16))
    x = KroneckerConv2D(16, 9, factors=[(3, 3, 4, 4), (3, 3, 4, 4)], rank=2, use_bias=True,
                        execution="factored", lowering=lowering, name="kron")(inputs)
    x = keras.layers.BatchNormalization(name="kron_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(x)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    model = keras.Model(inputs, x, name="kron_bn_model")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=n).astype("float32"))
            layer.moving_variance.assign(np.exp(rng.normal(0, 1.5, n)).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 2, n).astype("float32"))
            layer.beta.assign(rng.normal(size=n).astype("float32"))
    kron = model.get_layer("kron")
    kron.bias.assign(rng.normal(size=16).astype("float32"))
    return model


def test_rewrites_keep_the_function_and_restore_the_weights():
    model = _kron_bn_model()
    x = np.random.default_rng(2).normal(size=(3, 12, 12, 16)).astype("float32")
    before = model(x, training=False).numpy()
    weights = [np.array(w) for w in model.weights]
    with int8_rewrites(model) as rewritten:
        # the "batch" lowering ends in a reshape: nothing to fold kron_bn into;
        # conv_bn folds into its Conv2D anyway
        assert rewritten == ["kron_bn"]
        factors = [np.array(f) for f in model.get_layer("kron").factor_weights]
        assert not np.allclose(factors[0], weights[0])  # ranges equalised
        during = model(x, training=False).numpy()
    after = model(x, training=False).numpy()
    scale = np.abs(before).max()
    assert np.abs(during - before).max() <= 1e-5 * scale
    np.testing.assert_array_equal(after, before)
    for w, value in zip(model.weights, weights):
        np.testing.assert_array_equal(np.array(w), value)


def test_rewrites_restore_the_weights_on_error():
    model = _kron_bn_model()
    weights = [np.array(w) for w in model.weights]
    with pytest.raises(RuntimeError):
        with int8_rewrites(model):
            raise RuntimeError("boom")
    for w, value in zip(model.weights, weights):
        np.testing.assert_array_equal(np.array(w), value)
    assert "call" not in model.get_layer("kron_bn").__dict__


def _last_op(layer):
    """``(type, grouped)`` of the last op (past identities) of ``layer`` traced as it runs
    now; ``grouped``: a Conv2D whose filter has fewer input channels than its input."""
    shape = (1,) + tuple(int(v) for v in layer.input.shape[1:])
    graph = tf.function(lambda x: layer(x)).get_concrete_function(
        tf.TensorSpec(shape, "float32")).graph
    op = graph.outputs[0].op
    while op.type in ("Identity", "IdentityN"):
        op = op.inputs[0].op
    grouped = op.type == "Conv2D" and op.inputs[1].shape[-2] < op.inputs[0].shape[-1]
    return op.type, grouped


def test_int8_file_runs_the_batchnorm_as_a_depthwise_conv(tmp_path):
    model = models.get("kron_resnet_8", weights="fashion_mnist")
    images = np.random.default_rng(0).uniform(0, 255, (64, 28, 28, 1)).astype("float32")
    int8 = to_tflite(model, tmp_path / "i8.tflite", quantization="int8",
                     representative_data=images)
    f32 = to_tflite(model, tmp_path / "f32.tflite")
    # 6 KroneckerConv2D, each followed by a BatchNormalization; those planned (on the int8
    # costs) in the "batch" lowering end in a transpose, those in the "channels" lowering
    # whose last step is a grouped convolution end in it, so the converter cannot fold their
    # BatchNormalization: each of those runs as one DEPTHWISE_CONV_2D
    kron = [layer for layer in model.layers if isinstance(layer, KroneckerConv2D)]
    assert len(kron) == 6
    with forced_execution(model, "factored", runtime="litert_int8") as layers:
        unfoldable = unfoldable_batchnorms(model)
        last_ops = {layer.name: _last_op(layer) for layer in layers}
        lowering = {layer.name: layer.resolved_lowering for layer in layers}
    assert unfoldable
    for _, producer in unfoldable:
        op, grouped = last_ops[producer.name]
        assert ((lowering[producer.name] == "batch" and op in ("Transpose", "Reshape"))
                or (lowering[producer.name] == "channels" and op == "Conv2D" and grouped)), (
            producer.name, lowering[producer.name], op)
    assert tflite_op_counts(int8).get("DEPTHWISE_CONV_2D", 0) == len(unfoldable)
    assert "DEPTHWISE_CONV_2D" not in tflite_op_counts(f32)  # float files are untouched
    report = verify_tflite(model, int8, images[:16])
    assert report.sqnr_db > 20, str(report)


@pytest.mark.slow
def test_kron_resnet_int8_agrees_with_keras_on_the_whole_test_set(tmp_path):
    """99.05% since the input pixels are held exactly (rewrite 4; 98.96% before, issue 13)."""
    from kronecker_zoo import data

    model = models.get("kron_resnet_8", weights="fashion_mnist")
    images, labels = data.fashion_mnist("test")
    int8 = to_tflite(model, tmp_path / "i8.tflite", quantization="int8",
                     representative_data=pretraining_calibration_data("kron_resnet_8",
                                                                      "fashion_mnist"))
    # The Keras reference runs materialised: the same function (tests/test_kronecker_conv.py),
    # several times faster on a CPU; the file holds the factored execution.
    report = verify_tflite(model, int8, images, labels, reference_execution="materialized")
    assert report.passed and report.agreement >= 0.99, str(report)
    assert report.tflite_accuracy >= report.keras_accuracy - 0.005, str(report)


def _low_rank_bn_model(seed=0):
    """Conv -> LowRankConv2D -> BatchNormalization with per-channel sigmas spread over
    three decades and rank channels of very different scales (what SVD-initialised,
    distilled students end up with)."""
    from kronecker_zoo.layers import LowRankConv2D

    inputs = keras.Input((12, 12, 8))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inputs)
    x = LowRankConv2D(24, 3, rank=6, name="low")(x)
    x = keras.layers.BatchNormalization(name="low_bn")(x)
    model = keras.Model(inputs, keras.layers.ReLU()(x))
    rng = np.random.default_rng(seed)
    low, bn = model.get_layer("low"), model.get_layer("low_bn")
    rank_scale = np.exp(rng.normal(0, 2, 6))
    low.vertical.assign((np.asarray(low.vertical) * rank_scale).astype("float32"))
    low.horizontal.assign((np.asarray(low.horizontal)
                           / rank_scale[None, None, :, None]).astype("float32"))
    sigma = np.exp(rng.uniform(-3.5, 3.5, 24))
    bn.moving_variance.assign((sigma ** 2).astype("float32"))
    bn.moving_mean.assign(rng.normal(size=24).astype("float32"))
    low.horizontal.assign((np.asarray(low.horizontal) * sigma).astype("float32"))
    return model


def test_low_rank_rewrites_keep_the_function_and_save_int8(tmp_path):
    """The rank channels of a LowRankConv2D are balanced (exact in float, weights restored
    afterwards) and the BatchNormalization after it is left to the converter, which folds
    it into the second convolution: the int8 file goes from noise to the 20 dB bar."""
    model = _low_rank_bn_model()
    x = np.random.default_rng(3).normal(size=(64, 12, 12, 8)).astype("float32")
    before = model(x, training=False).numpy()
    weights = [np.array(w) for w in model.weights]
    with int8_rewrites(model) as rewritten:
        assert rewritten == []
        during = model(x, training=False).numpy()
        assert not np.allclose(np.array(model.get_layer("low").vertical), weights[2])
    assert np.abs(during - before).max() <= 1e-5 * np.abs(before).max()
    for w, value in zip(model.weights, weights):
        np.testing.assert_array_equal(np.array(w), value)
    int8 = to_tflite(model, tmp_path / "i8.tflite", quantization="int8", representative_data=x)
    assert verify_tflite(model, int8, x[:16]).sqnr_db > 20
    assert set(tflite_op_counts(int8)) == {"QUANTIZE", "CONV_2D", "DEQUANTIZE"}


@pytest.mark.parametrize("kind", ["kron_channels", "kron_low_rank_shape", "low_rank",
                                  "kron_relu"])
def test_batchnorm_folds_where_the_layer_ends_in_a_convolution(kind, tmp_path):
    """The converter folds a BatchNormalization into a factored layer whose traced output
    is a convolution's (the float32 file, which no rewrite touches, is the reference):
    the int8 file then has exactly the float32 file's ops, and no MUL or depthwise
    convolution is added for the BatchNormalization. After an activation it cannot fold,
    and the BatchNormalization is rewritten as a depthwise convolution."""
    from kronecker_zoo.export.int8_rewrites import ends_in_convolution
    from kronecker_zoo.layers import LowRankConv2D

    inputs = keras.Input((12, 12, 16))
    layer = {
        "kron_channels": lambda: KroneckerConv2D(16, 9, factors=[(3, 3, 4, 4), (3, 3, 4, 4)],
                                                 rank=2, execution="factored",
                                                 lowering="channels"),
        # "batch" lowering, but no channel axis moves: only reshapes back to the same shape
        "kron_low_rank_shape": lambda: KroneckerConv2D(16, 3, factors=[(3, 1, 16, 1),
                                                                       (1, 3, 1, 16)],
                                                       rank=4, execution="factored",
                                                       lowering="batch"),
        "low_rank": lambda: LowRankConv2D(16, 3, rank=4, padding="same"),
        "kron_relu": lambda: KroneckerConv2D(16, 9, factors=[(3, 3, 4, 4), (3, 3, 4, 4)],
                                             rank=2, execution="factored", activation="relu",
                                             lowering="channels"),
    }[kind]()
    x = keras.layers.BatchNormalization(name="bn")(layer(inputs))
    model = keras.Model(inputs, keras.layers.ReLU()(x))
    bn = model.get_layer("bn")
    rng = np.random.default_rng(4)
    bn.moving_variance.assign(np.exp(rng.normal(0, 1.5, 16)).astype("float32"))
    bn.moving_mean.assign(rng.normal(size=16).astype("float32"))
    images = rng.normal(size=(64, 12, 12, 16)).astype("float32")
    folds = kind != "kron_relu"
    assert ends_in_convolution(layer) == folds
    with int8_rewrites(model) as rewritten:
        assert rewritten == ([] if folds else ["bn"])
    int8 = to_tflite(model, tmp_path / "i8.tflite", quantization="int8",
                     representative_data=images)
    f32 = tflite_op_counts(to_tflite(model, tmp_path / "f32.tflite"))
    counts = tflite_op_counts(int8)
    assert counts.pop("QUANTIZE") == 1 and counts.pop("DEQUANTIZE") == 1
    if folds:
        assert "MUL" not in f32 and "DEPTHWISE_CONV_2D" not in f32, f32
        assert counts == f32
    else:
        assert counts["DEPTHWISE_CONV_2D"] == 1 and "MUL" not in counts, counts
    assert verify_tflite(model, int8, images[:16]).sqnr_db > 25


def test_batchnorm_after_a_layer_with_several_inputs_is_rewritten():
    """An Add has no weights to fold into (and no single input to trace)."""
    from kronecker_zoo.export.int8_rewrites import unfoldable_batchnorms

    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Add()([keras.layers.Conv2D(4, 3, padding="same")(inputs), inputs])
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    assert [bn.name for bn, _ in unfoldable_batchnorms(model)] == ["bn"]


@pytest.mark.parametrize("other_reader", ["model_output", "keras_operation"])
def test_equalisation_leaves_outputs_other_readers_see(other_reader):
    """The Kronecker factors are equalised only where the BatchNormalization is the
    layer's sole reader: here the model also returns the Kronecker output, or reads it
    through ``x * 0.5`` (a Keras operation, not a layer)."""
    inputs = keras.Input((12, 12, 16))
    k = KroneckerConv2D(16, 9, factors=[(3, 3, 4, 4), (3, 3, 4, 4)], rank=2,
                        execution="factored", lowering="batch", name="kron")(inputs)
    b = keras.layers.BatchNormalization(name="kron_bn")(k)
    if other_reader == "model_output":
        model = keras.Model(inputs, [k, b])
    else:
        model = keras.Model(inputs, keras.layers.Add()([b, k * 0.5]))
    bn = model.get_layer("kron_bn")
    bn.moving_variance.assign(np.linspace(0.1, 9.0, 16).astype("float32"))
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 16)).astype("float32")
    before = [np.asarray(y) for y in keras.ops.convert_to_numpy(model(x, training=False))] \
        if other_reader == "model_output" else [np.asarray(model(x, training=False))]
    factors = [np.array(f) for f in model.get_layer("kron").factor_weights]
    with int8_rewrites(model) as rewritten:
        assert rewritten == ["kron_bn"]  # still a depthwise convolution, not equalised
        for f, value in zip(model.get_layer("kron").factor_weights, factors):
            np.testing.assert_array_equal(np.array(f), value)
        during = model(x, training=False)
        during = [np.asarray(y) for y in during] if isinstance(during, (list, tuple)) \
            else [np.asarray(during)]
    for got, want in zip(during, before):
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_batchnorm_on_pooled_features_exports_to_int8(tmp_path):
    """A BatchNormalization on (N, C) features (after pooling) is left to the converter:
    the depthwise rewrite is for images only."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.BatchNormalization(name="pooled_bn")(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    bn = model.get_layer("pooled_bn")
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    images = np.random.default_rng(0).uniform(0, 255, (32, 8, 8, 3)).astype("float32")
    with int8_rewrites(model) as rewritten:
        assert rewritten == []
    for corrected in (False, True):
        path = to_tflite(model, tmp_path / f"pooled{corrected}.tflite", quantization="int8",
                         representative_data=images, bias_correction=corrected)
        assert verify_tflite(model, path, images).sqnr_db > 25


def test_rewrites_follow_the_dtype_of_a_mixed_precision_model():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((6, 6, 4))
        x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)  # after an activation: rewritten
        model = keras.Model(inputs, x)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.get_layer("bn").moving_variance.assign(np.linspace(0.5, 2.0, 8))
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype("float32")
    before = np.asarray(model(x, training=False), np.float32)
    with int8_rewrites(model) as rewritten:
        assert rewritten == ["bn"]
        during = np.asarray(model(x, training=False), np.float32)
    assert np.abs(during - before).max() <= 1e-2 * np.abs(before).max()  # float16 rounding


def _pixel_stem(padding, use_bias, seed=0, scale=1 / 127.5, offset=-1.0):
    """Raw pixels -> the zoo's Rescaling -> Conv2D (-> BatchNormalization when no bias)."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((10, 10, 1))
    x = keras.layers.Rescaling(scale, offset=offset, name="pixels")(inputs)
    conv = keras.layers.Conv2D(4, 3, padding=padding, use_bias=use_bias, name="stem")
    x = conv(x)
    if not use_bias:
        x = keras.layers.BatchNormalization(name="stem_bn")(x)
    model = keras.Model(inputs, keras.layers.ReLU()(x))
    for w in model.weights:
        value = rng.normal(size=w.shape)
        if "variance" in w.path:
            value = np.abs(value) + 0.5
        w.assign(value.astype("float32"))
    return model


@pytest.mark.parametrize("padding, use_bias", [("valid", True), ("same", False)])
def test_pixel_centering_keeps_the_function_and_restores_the_weights(padding, use_bias):
    """Rewrite 4: exact in float, but for the zero padding of a "same" convolution, which
    now pads the centred pixels (1/255 in the normalised units) on the border only."""
    model = _pixel_stem(padding, use_bias)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 10, 10, 1)).astype("float32")
    before = model(pixels).numpy()
    weights = [np.array(w) for w in model.weights]
    with int8_rewrites(model):
        assert "call" in model.get_layer("pixels").__dict__
        during = model(pixels).numpy()
    after = model(pixels).numpy()
    scale = np.abs(before).max()
    inner = (slice(None), slice(1, -1), slice(1, -1)) if padding == "same" else (slice(None),)
    assert np.abs(during[inner] - before[inner]).max() <= 1e-5 * scale
    if padding == "same":  # the border moves by at most 1/255 per padded tap
        kernel = np.abs(np.asarray(model.get_layer("stem").kernel)).sum(axis=(0, 1, 2))
        bn = model.get_layer("stem_bn")
        gain = np.abs(np.asarray(bn.gamma)) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
        assert 0 < np.abs(during - before).max() <= (kernel * gain).max() / 255 + 1e-5 * scale
    np.testing.assert_array_equal(after, before)
    for w, value in zip(model.weights, weights):
        np.testing.assert_array_equal(np.array(w), value)
    assert "call" not in model.get_layer("pixels").__dict__


def test_int8_file_holds_the_pixels_on_an_exact_grid(tmp_path):
    """The int8 tensor the first convolution reads is the centred pixels at scale 1, zero
    point 0 (every integer pixel exact), not x / 127.5 - 1 whose grid is half a step off."""
    from ai_edge_litert.interpreter import Interpreter

    model = _pixel_stem("same", False)
    calibration = np.random.default_rng(2).integers(0, 200, (32, 10, 10, 1)).astype("float32")
    path = to_tflite(model, tmp_path / "i8.tflite", quantization="int8",
                     representative_data=calibration)
    details = Interpreter(model_path=str(path)).get_tensor_details()
    grids = {(float(d["quantization"][0]), int(d["quantization"][1])) for d in details
             if d["dtype"] == np.int8 and tuple(d["shape"]) == (1, 10, 10, 1)}
    assert (1.0, 0) in grids and (1.0, -128) in grids, grids  # centred pixels; raw pixels
    assert not any(abs(s - 2 / 255) < 1e-6 for s, _ in grids), grids


def test_pixels_scaled_to_unit_are_not_centred():
    """x / 255 holds every pixel exactly on its own grid (zero point -128); centring it
    would move its zero padding by half the range: left as it is."""
    model = _pixel_stem("same", False, scale=1 / 255.0, offset=0.0)
    with int8_rewrites(model):
        assert "call" not in model.get_layer("pixels").__dict__
