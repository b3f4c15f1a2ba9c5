"""Tests of KroneckerConv2D against an independent NumPy reference convolution."""

import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kronecker_zoo import layers as kz_layers
from kronecker_zoo.layers import KroneckerConv2D
from tests import reference as ref
from tests.layer_checks import (
    check_config_round_trip,
    check_fit_step,
    check_saving_round_trip,
    random_input,
)

EXECUTIONS = ("factored", "materialized")


def tolerance(expected):
    """Absolute tolerance for float32 layer outputs vs the float64 reference.

    The layer computes in float32 (unit round-off 2**-24 ~ 6e-8). Each output is a
    sum of at most kh*kw*in <= 27*27*27 ~ 2e4 products (the largest case the tests
    draw); with random-signed terms the accumulated error grows like
    sqrt(#terms) * eps * (term scale), i.e. ~1e-5 of the output scale, and even the
    pessimistic linear bound stays well under 1e-3. 1e-4 of max(1, max|ref|) is
    therefore safely above round-off, while any indexing/padding/stride error moves
    outputs by O(1) of their scale and fails it.
    """
    return 1e-4 * max(1.0, float(np.max(np.abs(expected)))) if np.size(expected) else 1e-4


def to_numpy(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def kernel_hw(factors):
    return math.prod(f[0] for f in factors), math.prod(f[1] for f in factors)


def make_layer(factors, input_shape, rank=1, strides=1, padding="same", padding_mode="zeros",
               execution="factored", use_bias=True, seed=0, weights=None):
    """A built KroneckerConv2D with random (or given) weights."""
    layer = KroneckerConv2D(
        math.prod(f[3] for f in factors),
        kernel_hw(factors),
        factors,
        rank=rank,
        strides=strides,
        padding=padding,
        padding_mode=padding_mode,
        execution=execution,
        use_bias=use_bias,
    )
    layer.build(input_shape)
    if weights is None:
        g = np.random.default_rng(seed)
        weights = [g.standard_normal(w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights(weights)
    return layer


def factor_arrays(layer, factors, rank):
    """The layer's factor weights, checked to be (rank, kh, kw, in, out) each."""
    weights = layer.get_weights()
    fs = weights[: len(factors)]
    for f, shape in zip(fs, factors):
        assert f.shape == (rank,) + tuple(shape)
    return fs


def reference_output(layer, x, factors, rank, strides, padding, padding_mode, use_bias=True):
    kernel = ref.kron_kernel(factor_arrays(layer, factors, rank))
    y = ref.conv2d(x, kernel, strides=strides, padding=padding, padding_mode=padding_mode)
    if use_bias:
        y = y + layer.get_weights()[len(factors)].astype(np.float64)
    return y, kernel


def keras_conv2d_output(x, kernel, bias, strides, padding, padding_mode):
    """Plain keras Conv2D holding ``kernel``; non-zero padding modes pre-pad in NumPy."""
    kh, kw, _, cout = kernel.shape
    if padding == "same" and padding_mode != "zeros":
        x = ref.pad_same(x, (kh, kw), strides, 1, padding_mode)
        padding = "valid"
    conv = keras.layers.Conv2D(cout, (kh, kw), strides=strides, padding=padding,
                               use_bias=bias is not None)
    conv.build(x.shape)
    conv.set_weights([kernel.astype("float32")] + ([bias] if bias is not None else []))
    return to_numpy(conv(x.astype("float32")))


def check_layer_against_reference(factors, input_hw, rank=1, strides=1, padding="same",
                                  padding_mode="zeros", seed=0, batch=2, use_bias=True):
    cin = math.prod(f[2] for f in factors)
    input_shape = (batch,) + tuple(input_hw) + (cin,)
    x = random_input(input_shape, seed=seed + 1)
    expected = None
    for execution in EXECUTIONS:
        layer = make_layer(factors, input_shape, rank, strides, padding, padding_mode,
                           execution, use_bias=use_bias, seed=seed)
        assert layer.resolved_execution == execution
        got = to_numpy(layer(x))
        if expected is None:
            expected, kernel = reference_output(layer, x, factors, rank, strides, padding,
                                                padding_mode, use_bias)
            bias = layer.get_weights()[len(factors)] if use_bias else None
            plain = keras_conv2d_output(x, kernel, bias, strides, padding, padding_mode)
            tol = tolerance(expected)
            assert plain.shape == expected.shape
            np.testing.assert_allclose(plain, expected, rtol=0, atol=tol)
        assert got.shape == expected.shape, execution
        assert got.shape == tuple(layer.compute_output_shape(input_shape))
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol, err_msg=execution)
        np.testing.assert_allclose(got, plain, rtol=0, atol=tol, err_msg=execution)


# -- the reference itself --------------------------------------------------------


@pytest.mark.parametrize(
    "kernel_shape,strides,dilation,padding,input_hw",
    [
        ((3, 3, 2, 3), 1, 1, "same", (7, 8)),
        ((4, 2, 2, 3), 2, 1, "same", (9, 8)),
        ((2, 4, 3, 2), (2, 3), 1, "same", (10, 11)),
        ((5, 4, 2, 2), 3, 1, "same", (4, 5)),  # kernel larger than input
        ((3, 2, 2, 2), 1, (2, 3), "same", (9, 10)),
        ((3, 3, 2, 2), (3, 2), 1, "valid", (11, 10)),
        ((2, 3, 2, 2), 1, 2, "valid", (9, 10)),
    ],
)
def test_reference_conv_matches_keras_conv2d(kernel_shape, strides, dilation, padding, input_hw):
    """Sanity of the test oracle on the cases Keras itself covers (zero padding)."""
    g = np.random.default_rng(0)
    kernel = g.standard_normal(kernel_shape).astype("float32")
    x = g.standard_normal((2,) + input_hw + (kernel_shape[2],)).astype("float32")
    conv = keras.layers.Conv2D(kernel_shape[3], kernel_shape[:2], strides=strides,
                               dilation_rate=dilation, padding=padding, use_bias=False)
    conv.build(x.shape)
    conv.set_weights([kernel])
    expected = ref.conv2d(x, kernel, strides, dilation, padding)
    got = to_numpy(conv(x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance(expected))


def test_reference_same_padding_amounts():
    # TF: out = ceil(n / s); total = max((out - 1) * s + k - n, 0); before = total // 2
    assert ref.same_pad_amounts(10, 4, 1) == (1, 2)
    assert ref.same_pad_amounts(10, 4, 2) == (1, 1)
    assert ref.same_pad_amounts(10, 3, 3) == (1, 1)
    assert ref.same_pad_amounts(9, 3, 3) == (0, 0)
    assert ref.same_pad_amounts(5, 4, 3) == (1, 1)
    assert ref.same_pad_amounts(6, 4, 3) == (0, 1)
    assert ref.same_pad_amounts(9, 3, 1, 4) == (4, 4)


# -- the core property: output == conv with the materialised kernel ---------------

CORE_CASES = [
    # factors, input_hw, rank, strides, padding, padding_mode
    ([(3, 3, 2, 2), (3, 3, 2, 2)], (11, 12), 1, 1, "same", "zeros"),  # odd 9x9
    ([(2, 2, 2, 1), (2, 1, 1, 3)], (9, 8), 1, 1, "same", "zeros"),  # even 4x2
    ([(2, 2, 2, 1), (2, 1, 1, 3)], (9, 8), 2, 2, "same", "zeros"),
    ([(2, 3, 1, 2), (1, 2, 2, 1), (2, 1, 2, 2)], (13, 14), 3, (2, 3), "same", "reflect"),
    ([(2, 3, 1, 2), (1, 2, 2, 1), (2, 1, 2, 2)], (13, 14), 1, (2, 3), "same", "symmetric"),
    ([(2, 2, 1, 2), (2, 2, 2, 2)], (10, 9), 2, 2, "same", "reflect"),  # even 4x4
    ([(2, 2, 1, 2), (2, 2, 2, 2)], (10, 9), 2, 2, "same", "symmetric"),
    ([(3, 1, 2, 2), (1, 3, 2, 1)], (8, 10), 1, 3, "same", "zeros"),
    ([(3, 1, 2, 2), (1, 3, 2, 1)], (8, 10), 2, 3, "same", "reflect"),
    ([(3, 3, 2, 2), (1, 2, 1, 2)], (7, 11), 3, 3, "valid", "zeros"),
    ([(3, 2, 1, 2), (2, 2, 2, 1), (1, 2, 1, 2)], (9, 12), 2, (2, 3), "valid", "zeros"),
    ([(3, 3, 1, 1), (3, 3, 1, 1), (1, 1, 2, 2)], (9, 9), 1, 1, "valid", "zeros"),  # 9x9 exact
    ([(3, 3, 1, 1), (3, 3, 1, 1)], (9, 9), 1, 2, "same", "symmetric"),
    ([(1, 1, 2, 3), (1, 1, 2, 2)], (5, 6), 2, 1, "same", "zeros"),  # 1x1
]


@pytest.mark.parametrize("factors,input_hw,rank,strides,padding,padding_mode", CORE_CASES)
def test_layer_matches_reference(factors, input_hw, rank, strides, padding, padding_mode):
    check_layer_against_reference(factors, input_hw, rank, strides, padding, padding_mode)


def test_layer_without_bias_matches_reference():
    check_layer_against_reference([(2, 3, 2, 2), (2, 1, 2, 2)], (8, 9), rank=2, strides=2,
                                  padding="same", padding_mode="reflect", use_bias=False)


factor_shape = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
                         st.integers(1, 3))


@st.composite
def conv_cases(draw):
    factors = draw(st.lists(factor_shape, min_size=2, max_size=3))
    rank = draw(st.integers(1, 2))
    strides = draw(st.sampled_from([1, 2, (1, 2), (2, 1)]))
    padding = draw(st.sampled_from(["same", "valid"]))
    padding_mode = draw(st.sampled_from(["zeros", "reflect", "symmetric"])) if (
        padding == "same") else "zeros"
    kh, kw = kernel_hw(factors)
    input_hw = (draw(st.integers(kh, kh + 3)), draw(st.integers(kw, kw + 3)))
    seed = draw(st.integers(0, 1000))
    return factors, input_hw, rank, strides, padding, padding_mode, seed


@given(conv_cases())
def test_layer_matches_reference_property(case):
    factors, input_hw, rank, strides, padding, padding_mode, seed = case
    check_layer_against_reference(factors, input_hw, rank, strides, padding, padding_mode,
                                  seed=seed, batch=1)


# -- gradients -------------------------------------------------------------------


def tf_or_skip():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("uses tf.GradientTape / tf.function")
    import tensorflow as tf

    return tf


@pytest.mark.training
@pytest.mark.parametrize(
    "factors,input_hw,rank,strides,padding,padding_mode",
    [
        ([(3, 3, 2, 2), (3, 3, 2, 2)], (11, 10), 1, 1, "same", "zeros"),
        ([(2, 3, 1, 2), (1, 2, 2, 1), (2, 1, 2, 2)], (13, 14), 2, (2, 3), "same", "reflect"),
        ([(2, 2, 2, 1), (2, 1, 1, 3)], (9, 8), 2, 2, "same", "symmetric"),
        ([(3, 2, 1, 2), (2, 2, 2, 1)], (9, 8), 2, (2, 1), "valid", "zeros"),
    ],
)
def test_gradients_factored_equal_materialized(factors, input_hw, rank, strides, padding,
                                               padding_mode):
    tf = tf_or_skip()
    cin = math.prod(f[2] for f in factors)
    input_shape = (2,) + input_hw + (cin,)
    x = tf.constant(random_input(input_shape, seed=7))
    grads = {}
    weights = None
    for execution in EXECUTIONS:
        layer = make_layer(factors, input_shape, rank, strides, padding, padding_mode,
                           execution, seed=3, weights=weights)
        weights = layer.get_weights()
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            cotangent = np.random.default_rng(11).standard_normal(y.shape).astype("float32")
            loss = tf.reduce_sum(y * cotangent)
        variables = list(layer.factor_weights) + [layer.bias]
        grads[execution] = [to_numpy(g) for g in tape.gradient(loss, [x] + variables)]
    names = ["input"] + [f"factor_{k}" for k in range(len(factors))] + ["bias"]
    for name, ga, gb in zip(names, grads["factored"], grads["materialized"]):
        assert ga.shape == gb.shape, name
        assert np.any(ga != 0), name
        np.testing.assert_allclose(ga, gb, rtol=0, atol=tolerance(gb), err_msg=name)


# -- kernel property and initialisation -----------------------------------------------


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_kernel_property_is_sum_of_krons(rank):
    factors = [(2, 3, 2, 1), (3, 1, 1, 2), (1, 2, 2, 2)]
    layer = make_layer(factors, (None, 6, 6, 4), rank=rank, seed=rank)
    expected = ref.kron_kernel(layer.get_weights()[:3])
    got = to_numpy(layer.kernel)
    assert got.shape == (6, 6, 4, 4) == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


BIG_FACTORS = [(3, 3, 16, 8), (3, 3, 16, 8)]  # kernel (9, 9, 256, 64)
FAN_IN, FAN_OUT = 9 * 9 * 256, 9 * 9 * 64


@pytest.mark.parametrize(
    "initializer,expected_var,rank",
    [
        (keras.initializers.GlorotUniform(seed=1), 2.0 / (FAN_IN + FAN_OUT), 1),
        (keras.initializers.HeNormal(seed=2), 2.0 / FAN_IN, 1),
        (keras.initializers.HeNormal(seed=3), 2.0 / FAN_IN, 2),
        (keras.initializers.LecunNormal(seed=4), 1.0 / FAN_IN, 1),
        (keras.initializers.VarianceScaling(2.0, "fan_out", "uniform", seed=5), 2.0 / FAN_OUT, 1),
    ],
)
def test_initializer_gives_full_kernel_variance(initializer, expected_var, rank):
    layer = KroneckerConv2D(64, 9, BIG_FACTORS, rank=rank, kernel_initializer=initializer)
    layer.build((None, 16, 16, 256))
    kernel = to_numpy(layer.kernel).astype(np.float64)
    assert kernel.shape == (9, 9, 256, 64)
    var = float(np.mean(kernel ** 2))  # zero-mean by construction
    assert abs(var / expected_var - 1) < 0.2, (var, expected_var)
    assert abs(np.mean(kernel)) < 0.05 * math.sqrt(expected_var)


def test_non_variance_scaling_initializer_applies_per_factor():
    layer = KroneckerConv2D(4, 4, [(2, 2, 2, 2), (2, 2, 2, 2)], rank=2, kernel_initializer="ones")
    layer.build((None, 8, 8, 4))
    for w in layer.factor_weights:
        np.testing.assert_array_equal(to_numpy(w), 1.0)
    np.testing.assert_array_equal(to_numpy(layer.kernel), 2.0)  # sum of two all-ones krons


def test_a_seeded_non_variance_scaling_initializer_draws_each_factor_apart():
    # A seeded Keras initializer repeats its values at every call: shared as it is, two
    # factors of one shape would start equal. The first draws what the user's seed would.
    init = keras.initializers.RandomNormal(stddev=1.0, seed=11)
    layer = KroneckerConv2D(4, 9, [(3, 3, 2, 2), (3, 3, 2, 2)], kernel_initializer=init)
    layer.build((None, 9, 9, 4))
    first, second = (to_numpy(w) for w in layer.factor_weights)
    assert first.shape == second.shape
    assert not np.allclose(first, second)
    again = KroneckerConv2D(4, 9, [(3, 3, 2, 2), (3, 3, 2, 2)], kernel_initializer=init)
    again.build((None, 9, 9, 4))
    for w, v in zip(layer.factor_weights, again.factor_weights):
        np.testing.assert_array_equal(to_numpy(w), to_numpy(v))  # still reproducible


# -- execution="auto" and MAC counts -------------------------------------------------


def hand_factored_macs_9x9_64():
    # inner step: 3x3 conv 8->8, 8 groups, on the 72x72 padded input -> 70x70 valid
    # outer step: 3x3 conv 8->8 at dilation 3, 8 groups, 70x70 -> 64x64
    return 8 * 70 * 70 * 3 * 3 * 8 * 8 + 8 * 64 * 64 * 3 * 3 * 8 * 8


def test_macs_hand_count():
    layer = KroneckerConv2D(64, 9, [(3, 3, 8, 8), (3, 3, 8, 8)], execution="factored",
                            lowering="batch")
    counts = layer.macs((64, 64), execution=None)
    assert counts["factored"] == hand_factored_macs_9x9_64()
    assert counts["materialized"] == 64 * 64 * 81 * 64 * 64
    assert layer.macs((64, 64), execution="factored") == counts["factored"]
    assert layer.macs((64, 64)) == counts["factored"]  # the configured execution
    layer_m = KroneckerConv2D(64, 9, [(3, 3, 8, 8), (3, 3, 8, 8)], execution="materialized")
    assert layer_m.macs((64, 64)) == counts["materialized"]


def test_macs_rank_and_valid_and_strides():
    factors = [(3, 3, 8, 8), (3, 3, 8, 8)]
    one = KroneckerConv2D(64, 9, factors, rank=1, lowering="batch").macs((64, 64), execution=None)
    three = KroneckerConv2D(64, 9, factors, rank=3, lowering="batch").macs((64, 64), execution=None)
    assert three["factored"] == 3 * one["factored"]
    assert three["materialized"] == one["materialized"]
    valid = KroneckerConv2D(64, 9, factors, padding="valid", lowering="batch").macs((64, 64), execution=None)
    # valid: inner 64 -> 62, outer 62 -> 56
    assert valid["factored"] == 8 * 9 * 64 * (62 * 62 + 56 * 56)
    assert valid["materialized"] == 56 * 56 * 81 * 64 * 64
    strided = KroneckerConv2D(64, 9, factors, strides=3, lowering="batch").macs((64, 64), execution=None)
    # same, stride 3: out 22, total pad = 21*3 + 9 - 64 = 8 -> 72; the stride 3 divides
    # the outer dilation, so the inner 3x3 conv strides: (72-3)//3+1 = 24, outer 24 -> 22
    assert strided["factored"] == 8 * 9 * 64 * (24 * 24 + 22 * 22)
    assert strided["materialized"] == 22 * 22 * 81 * 64 * 64


AUTO_CASES = [
    # factors, input shape at build
    ([(3, 3, 8, 8), (3, 3, 8, 8)], (None, 64, 64, 64)),
    ([(1, 1, 8, 1), (3, 3, 1, 8)], (None, 64, 64, 8)),
    ([(1, 1, 1, 64), (3, 3, 64, 64)], (None, 64, 64, 64)),
    ([(3, 3, 8, 8), (3, 3, 8, 8)], (None, None, None, 64)),  # nominal size
    ([(1, 1, 8, 1), (3, 3, 1, 8)], (None, 16, 24, 8)),
    ([(3, 3, 8, 8), (1, 1, 1, 1)], (None, 16, 16, 8)),  # a trivial factor: only extra MACs
]


def test_auto_execution_picks_the_cheaper():
    chosen = []
    for factors, input_shape in AUTO_CASES:
        kh, kw = kernel_hw(factors)
        layer = KroneckerConv2D(math.prod(f[3] for f in factors), (kh, kw), factors)
        layer.build(input_shape)
        hw = tuple(64 if d is None else d for d in input_shape[1:3])
        counts = layer.macs(hw, execution=None)
        assert counts["factored"] != counts["materialized"]
        best = min(counts, key=counts.get)
        assert layer.resolved_execution == best, (factors, counts)
        assert layer.macs(hw) == counts[best]
        chosen.append(best)
    assert chosen[0] == "factored"  # 9x9 (3x3, 8, 8) x (3x3, 8, 8)
    # (1x1, 8->1) (x) (3x3, 1->8) run outer factor first: 8 + 72 MACs per pixel, not 576
    assert chosen[1] == "factored"
    assert chosen[-1] == "materialized"
    assert set(chosen) == {"factored", "materialized"}


def test_auto_execution_output_matches_reference():
    factors = [(1, 1, 2, 1), (3, 3, 1, 2)]
    layer = KroneckerConv2D(2, 3, factors, execution="auto")
    x = random_input((2, 7, 7, 2), seed=5)
    y = to_numpy(layer(x))
    assert layer.resolved_execution in EXECUTIONS
    expected = ref.conv2d(x, ref.kron_kernel(layer.get_weights()[:2]), padding="same")
    expected = expected + layer.get_weights()[2]
    np.testing.assert_allclose(y, expected, rtol=0, atol=tolerance(expected))


# -- config, saving, models, training ----------------------------------------------------


def full_kwargs():
    return dict(
        filters=6,
        kernel_size=(4, 3),
        factors=[(2, 3, 2, 3), (2, 1, 2, 2)],
        rank=2,
        strides=(2, 1),
        padding="same",
        padding_mode="reflect",
        execution="factored",
        use_bias=False,
        activation="relu",
        kernel_initializer=keras.initializers.HeNormal(seed=3),
        bias_initializer="ones",
        kernel_regularizer=keras.regularizers.L2(1e-3),
        bias_regularizer=keras.regularizers.L1(1e-3),
        kernel_constraint=keras.constraints.MaxNorm(2.0),
        bias_constraint=keras.constraints.NonNeg(),
    )


def test_config_covers_init_and_round_trips():
    check_config_round_trip(KroneckerConv2D, full_kwargs(), (2, 9, 8, 4))
    kwargs = full_kwargs()
    kwargs.update(use_bias=True, execution="materialized", padding="valid", padding_mode="zeros",
                  rank=1)
    check_config_round_trip(KroneckerConv2D, kwargs, (2, 9, 8, 4))


def test_from_config_after_build_keeps_the_computation():
    kwargs = full_kwargs()
    kwargs.update(use_bias=True, activation=None)
    layer = KroneckerConv2D(**kwargs)
    x = random_input((2, 9, 8, 4))
    layer(x)
    clone = KroneckerConv2D.from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    expected = ref.conv2d(x, ref.kron_kernel(layer.get_weights()[:2]), (2, 1), 1, "same",
                          "reflect") + layer.get_weights()[2]
    np.testing.assert_allclose(to_numpy(clone(x)), expected, rtol=0, atol=tolerance(expected))


@pytest.mark.parametrize("execution", ["factored", "materialized", "auto"])
def test_keras_saving_round_trip(execution, tmp_path):
    def factory():
        return KroneckerConv2D(6, (4, 3), [(2, 3, 2, 3), (2, 1, 2, 2)], rank=2, strides=2,
                               padding_mode="symmetric", execution=execution)

    loaded = check_saving_round_trip(factory, (2, 10, 9, 4), tmp_path)
    layer = loaded.layers[-1]
    assert isinstance(layer, KroneckerConv2D)
    assert layer.execution == execution
    if execution == "auto":
        assert layer.resolved_execution in EXECUTIONS
    else:
        assert layer.resolved_execution == execution


@pytest.mark.training
@pytest.mark.parametrize("execution", EXECUTIONS)
def test_fit_step_lowers_loss(execution):
    check_fit_step(
        lambda: KroneckerConv2D(4, 4, [(2, 2, 2, 2), (2, 2, 2, 2)], rank=2, execution=execution),
        (4, 8, 8, 4),
    )


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_functional_model_with_unknown_spatial_size(execution):
    factors = [(2, 3, 1, 2), (2, 1, 2, 2)]
    inputs = keras.Input((None, None, 2))
    layer = KroneckerConv2D(4, (4, 3), factors, strides=2, padding_mode="reflect",
                            execution=execution)
    model = keras.Model(inputs, layer(inputs))
    g = np.random.default_rng(0)
    model.set_weights([g.standard_normal(w.shape).astype("float32") for w in model.get_weights()])
    kernel = ref.kron_kernel(layer.get_weights()[:2])
    bias = layer.get_weights()[2]
    for hw in [(9, 11), (16, 13)]:
        x = random_input((2,) + hw + (2,), seed=hw[0])
        expected = ref.conv2d(x, kernel, 2, 1, "same", "reflect") + bias
        for y in (to_numpy(model(x)), model.predict(x, verbose=0)):
            assert y.shape == expected.shape
            np.testing.assert_allclose(y, expected, rtol=0, atol=tolerance(expected))


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_graph_mode_with_dynamic_shapes(execution):
    """Traced once with (None, None, None, C): the dynamic "same" padding path."""
    tf = tf_or_skip()
    factors = [(2, 2, 2, 1), (2, 1, 1, 2)]
    layer = make_layer(factors, (None, None, None, 2), strides=(2, 3), padding_mode="symmetric",
                       execution=execution, seed=4)
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 2), tf.float32)])
    kernel = ref.kron_kernel(layer.get_weights()[:2])
    for hw in [(7, 10), (12, 9)]:
        x = random_input((1,) + hw + (2,), seed=sum(hw))
        expected = ref.conv2d(x, kernel, (2, 3), 1, "same", "symmetric") + layer.get_weights()[2]
        got = to_numpy(fn(tf.constant(x)))
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance(expected))


