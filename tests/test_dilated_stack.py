"""Tests of DilatedStack: a cascade of dilated convolutions and its collapsed kernel.

Expected values come from a float64 NumPy convolution (tests/reference.py) with
the kernel ``kernels.collapse`` of the stack's own conv kernels (read back with
``get_weights``) and a bias propagated through the stack by hand; the seed's
Kronecker identity is checked against ``np.kron``.
"""

import functools

import keras
import numpy as np
import pytest

from kronecker_zoo import kernels
from kronecker_zoo.layers import DilatedStack
from tests.layer_checks import check_config_round_trip, check_fit_step, check_saving_round_trip
from tests.reference import conv2d as conv2d_ref


def max_scale(ref):
    return max(1.0, float(np.max(np.abs(ref))))


def assert_close(got, ref, scale_tol=1e-4):
    """float32 stack vs float64 single convolution.

    The stack and the collapsed convolution sum the same products in a different
    order; with a few thousand O(1) terms the float32 round-off is ~1e-6 of the
    largest magnitude, so 1e-4 of it separates round-off from real differences
    (border effects, wrong taps) which are O(1) relative.
    """
    got = np.asarray(keras.ops.convert_to_numpy(got), dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    np.testing.assert_allclose(got, ref, rtol=0, atol=scale_tol * max_scale(ref))


def randomise(layer, seed):
    """Random normal weights, kernels scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    new = []
    for w in layer.get_weights():
        if w.ndim == 4:
            fan_in = w.shape[0] * w.shape[1] * w.shape[2]
            new.append((rng.standard_normal(w.shape) / np.sqrt(fan_in)).astype("float32"))
        else:
            new.append(rng.standard_normal(w.shape).astype("float32"))
    layer.set_weights(new)


def stack_kernels_and_biases(stack):
    """(kernels, biases) of every conv, from get_weights(), as float64 NumPy."""
    weights = stack.get_weights()
    step = 2 if stack.use_bias else 1
    ks = [w.astype(np.float64) for w in weights[0::step]]
    bs = [w.astype(np.float64) for w in weights[1::step]] if stack.use_bias else None
    assert len(ks) == len(stack.convs)
    for k, conv in zip(ks, stack.convs):
        assert k.shape == tuple(conv.kernel.shape)
    return ks, bs


def collapsed_np(stack):
    """Kernel of the equivalent single conv, and the bias propagated by hand.

    y_{l+1} = conv(y_l, K_l) + b_l; a constant b in y_l becomes b @ sum_u K_l[u].
    """
    ks, bs = stack_kernels_and_biases(stack)
    kernel = kernels.collapse(ks, stack.dilation_rates)
    if bs is None:
        return kernel, 0.0
    bias = np.zeros(ks[0].shape[2])
    for k, b in zip(ks, bs):
        bias = bias @ k.sum(axis=(0, 1)) + b
    return kernel, bias


def build_stack(input_shape, seed, **kwargs):
    stack = DilatedStack(**kwargs)
    stack.build(input_shape)
    randomise(stack, seed)
    return stack


def rf_formula(kernel_sizes, rates):
    """1 + sum_l (k_l - 1) * d_l per axis."""
    kss = [(k, k) if isinstance(k, int) else tuple(k) for k in kernel_sizes]
    dss = [(d, d) if isinstance(d, int) else tuple(d) for d in rates]
    return tuple(1 + sum((k[a] - 1) * d[a] for k, d in zip(kss, dss)) for a in range(2))


STACKS = [
    # filters, kernel_size, dilation_rates, (H, W), cin
    (4, 3, (1, 2, 4), (23, 26), 3),
    ([3, 5], 2, (1, 2), (12, 11), 2),          # even receptive field (4)
    ([2, 3, 4], [(3, 3), (1, 5), (3, 1)], ((1, 1), (2, 1), (1, 3)), (17, 20), 2),
    (3, [(3, 2)] * 3, ((2, 1), (1, 3), 2), (19, 21), 1),
]


# ---------------------------------------------------------------------------
# the linear stack equals one convolution
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("filters,kernel_size,rates,hw,cin", STACKS)
def test_pad_once_equals_collapsed_same_conv_everywhere(filters, kernel_size, rates, hw, cin):
    shape = (2,) + hw + (cin,)
    stack = build_stack(shape, 1, filters=filters, kernel_size=kernel_size,
                        dilation_rates=rates, pad_once=True)
    kernel, bias = collapsed_np(stack)
    assert kernel.shape[:2] == rf_formula(
        kernel_size if isinstance(kernel_size, (list, tuple)) else [kernel_size] * len(rates),
        rates)
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    y = stack(x)
    # Borders included: the whole output map is compared.
    assert_close(y, conv2d_ref(x, kernel, padding="same") + bias)
    # The layer's own collapsed() agrees with the independent computation.
    k_layer, b_layer = stack.collapsed()
    assert_close(k_layer, kernel)
    assert_close(b_layer, bias)


@pytest.mark.parametrize("filters,kernel_size,rates,hw,cin", STACKS)
def test_valid_equals_collapsed_valid_conv(filters, kernel_size, rates, hw, cin):
    shape = (2,) + hw + (cin,)
    stack = build_stack(shape, 2, filters=filters, kernel_size=kernel_size,
                        dilation_rates=rates, padding="valid")
    kernel, bias = collapsed_np(stack)
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    ref = conv2d_ref(x, kernel, padding="valid") + bias
    y = stack(x)
    assert tuple(stack.compute_output_shape(shape)) == ref.shape
    assert_close(y, ref)


@pytest.mark.parametrize("pad_once", [True, False])
def test_valid_ignores_pad_once(pad_once):
    shape = (1, 15, 14, 2)
    stack = build_stack(shape, 3, filters=2, dilation_rates=(1, 3), padding="valid",
                        pad_once=pad_once)
    kernel, bias = collapsed_np(stack)
    x = np.random.default_rng(2).standard_normal(shape).astype("float32")
    assert_close(stack(x), conv2d_ref(x, kernel, padding="valid") + bias)


@pytest.mark.parametrize("filters,kernel_size,rates,hw,cin", [
    STACKS[0], STACKS[2], (3, [(3, 5)] * 3, ((2, 1), (1, 3), 2), (19, 30), 1)])
def test_per_layer_same_equals_collapsed_in_interior_only(filters, kernel_size, rates, hw, cin):
    # Odd kernels (every layer's "same" padding is centred), so each output pixel
    # at distance >= the receptive-field radius from every border reads only
    # in-image intermediate values and equals the collapsed conv; closer to a
    # border, the per-layer zero padding truncates intermediate maps.
    shape = (2,) + hw + (cin,)
    stack = build_stack(shape, 4, filters=filters, kernel_size=kernel_size,
                        dilation_rates=rates)
    assert stack.pad_once is False and stack.padding == "same"
    kernel, bias = collapsed_np(stack)
    rh, rw = (kernel.shape[0] - 1) // 2, (kernel.shape[1] - 1) // 2
    assert kernel.shape[0] % 2 == 1 and kernel.shape[1] % 2 == 1
    x = np.random.default_rng(3).standard_normal(shape).astype("float32")
    ref = conv2d_ref(x, kernel, padding="same") + bias
    y = np.asarray(keras.ops.convert_to_numpy(stack(x)), np.float64)
    assert y.shape == ref.shape
    h, w = hw
    assert h > 2 * rh and w > 2 * rw  # a non-empty interior
    interior = (slice(None), slice(rh, h - rh), slice(rw, w - rw))
    assert_close(y[interior], ref[interior])
    border = np.ones(y.shape, bool)
    border[interior] = False
    diff = np.abs(y - ref)[border].max()
    assert diff > 1e-2 * max_scale(ref), diff


@pytest.mark.parametrize("a", [2, 3])
def test_seed_schedule_collapses_to_kron(a):
    # a x a kernels, one channel, dilations 1, a, a^2, no bias:
    # cascade == one conv with kron(K_2, K_1, K_0).
    rates = (1, a, a * a)
    n = a ** 3 + 4
    shape = (2, n, n + 1, 1)
    stack = build_stack(shape, 10 + a, filters=1, kernel_size=a, dilation_rates=rates,
                        use_bias=False, pad_once=True)
    ks, _ = stack_kernels_and_biases(stack)
    k2d = [k[:, :, 0, 0] for k in ks]
    expected = functools.reduce(np.kron, k2d[::-1])          # kron(K_2, K_1, K_0)
    assert expected.shape == (a ** 3, a ** 3)
    assert stack.receptive_field == (a ** 3, a ** 3)
    collapsed = kernels.collapse(ks, rates)
    np.testing.assert_allclose(collapsed[:, :, 0, 0], expected, rtol=0, atol=1e-12)
    k_layer, b_layer = stack.collapsed()
    assert b_layer is None
    assert_close(np.asarray(keras.ops.convert_to_numpy(k_layer))[:, :, 0, 0], expected)
    # and the layer itself runs that convolution
    x = np.random.default_rng(5).standard_normal(shape).astype("float32")
    assert_close(stack(x), conv2d_ref(x, expected[:, :, None, None], padding="same"))


@pytest.mark.parametrize("kernel_size,rates", [
    (3, (1, 2, 4)),
    (3, (1, 1, 2, 4, 8, 16, 1)),
    (2, (1, 2, 4, 8)),
    ([(3, 3), (5, 1), (1, 2)], ((1, 2), (3, 1), 4)),
    ((3, 5), (2, (1, 3))),  # one entry per rate: 3x3, then 5x5
    ([(3, 5)] * 2, (2, (1, 3))),
])
def test_receptive_field_formula(kernel_size, rates):
    stack = DilatedStack(2, kernel_size=kernel_size, dilation_rates=rates)
    if isinstance(kernel_size, (list, tuple)):
        sizes = kernel_size
    else:
        sizes = [kernel_size] * len(rates)
    assert tuple(stack.receptive_field) == rf_formula(sizes, rates)


def test_relu_stack_is_not_the_collapsed_conv():
    shape = (2, 15, 16, 3)
    stack = build_stack(shape, 6, filters=4, dilation_rates=(1, 2, 4), activation="relu",
                        pad_once=True)
    kernel, bias = collapsed_np(stack)
    x = np.random.default_rng(7).standard_normal(shape).astype("float32")
    y = np.asarray(keras.ops.convert_to_numpy(stack(x)), np.float64)
    ref = conv2d_ref(x, kernel, padding="same") + bias
    assert (y >= 0).all()
    assert np.abs(y - ref).max() > 1e-1 * max_scale(ref)
    # The same weights without the activation do give the collapsed conv.
    linear = DilatedStack(filters=4, dilation_rates=(1, 2, 4), pad_once=True)
    linear.build(shape)
    linear.set_weights(stack.get_weights())
    assert_close(linear(x), ref)


def test_per_layer_filters_and_kernel_sizes():
    stack = DilatedStack(filters=[2, 3, 5], kernel_size=[3, (1, 5), (3, 1)],
                         dilation_rates=(1, (2, 1), (1, 3)))
    y = stack(np.zeros((1, 12, 13, 4), "float32"))
    assert tuple(y.shape) == (1, 12, 13, 5)
    assert [tuple(c.kernel.shape) for c in stack.convs] == [
        (3, 3, 4, 2), (1, 5, 2, 3), (3, 1, 3, 5)]
    assert [tuple(c.dilation_rate) for c in stack.convs] == [(1, 1), (2, 1), (1, 3)]
    # height: 1 + (3-1)*1 + (1-1)*2 + (3-1)*1; width: 1 + (3-1)*1 + (5-1)*1 + (1-1)*3
    assert stack.receptive_field == (5, 7)


@pytest.mark.parametrize("kernel_size,rates,expected", [
    # A list is always one entry per dilation rate, whatever its length.
    ([3, 5], [1, 2], [(3, 3), (5, 5)]),
    ((3, 5), (1, 2), [(3, 3), (5, 5)]),
    ([3, 5, 7], [1, 2, 4], [(3, 3), (5, 5), (7, 7)]),
    ([(3, 5)] * 2, [1, 2], [(3, 5), (3, 5)]),
    ([(3, 3), (1, 5)], [1, 2], [(3, 3), (1, 5)]),
    (5, [1, 2, 4], [(5, 5)] * 3),
])
def test_kernel_size_is_an_int_or_one_entry_per_rate(kernel_size, rates, expected):
    stack = DilatedStack(8, kernel_size, rates)
    assert stack.kernel_size == expected
    stack.build((None, 40, 40, 2))
    assert [tuple(c.kernel.shape[:2]) for c in stack.convs] == expected


@pytest.mark.parametrize("kernel_size,rates,match", [
    ([3, 3, 3, 3], [1, 2, 4], "got 4 kernel sizes for 3 dilation rates"),
    ([3, 5, 7], [1, 2], "got 3 kernel sizes for 2 dilation rates"),
    ((3, 5), [1, 2, 4], r"got 2 kernel sizes for 3 dilation rates\. For a 3x5 kernel on "
                        r"every layer write kernel_size=\[\(3, 5\)\] \* 3"),
    ([(3, 5)], [1, 2], "got 1 kernel sizes for 2 dilation rates"),
    (np.array([3, 5]), [1, 2], "must be an int or a list"),
    ("3", [1, 2], "must be an int or a list"),
])
def test_kernel_size_length_mismatch_names_both_lengths(kernel_size, rates, match):
    with pytest.raises(ValueError, match=match):
        DilatedStack(8, kernel_size, rates)


def test_filters_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match="got 2 filters for 3 dilation rates"):
        DilatedStack([4, 8], 3, [1, 2, 4])


def test_config_from_a_saved_per_layer_list_round_trips():
    # get_config always stores one [kh, kw] per layer, so a saved config rebuilds as is.
    stack = DilatedStack(4, [(3, 5), (3, 5)], [1, 2])
    config = stack.get_config()
    assert config["kernel_size"] == [[3, 5], [3, 5]]
    again = DilatedStack.from_config(config)
    assert again.kernel_size == [(3, 5), (3, 5)]
    assert again.get_config() == config


def test_compute_output_shape_matches_call():
    for kwargs in ({}, {"pad_once": True}, {"padding": "valid"}):
        stack = DilatedStack([2, 6], kernel_size=3, dilation_rates=(1, 2), **kwargs)
        x = np.zeros((2, 11, 9, 3), "float32")
        assert tuple(stack(x).shape) == tuple(stack.compute_output_shape(x.shape))


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"dilation_rates": ()}, "non-empty"),
    ({"dilation_rates": 2}, "non-empty"),
    ({"dilation_rates": (1, 0)}, "dilation_rates"),
    ({"filters": [4, 4]}, "one int or a list with one int per dilation rate"),
    ({"filters": 0}, "filters"),
    ({"filters": 2.5}, "filters"),
    ({"kernel_size": 0}, "kernel_size"),
    ({"kernel_size": [3, 3, 3, 3]}, "kernel_size"),
    ({"padding": "causal"}, "padding"),
])
def test_bad_arguments_raise(kwargs, match):
    args = {"filters": 4, "dilation_rates": (1, 2, 4), **kwargs}
    with pytest.raises(ValueError, match=match):
        DilatedStack(**args)


def test_valid_input_too_small_raises():
    stack = DilatedStack(2, kernel_size=3, dilation_rates=(1, 2, 4), padding="valid")
    with pytest.raises(ValueError, match="at least as large as its receptive field"):
        stack(np.zeros((1, 10, 30, 1), "float32"))
    with pytest.raises(ValueError, match="at least as large as its receptive field"):
        stack.compute_output_shape((1, 30, 14, 1))  # was (1, 16, 0, 2)


def test_a_seeded_kernel_initializer_gives_each_layer_its_own_draw():
    # A seeded Keras initializer repeats its values at every call; shared as it is, the
    # stack's same-shape convolutions would start equal.
    init = keras.initializers.GlorotUniform(seed=1)
    stack = DilatedStack(4, 3, (1, 2, 4), kernel_initializer=init,
                         bias_initializer=keras.initializers.RandomNormal(seed=2))
    stack.build((None, 16, 16, 3))
    kernels = [np.asarray(conv.kernel) for conv in stack.convs]
    biases = [np.asarray(conv.bias) for conv in stack.convs]
    np.testing.assert_array_equal(kernels[0], np.asarray(init((3, 3, 3, 4))))
    assert kernels[1].shape == kernels[2].shape == (3, 3, 4, 4)
    assert not np.allclose(kernels[1], kernels[2])
    assert not np.allclose(kernels[0], kernels[1][:, :, :3])
    assert not np.allclose(biases[0], biases[1]) and not np.allclose(biases[1], biases[2])


def test_non_4d_input_raises():
    stack = DilatedStack(2)
    with pytest.raises(ValueError, match="ndim|4-D"):
        stack(np.zeros((10, 10, 1), "float32"))


# ---------------------------------------------------------------------------
# serialisation and training
# ---------------------------------------------------------------------------

def test_config_round_trip():
    check_config_round_trip(
        DilatedStack,
        # three per-layer values: the helper also builds DilatedStack(filters=...) with
        # the default three dilation rates
        {"filters": [2, 3, 4], "kernel_size": [(3, 3), (1, 3), 2],
         "dilation_rates": (1, (2, 3), 2), "activation": "relu", "pad_once": True,
         "use_bias": False},
        (2, 10, 11, 3),
    )


def test_saving_round_trip(tmp_path):
    check_saving_round_trip(
        lambda: DilatedStack(3, kernel_size=3, dilation_rates=(1, 2), activation="relu",
                             pad_once=True),
        (2, 9, 10, 2), tmp_path)


@pytest.mark.training
def test_fit_step():
    check_fit_step(lambda: DilatedStack(2, dilation_rates=(1, 2)), (2, 8, 8, 2))


@pytest.mark.parametrize("policy", ["float16", "mixed_float16", "mixed_bfloat16"])
def test_a_per_layer_dtype_policy_reaches_every_convolution(policy):
    """As for a Keras Conv2D given the same ``dtype=``: variables in the policy's variable
    dtype, output in its compute dtype."""
    from kronecker_zoo.layers import ContextModule

    x = np.ones((1, 8, 8, 4), "float32")
    reference = keras.layers.Conv2D(4, 3, dtype=policy)
    expected = keras.backend.standardize_dtype(reference(x).dtype)
    for layer in (DilatedStack(4, 3, [1, 2], dtype=policy),
                  ContextModule(4, dilations=[1, 2], dtype=policy)):
        y = layer(x)
        assert keras.backend.standardize_dtype(y.dtype) == expected == layer.compute_dtype
        assert {keras.backend.standardize_dtype(v.dtype) for v in layer.weights} == {
            reference.variable_dtype}
