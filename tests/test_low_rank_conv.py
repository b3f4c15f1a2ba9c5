"""Tests of LowRankConv2D, the rank-r spatially separable convolution.

The expected output is a float64 NumPy convolution (tests/reference.py) with the
full kernel ``W[i, j, c, o] = sum_r V[i, 0, c, r] H[0, j, r, o]`` built with
``np.einsum`` from ``get_weights()``, independently of the layer's own ``kernel``.
"""

import keras
import numpy as np
import pytest

from kronecker_zoo.layers import LowRankConv2D
from tests.layer_checks import check_config_round_trip, check_fit_step, check_saving_round_trip
from tests.reference import conv2d as conv2d_ref


def assert_close(got, ref, scale_tol=1e-4):
    """float32 output vs float64 reference.

    Each output sums at most kh*cin*rank + kw*rank products of O(1) values in
    float32 (round-off ~1e-7 relative each); 1e-4 of the largest magnitude is far
    above that and far below any indexing / padding error (O(1)).
    """
    got = np.asarray(keras.ops.convert_to_numpy(got), dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    atol = scale_tol * max(1.0, float(np.max(np.abs(ref))))
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


def full_kernel(vertical, horizontal):
    """(kh, 1, cin, R) and (1, kw, R, cout) -> (kh, kw, cin, cout), float64."""
    return np.einsum("hcr,wro->hwco", vertical[:, 0].astype(np.float64),
                     horizontal[0].astype(np.float64))


def make_layer(filters, kernel_size, rank, input_shape, seed, **kwargs):
    layer = LowRankConv2D(filters, kernel_size, rank, **kwargs)
    layer.build(input_shape)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32")
                       for w in layer.get_weights()])
    return layer


CASES = [
    # kernel_size, rank, strides, padding, (H, W)
    ((3, 3), 1, 1, "same", (9, 9)),
    ((3, 3), 2, 1, "valid", (8, 10)),
    ((5, 4), 3, 1, "same", (8, 11)),
    ((4, 2), 2, 2, "same", (9, 10)),
    ((4, 2), 1, 2, "valid", (10, 9)),
    ((3, 5), 3, 2, "same", (7, 12)),
    ((3, 5), 2, (2, 3), "same", (11, 13)),
    ((2, 3), 3, (2, 3), "valid", (10, 14)),
    ((5, 5), 1, (2, 3), "same", (8, 8)),
    ((1, 3), 2, (3, 2), "valid", (7, 9)),
    ((4, 4), 2, 1, "same", (6, 7)),
    ((6, 3), 3, (3, 1), "same", (13, 6)),
    # rank 1, one-column output: TensorFlow's oneDNN Conv2D miscomputes the horizontal
    # step (one channel, strides (1, 3)) unless kronecker_zoo.ops.conv2d routes around it
    ((3, 3), 1, 3, "valid", (7, 5)),
    ((3, 3), 1, (1, 2), "same", (5, 2)),
]


@pytest.mark.parametrize("kernel_size,rank,strides,padding,hw", CASES)
def test_output_equals_reference_conv(kernel_size, rank, strides, padding, hw):
    cin, cout = 3, 4
    layer = make_layer(cout, kernel_size, rank, (2,) + hw + (cin,),
                       seed=hash((kernel_size, rank, hw)) % 2**32,
                       strides=strides, padding=padding)
    vertical, horizontal, bias = layer.get_weights()
    kh, kw = kernel_size
    assert vertical.shape == (kh, 1, cin, rank)
    assert horizontal.shape == (1, kw, rank, cout)
    x = np.random.default_rng(1).standard_normal((2,) + hw + (cin,)).astype("float32")
    ref = conv2d_ref(x, full_kernel(vertical, horizontal), strides=strides,
                     padding=padding) + bias
    y = layer(x)
    assert tuple(layer.compute_output_shape(x.shape)) == ref.shape
    assert_close(y, ref)
    # The kernel property is that same kernel.
    assert_close(layer.kernel, full_kernel(vertical, horizontal))