def test_count_params_and_dense_equivalent():
    layer = KroneckerConv2D(64, 9, [(3, 3, 8, 8), (3, 3, 8, 8)], rank=2)
    layer.build((None, 32, 32, 64))
    assert layer.count_params() == 2 * 2 * 3 * 3 * 8 * 8 + 64
    assert layer.dense_equivalent_params() == 9 * 9 * 64 * 64 + 64


# -- errors --------------------------------------------------------------------------


def test_error_factor_products_mismatch():
    with pytest.raises(ValueError, match=r"kh multiply to 3 x 3 = 9, but kernel_size\[0\]"):
        KroneckerConv2D(4, (5, 9), [(3, 3, 2, 2), (3, 3, 2, 2)])
    with pytest.raises(ValueError, match=r"kw multiply to 3 x 2 = 6, but kernel_size\[1\]"):
        KroneckerConv2D(4, (9, 9), [(3, 3, 2, 2), (3, 2, 2, 2)])
    with pytest.raises(ValueError, match=r"out multiply to 2 x 3 = 6, but filters is 5"):
        KroneckerConv2D(5, 9, [(3, 3, 2, 2), (3, 3, 2, 3)])


def test_error_input_channels_mismatch():
    layer = KroneckerConv2D(4, 9, [(3, 3, 2, 2), (3, 3, 2, 2)])
    with pytest.raises(ValueError, match=r"multiply to 2 x 2 = 4, but the input has 3 channels"):
        layer(np.zeros((1, 9, 9, 3), "float32"))


@pytest.mark.parametrize("make", [
    lambda: KroneckerConv2D(4, 9, [(3, 3, 2, 2), (3, 3, 2, 2)]),
    lambda: kz_layers.LowRankConv2D(4, 3, rank=2),
    lambda: kz_layers.DilatedStack(4, 3, [1, 2]),
    lambda: kz_layers.ContextModule(4),
], ids=["kronecker", "lowrank", "dilated_stack", "context_module"])
def test_image_layers_refuse_a_channels_first_configuration(make):
    """The image layers are channels_last: under a global channels_first setting they
    refuse to build instead of reading the last axis as channels."""
    before = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        with pytest.raises(ValueError, match="channels_last images .* 'channels_first'"):
            make()(np.zeros((1, 4, 9, 9), "float32"))
    finally:
        keras.config.set_image_data_format(before)
    with pytest.raises(ValueError, match="needs the input's channels"):
        KroneckerConv2D(4, 9, [(3, 3, 2, 2), (3, 3, 2, 2)]).build((None, 9, 9, None))
    with pytest.raises(ValueError, match="needs the input's channels"):
        kz_layers.LowRankConv2D(4, 3, rank=2).build((None, 9, 9, None))


def test_error_input_channels_mismatch_after_build():
    layer = KroneckerConv2D(4, 9, [(3, 3, 2, 2), (3, 3, 2, 2)])
    layer(np.zeros((1, 9, 9, 4), "float32"))
    with pytest.raises(ValueError, match="axis -1 of input"):
        layer(np.zeros((1, 9, 9, 3), "float32"))