@pytest.mark.parametrize("strides,padding", [(1, "same"), ((2, 3), "same"), (2, "valid")])
def test_equals_plain_conv2d(strides, padding):
    layer = make_layer(5, (3, 4), 2, (2, 11, 10, 3), seed=4, strides=strides,
                       padding=padding, activation="relu")
    vertical, horizontal, bias = layer.get_weights()
    conv = keras.layers.Conv2D(5, (3, 4), strides=strides, padding=padding, activation="relu")
    conv.build((2, 11, 10, 3))
    conv.set_weights([full_kernel(vertical, horizontal).astype("float32"), bias])
    x = np.random.default_rng(2).standard_normal((2, 11, 10, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    assert (y == 0).any() and (y > 0).any()  # the ReLU is active
    assert_close(y, conv(x))


def test_no_bias():
    layer = make_layer(2, 3, 2, (1, 6, 7, 2), seed=9, use_bias=False)
    weights = layer.get_weights()
    assert len(weights) == 2 and layer.bias is None
    x = np.random.default_rng(3).standard_normal((1, 6, 7, 2)).astype("float32")
    assert_close(layer(x), conv2d_ref(x, full_kernel(*weights), padding="same"))


@pytest.mark.parametrize("kernel_size,cin,cout,rank,use_bias", [
    ((3, 3), 3, 4, 1, True), ((5, 2), 6, 7, 3, True), ((1, 7), 2, 9, 2, False),
])
def test_param_count(kernel_size, cin, cout, rank, use_bias):
    layer = LowRankConv2D(cout, kernel_size, rank, use_bias=use_bias)
    layer.build((None, 16, 16, cin))
    kh, kw = kernel_size
    assert layer.count_params() == rank * (kh * cin + kw * cout) + (cout if use_bias else 0)
    assert layer.dense_equivalent_params() == kh * kw * cin * cout + (cout if use_bias else 0)


def test_macs_hand_count():
    # 3x5 kernel, 4 -> 6 channels, rank 2, stride 1 "same" on 10 x 12:
    # vertical 3x1 conv to 2 channels at every pixel: 10*12 * 3*4*2 = 2880;
    # horizontal 1x5 conv 2 -> 6 at every pixel: 10*12 * 5*2*6 = 7200.
    layer = LowRankConv2D(6, (3, 5), 2)
    layer.build((None, 10, 12, 4))
    assert layer.macs((10, 12)) == 2880 + 7200


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"filters": 0}, "filters"),
    ({"filters": True}, "filters"),
    ({"rank": 0}, "rank"),
    ({"rank": 2.0}, "rank"),
    ({"kernel_size": 0}, "kernel_size"),
    ({"kernel_size": (3, 3, 3)}, "kernel_size"),
    ({"strides": (1, 0)}, "strides"),
    ({"padding": "full"}, "padding"),
])
def test_bad_arguments_raise(kwargs, match):
    args = {"filters": 4, "kernel_size": 3, "rank": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        LowRankConv2D(**args)


def test_valid_input_smaller_than_kernel_raises():
    layer = LowRankConv2D(4, (5, 3), 2, padding="valid")
    with pytest.raises(ValueError, match="at least 5"):
        layer(np.zeros((1, 4, 8, 2), "float32"))


def test_non_4d_input_raises():
    layer = LowRankConv2D(4, 3, 2)
    with pytest.raises(ValueError, match="ndim|4-D"):
        layer(np.zeros((8, 8, 2), "float32"))


# ---------------------------------------------------------------------------
# serialisation and training
# ---------------------------------------------------------------------------

def test_config_round_trip():
    check_config_round_trip(
        LowRankConv2D,
        {"filters": 4, "kernel_size": (3, 5), "rank": 2, "strides": (2, 1),
         "padding": "valid", "activation": "relu"},
        (2, 9, 10, 3),
    )


def test_saving_round_trip(tmp_path):
    check_saving_round_trip(
        lambda: LowRankConv2D(4, (3, 2), 2, strides=2, activation="tanh"),
        (2, 9, 8, 3), tmp_path)


@pytest.mark.training
def test_fit_step():
    check_fit_step(lambda: LowRankConv2D(3, 3, 2), (2, 8, 8, 2))