@pytest.mark.parametrize(
    "factors",
    [[(3, 3, 2, 2)], [], [(3, 3, 2), (3, 3, 2)], [(3, 3, 0, 2), (1, 1, 1, 1)],
     [(3.0, 3, 2, 2), (1, 1, 1, 1)], None],
)
def test_error_bad_factors(factors):
    with pytest.raises(ValueError, match="two or more"):
        KroneckerConv2D(4, 3, factors)


def test_error_bad_arguments():
    factors = [(3, 3, 2, 2), (3, 3, 2, 2)]
    with pytest.raises(ValueError, match="`execution` must be one of"):
        KroneckerConv2D(4, 9, factors, execution="fast")
    with pytest.raises(ValueError, match="`padding` must be one of"):
        KroneckerConv2D(4, 9, factors, padding="full")
    with pytest.raises(ValueError, match="`padding_mode` must be one of"):
        KroneckerConv2D(4, 9, factors, padding_mode="circular")
    with pytest.raises(ValueError, match="`rank` must be a positive int"):
        KroneckerConv2D(4, 9, factors, rank=0)
    with pytest.raises(ValueError, match="`filters` must be a positive int"):
        KroneckerConv2D(0, 9, factors)
    with pytest.raises(ValueError, match="`strides` must be a positive int"):
        KroneckerConv2D(4, 9, factors, strides=0)


@pytest.mark.parametrize("padding", ["valid", "VALID"])
@pytest.mark.parametrize("mode", ["reflect", "symmetric"])
def test_error_padding_mode_with_valid_padding(padding, mode):
    from kronecker_zoo import ops as kz_ops

    factors = [(3, 3, 2, 2), (3, 3, 2, 2)]
    match = 'padding_mode` only applies to padding="same"'
    with pytest.raises(ValueError, match=match):
        KroneckerConv2D(4, 9, factors, padding=padding, padding_mode=mode)
    x = np.zeros((1, 9, 9, 4), "float32")
    kernels = [np.ones((1,) + f, "float32") for f in factors]  # (rank, kh, kw, in, out)
    with pytest.raises(ValueError, match=match):
        kz_ops.kronecker_conv2d(x, kernels, padding=padding, padding_mode=mode)
    # "zeros" with "valid", and any mode with "same", stay accepted.
    assert KroneckerConv2D(4, 9, factors, padding=padding).padding == "valid"
    assert KroneckerConv2D(4, 9, factors, padding_mode=mode).padding_mode == mode


def test_error_3d_input():
    layer = KroneckerConv2D(4, 9, [(3, 3, 2, 2), (3, 3, 2, 2)])
    with pytest.raises(ValueError, match="ndim=4|4-D"):
        layer(np.zeros((9, 9, 4), "float32"))
    with pytest.raises(ValueError, match="4-D input"):
        KroneckerConv2D(4, 9, [(3, 3, 2, 2), (3, 3, 2, 2)]).build((9, 9, 4))


def test_error_valid_input_smaller_than_kernel():
    layer = KroneckerConv2D(4, 9, [(3, 3, 2, 2), (3, 3, 2, 2)], padding="valid")
    with pytest.raises(ValueError, match="height of at least 9"):
        layer(np.zeros((1, 8, 12, 4), "float32"))
    layer = KroneckerConv2D(4, 9, [(3, 3, 2, 2), (3, 3, 2, 2)], padding="valid")
    with pytest.raises(ValueError, match="width of at least 9"):
        layer(np.zeros((1, 12, 8, 4), "float32"))


# -- the step order (execution planner) --------------------------------------------------

ORDER_CASES = [
    [(3, 3, 2, 3), (3, 3, 3, 2)],
    [(3, 1, 4, 1), (1, 3, 1, 5)],  # low-rank spatial SVD as a Kronecker product
    [(1, 1, 4, 1), (3, 3, 1, 3)],
    [(2, 3, 2, 2), (3, 1, 1, 3), (1, 2, 2, 1)],
]


@pytest.mark.parametrize("factors", ORDER_CASES + [[(1, 1, 4, 2), (3, 3, 1, 3)],
                                                   [(3, 3, 2, 1), (1, 1, 2, 3)]])
@pytest.mark.parametrize("padding, mode, strides", [
    ("same", "zeros", (1, 1)), ("same", "reflect", (1, 1)), ("same", "symmetric", (1, 1)),
    ("valid", "zeros", (1, 1)), ("same", "zeros", (2, 2)), ("valid", "zeros", (2, 3)),
    ("same", "reflect", (3, 2))])
def test_every_plan_equals_the_materialised_kernel(factors, padding, mode, strides):
    """Every order of the factors, with every lowering (batch-folded; for two factors
    also grouped/depthwise + ``F (x) I``), each axis padded just before the first step
    reaching along it and the stride on the last step that does not commute with
    subsampling: each plan's output is the plain convolution with sum_r kron(F_0[r], ...)
    (np.kron), borders, strides and padding modes included."""
    import itertools

    from kronecker_zoo import ops as kz_ops

    rng = np.random.default_rng(len(factors))
    rank = 2
    kernels = [rng.standard_normal((rank,) + f).astype("float32") for f in factors]
    x = rng.standard_normal((2, 13, 14, math.prod(f[2] for f in factors))).astype("float32")
    expected = ref.conv2d(x, ref.kron_kernel(kernels), strides=strides, padding=padding,
                          padding_mode=mode)
    lowerings = ["batch", "channels"] if len(factors) == 2 else ["batch"]
    for order in itertools.permutations(range(len(factors))):
        for lowering in lowerings:
            y = to_numpy(kz_ops.kronecker_conv2d(x, kernels, strides=strides, padding=padding,
                                                 padding_mode=mode, order=order,
                                                 lowering=lowering))
            assert y.shape == expected.shape
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4,
                                       err_msg=f"{order} {lowering}")


def _hand_macs(factors, rank, strides, order, h, w, lowering):
    """MACs of a "same" plan counted from its steps' shapes: strided, every step "valid"
    on the input padded once; at stride 1 each axis padded at the step the plan says;
    steps before the subsampling on the full grid."""
    from kronecker_zoo import ops as kz_ops

    kh, kw = math.prod(f[0] for f in factors), math.prod(f[1] for f in factors)
    hh, ww = h, w
    if strides != (1, 1):
        hh += sum(kz_ops.same_padding_amounts(h, kh, strides[0]))
        ww += sum(kz_ops.same_padding_amounts(w, kw, strides[1]))
    total = 0
    for step in kz_ops.factored_conv_plan(factors, strides, order,
                                          "same" if strides == (1, 1) else "valid",
                                          rank=rank, lowering=lowering):
        hh, ww = hh + sum(step.padding[0]), ww + sum(step.padding[1])
        eh, ew = step.extent()
        hh, ww = (hh - eh) // step.conv_strides[0] + 1, (ww - ew) // step.conv_strides[1] + 1
        a, b = step.in_channels, step.out_channels
        k = step.kernel_size[0] * step.kernel_size[1]
        if lowering == "batch":
            total += hh * ww * k * a * b * rank * step.groups
        elif step.identity == 1:  # grouped: groups x (a -> b), rank terms on one side
            total += hh * ww * k * a * b * rank * step.groups
        else:  # F (x) I_n: a dense (a n r -> b n) or (a n -> b r n) convolution
            total += hh * ww * k * a * b * rank * step.identity ** 2
        hh, ww = -(-hh // step.slice_strides[0]), -(-ww // step.slice_strides[1])
    return total


def test_step_order_picks_the_fewest_macs_at_any_stride():
    import itertools

    from kronecker_zoo import ops as kz_ops

    for factors in ORDER_CASES + [[(1, 1, 32, 8), (3, 3, 1, 8)], [(3, 3, 2, 1), (1, 1, 8, 4)]]:
        lowerings = ["batch", "channels"] if len(factors) == 2 else ["batch"]
        for strides, lowering in itertools.product([(1, 1), (2, 2)], lowerings):
            orders = list(itertools.permutations(range(len(factors))))
            macs = {o: kz_ops.factored_conv_macs((32, 32), factors, 3, strides, order=o,
                                                 lowering=lowering) for o in orders}
            for o in orders:
                assert macs[o] == _hand_macs(factors, 3, strides, o, 32, 32, lowering)
            best = kz_ops.factored_conv_macs((32, 32), factors, 3, strides, lowering=lowering)
            assert best == macs[kz_ops.step_order(factors, strides, lowering=lowering, rank=3)]
            assert best == min(macs.values())
    # a strided 1x1 (x) 3x3 layer subsamples before its pointwise step (no slicing of a
    # full-resolution result): 4x fewer MACs than innermost first with a final slice
    plan = kz_ops.factored_conv_plan([(1, 1, 32, 8), (3, 3, 1, 8)], (2, 2))
    assert [s.axis for s in plan] == [0, 1] and plan[-1].conv_strides == (2, 2)
    with pytest.raises(ValueError, match="permutation"):
        kz_ops.step_order(ORDER_CASES[1], order=(0, 0))


@pytest.mark.parametrize("k, cin, cout, rank", [(3, 16, 24, 4), (5, 8, 8, 2)])
def test_low_rank_shaped_factors_cost_what_low_rank_conv_costs(k, cin, cout, rank):
    """``(k x 1, in -> 1) (x) (1 x k, 1 -> out)`` runs as LowRankConv2D's two convolutions:
    outer factor first, k (in + out) MACs per pixel and rank term (inner first: 2 k in out),
    each axis padded just before the step that reaches along it: the same MACs exactly."""
    from kronecker_zoo import ops as kz_ops
    from kronecker_zoo.layers import LowRankConv2D

    factors = [(k, 1, cin, 1), (1, k, 1, cout)]
    plan = kz_ops.factored_conv_plan(factors)
    assert [(s.kernel_size, s.in_channels, s.out_channels, s.groups, s.dilation)
            for s in plan] == [((k, 1), cin, 1, 1, (1, 1)), ((1, k), 1, cout, 1, (1, 1))]
    half = ((k - 1) // 2, k - 1 - (k - 1) // 2)
    same = kz_ops.factored_conv_plan(factors, padding="same")
    assert [(s.padding, s.same_conv) for s in same] == [((half, (0, 0)), True),
                                                          (((0, 0), half), True)]
    h, w = 20, 17
    kron = KroneckerConv2D(cout, k, factors, rank=rank, execution="factored")
    kron.build((None, h, w, cin))
    low = LowRankConv2D(cout, k, rank)
    low.build((None, h, w, cin))
    assert kron.macs((h, w)) == low.macs((h, w)) == rank * (k * cin + k * cout) * h * w
    inner_first = kz_ops.factored_conv_macs((h, w), factors, rank, order=(1, 0))
    # inner first: (1 x k, 1 -> out) over the `in` groups, then (k x 1, in -> 1) over the
    # `out` groups, each on (h, w)
    assert inner_first == rank * 2 * k * cin * cout * h * w


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 50),
       st.sampled_from([1, 2, 4, 8, 16]), st.sampled_from([1, 2, 4, 8, 16]))
def test_tiled_macs_count_the_blocks_a_tiled_gemm_computes(reduction, outputs, pixels, k, n):
    """`tiled_macs`: a GEMM of ``pixels`` rows, reducing ``reduction`` inputs into
    ``outputs`` channels in ``k x n`` blocks computes every block whole: counted here
    block by block, as a kernel loops over them."""
    from kronecker_zoo import ops as kz_ops

    blocks = [(kb, nb) for kb in range(0, reduction, k) for nb in range(0, outputs, n)]
    computed = pixels * len(blocks) * k * n
    assert kz_ops.tiled_macs(pixels * reduction * outputs, reduction, outputs,
                             (k, n)) == computed
    assert kz_ops.tiled_macs(pixels * reduction * outputs, reduction, outputs,
                             (1, 1)) == pixels * reduction * outputs


def test_tiled_cost_counts_each_group_of_a_grouped_step_whole():
    """lowering="channels" of ``(1x1, 8 -> 32) (x) (3x3, 2 -> 1)``, rank 3, stride 2 on
    28x28x16: the fast-axis step is one grouped convolution of 8 groups of 2 -> 3
    channels (3x3, 14x14 outputs), the other step ``F_0 (x) I``, a 1x1 24 -> 32. Tiled
    by (8, 16), each group's reduction 3*3*2 = 18 is computed as 24 and its 3 outputs
    as 16; the plain 1x1 step's 24 -> 32 are multiples already."""
    from kronecker_zoo import ops as kz_ops

    factors = [(1, 1, 8, 32), (3, 3, 2, 1)]
    plain, grouped, moved = kz_ops.factored_conv_cost_terms((28, 28), factors, 3, (2, 2),
                                                            "same", "channels", (8, 16))
    assert moved == 0
    assert grouped == 14 * 14 * 8 * 24 * 16
    assert plain == 14 * 14 * 24 * 32
    untiled = kz_ops.factored_conv_cost_terms((28, 28), factors, 3, (2, 2), "same",
                                              "channels")
    assert untiled == (14 * 14 * 24 * 32, 14 * 14 * 8 * 18 * 3, 0)
    # a depthwise step (one input channel per group) with one output per channel is
    # not tiled; with a channel multiplier (2 here) each group is: 3*3*1 -> 16, 2 -> 16
    depthwise = [(1, 1, 16, 16), (3, 3, 1, 1)]
    assert (kz_ops.factored_conv_cost_terms((28, 28), depthwise, 1, (1, 1), "same",
                                            "channels", (8, 16))[1]
            == kz_ops.factored_conv_cost_terms((28, 28), depthwise, 1, (1, 1), "same",
                                               "channels")[1]
            == 28 * 28 * 16 * 9)
    multiplier = [(1, 1, 16, 16), (3, 3, 1, 2)]
    assert kz_ops.factored_conv_cost_terms((28, 28), multiplier, 1, (1, 1), "same",
                                           "channels")[1] == 28 * 28 * 16 * 9 * 2
    assert kz_ops.factored_conv_cost_terms((28, 28), multiplier, 1, (1, 1), "same",
                                           "channels", (8, 16))[1] == 28 * 28 * 16 * 16 * 16


def test_lowering_argument_is_checked_and_saved():
    factors = [(3, 3, 2, 2), (3, 3, 2, 2)]
    with pytest.raises(ValueError, match="`lowering` must be one of"):
        KroneckerConv2D(4, 9, factors, lowering="fast")
    with pytest.raises(ValueError, match='lowering="channels" runs two factors; got 3'):
        KroneckerConv2D(8, 27, [(3, 3, 2, 2)] * 3, lowering="channels")
    layer = KroneckerConv2D(4, 9, factors, lowering="channels")
    layer.build((None, 12, 12, 4))
    assert layer.resolved_lowering == "channels"
    clone = KroneckerConv2D.from_config(layer.get_config())
    assert clone.lowering == "channels"
    # three factors: "auto" always folds into the batch
    three = KroneckerConv2D(8, 27, [(3, 3, 2, 2)] * 3)
    three.build((None, 30, 30, 8))
    assert three.resolved_lowering == "batch"


# TensorFlow's oneDNN Conv2D miscomputes one input channel at strides (1, s > 1) when the
# output is one column wide and the batch has two or more images; `ops.conv2d` avoids it.
@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("strides", [(1, 2), (1, 3), (2, 3)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_one_channel_convolutions_with_a_width_stride_match_the_reference(width, strides,
                                                                          padding):
    from kronecker_zoo import ops as kz_ops

    x = np.random.default_rng(width).normal(size=(3, 4, width, 1)).astype("float32")
    kernel = np.random.default_rng(7).normal(size=(2, 3, 1, 4)).astype("float32")
    if padding == "valid" and width < 3:
        return
    expected = ref.conv2d(x, kernel, strides, padding=padding)
    got = to_numpy(kz_ops.conv2d(x, kernel, strides, padding))
    np.testing.assert_allclose(got, expected, atol=tolerance(expected))
    if keras.backend.backend() == "tensorflow":  # width unknown when traced
        import tensorflow as tf

        traced = tf.function(lambda t: kz_ops.conv2d(t, kernel, strides, padding),
                             input_signature=[tf.TensorSpec((None, 4, None, 1))])
        np.testing.assert_allclose(traced(x).numpy(), expected, atol=tolerance(expected))


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_one_channel_factored_steps_with_a_width_stride_match_the_reference(execution):
    """(3x1, 4 -> 1) (x) (1x3, 1 -> 4) at strides (1, 3) on a 4x4 input: the inner step is
    a one-channel convolution with a one-column output."""
    x = random_input((2, 4, 4, 4), seed=3)
    layer = KroneckerConv2D(4, 3, factors=[(3, 1, 4, 1), (1, 3, 1, 4)], strides=(1, 3),
                            padding="valid", execution=execution)
    layer.build(x.shape)
    for k, variable in enumerate(layer.weights):
        variable.assign(np.random.default_rng(k).normal(size=variable.shape))
    factors = [to_numpy(f) for f in layer.factor_weights]
    expected = ref.conv2d(x, ref.kron_kernel(factors), (1, 3)) + to_numpy(layer.bias)
    got = to_numpy(layer(x))
    np.testing.assert_allclose(got, expected, atol=tolerance(expected))


def test_factor_shapes_may_be_numpy_integers():
    """Shapes computed with NumPy are accepted and stored as Python ints (a JSON config)."""
    import json

    from kronecker_zoo.layers import KroneckerDense

    shape = tuple(np.array([3, 3, 2, 2]))
    layer = KroneckerConv2D(4, np.int64(9), factors=[shape, shape])
    assert layer.factors == [(3, 3, 2, 2), (3, 3, 2, 2)]
    assert json.loads(json.dumps(layer.get_config()))["factors"] == [[3, 3, 2, 2]] * 2
    dense = KroneckerDense(6, factors=[np.array([2, 3]), np.array([4, 2])])
    assert dense.factors == [(2, 3), (4, 2)]
    for bad in ([shape, (3.0, 3, 2, 2)], [shape, (True, 3, 2, 2)], "3322", [shape]):
        with pytest.raises(ValueError, match="`factors` must be a list of two or more"):
            KroneckerConv2D(4, 9, factors=bad)


@pytest.mark.parametrize("call, match", [
    (lambda ops, x, f: ops.kronecker_conv2d(x, [f(2, 1, 1, 2, 2), f(3, 3, 3, 2, 2)]),
     "same rank"),
    (lambda ops, x, f: ops.factored_conv2d(x, [f(1, 1, 1, 2, 2), f(1, 3, 3, 2, 2),
                                               f(2, 1, 1, 2, 2)]), "same rank"),
    (lambda ops, x, f: ops.kronecker_conv2d(x, [f(1, 3, 3, 2, 2), f(1, 3, 3, 2, 2)]),
     "prod in_k = 4"),
    (lambda ops, x, f: ops.kronecker_conv2d(x[0], [f(1, 3, 3, 2, 4), f(1, 3, 3, 4, 2)]),
     "4 axes"),
    (lambda ops, x, f: ops.kronecker_conv2d(x, [f(3, 3, 2, 4), f(3, 3, 4, 2)]), "5-d factors"),
    (lambda ops, x, f: ops.kronecker_conv2d(x, []), "non-empty"),
    (lambda ops, x, f: ops.kronecker_matmul(x[:, 0, 0], [f(2, 2, 2), f(3, 4, 2)]),
     "same rank"),
])
def test_the_functional_ops_name_factors_that_do_not_fit(call, match):
    # Before: a rank mismatch silently dropped the extra terms; the others failed in a
    # backend reshape that named no argument.
    from kronecker_zoo import ops as kz_ops

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 12, 12, 8)).astype("float32")

    def factor(*shape):
        return rng.normal(size=shape).astype("float32")

    with pytest.raises(ValueError, match=match):
        call(kz_ops, x, factor)
