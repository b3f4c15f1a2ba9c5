"""Tests of Yu & Koltun's context module (ICLR 2016) and its identity initialisation.

Widths, parameter counts and receptive fields are checked against the paper's
numbers (computed by hand below, not read from the package); the identity
property by running the module on random non-negative inputs; the receptive
field also empirically, by pushing an impulse through all-ones kernels.
"""

import keras
import numpy as np
import pytest

from kronecker_zoo.layers import ContextIdentity, ContextModule
from tests.layer_checks import check_config_round_trip, check_fit_step, check_saving_round_trip

PAPER_DILATIONS = (1, 1, 2, 4, 8, 16, 1)
# Yu & Koltun, table 1: output widths of the 7 dilated layers of the large module.
LARGE_MULTIPLIERS = (2, 2, 4, 8, 16, 32, 32)


def to_np(t):
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64)


def non_negative_input(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 2.0, size=shape).astype("float32")


# ---------------------------------------------------------------------------
# identity initialisation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["basic", "large"])
@pytest.mark.parametrize("channels", [3, 5])
def test_fresh_module_is_identity_on_non_negative_input(variant, channels):
    module = ContextModule(channels, variant, kernel_initializer="identity", noise_stddev=0.0)
    x = non_negative_input((2, 37, 41, channels))
    y = to_np(module(x))
    assert y.shape == x.shape
    # float32: the large module rescales by 1/2, ..., 1/32 and back with sums of up to
    # 32 equal terms, each exact or within one ulp; 1e-5 relative is ~100 ulps.
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)


def test_default_basic_has_no_noise_and_is_identity():
    module = ContextModule(4)  # defaults: basic, identity init, no noise
    x = non_negative_input((1, 21, 18, 4), seed=3)
    np.testing.assert_allclose(to_np(module(x)), x, rtol=1e-5, atol=1e-6)


def test_default_large_is_close_to_identity_but_not_exact():
    module = ContextModule(3, "large", seed=123)  # default noise_stddev 1e-3
    x = non_negative_input((1, 37, 41, 3), seed=1)
    y = to_np(module(x))
    err = np.abs(y - x)
    # Close: inputs are O(1) and the noise is 1e-3 per weight.
    assert err.max() < 0.3 and err.mean() < 0.05, (err.max(), err.mean())
    # Not exact: far above float32 round-off.
    assert err.max() > 1e-3, err.max()
    # The perturbation of every kernel is noise of standard deviation ~1e-3.
    for conv in module.convs:
        kernel = to_np(conv.kernel)
        exact = to_np(ContextIdentity(3)(tuple(kernel.shape)))
        std = float(np.std(kernel - exact))
        assert 0.8e-3 < std < 1.2e-3, (conv.name, std)


def test_identity_initializer_block_structure():
    # C = 2, 2 -> 4 channels: input channel a feeds outputs 2a, 2a+1 with weight 2/4.
    k = to_np(ContextIdentity(2)((3, 3, 2, 4)))
    expected = np.zeros((3, 3, 2, 4))
    expected[1, 1, 0, 0:2] = 0.5
    expected[1, 1, 1, 2:4] = 0.5
    np.testing.assert_array_equal(k, expected)
    # 4 -> 2 (back to C): outputs sum blocks of two inputs with weight 1.
    k = to_np(ContextIdentity(2)((1, 1, 4, 2)))
    np.testing.assert_array_equal(k[0, 0], [[1, 0], [1, 0], [0, 1], [0, 1]])


def test_glorot_initializer_is_not_identity():
    module = ContextModule(3, kernel_initializer="glorot_uniform")
    x = non_negative_input((1, 20, 22, 3), seed=2)
    y = to_np(module(x))
    assert y.shape == x.shape and np.isfinite(y).all()
    assert np.abs(y - x).max() > 0.1
    first = to_np(module.convs[0].kernel)
    assert np.abs(first - to_np(ContextIdentity(3)((3, 3, 3, 3)))).max() > 1e-2
    assert module.kernel_initializer.__class__.__name__ == "GlorotUniform"


# ---------------------------------------------------------------------------
# architecture
# ---------------------------------------------------------------------------

def test_receptive_field_default_dilations():
    # 1 + 2 * (1 + 1 + 2 + 4 + 8 + 16 + 1) = 67; the final 1x1 adds nothing.
    assert ContextModule(4).receptive_field == 67
    assert ContextModule(4, dilations=(1, 2)).receptive_field == 1 + 2 * 3


def hand_param_count(channels, widths):
    """3x3 convs cin -> cout with bias, then the 1x1 conv back to ``channels``."""
    total, cin = 0, channels
    for cout in widths:
        total += 3 * 3 * cin * cout + cout
        cin = cout
    return total + cin * channels + channels


@pytest.mark.parametrize("channels", [1, 3])
def test_basic_widths_and_params(channels):
    module = ContextModule(channels, "basic")
    module.build((None, 16, 16, channels))
    assert len(module.convs) == 8
    assert [c.filters for c in module.convs] == [channels] * 8
    assert [tuple(c.kernel_size) for c in module.convs] == [(3, 3)] * 7 + [(1, 1)]
    assert [c.dilation_rate[0] for c in module.convs[:7]] == list(PAPER_DILATIONS)
    assert module.count_params() == hand_param_count(channels, [channels] * 7)


@pytest.mark.parametrize("channels", [1, 3])
def test_large_widths_and_params(channels):
    module = ContextModule(channels, "large")
    module.build((None, 16, 16, channels))
    widths = [m * channels for m in LARGE_MULTIPLIERS]
    assert [c.filters for c in module.convs] == widths + [channels]
    assert [tuple(c.kernel.shape) for c in module.convs][-1] == (1, 1, 32 * channels, channels)
    assert module.count_params() == hand_param_count(channels, widths)


def test_activations_relu_except_last():
    module = ContextModule(2)
    names = [keras.activations.serialize(c.activation) for c in module.convs]
    assert names[:7] == ["relu"] * 7
    assert names[7] == "linear"


def support_extent(y):
    """(height, width) of the bounding box of non-zeros, asserting it is filled."""
    nz = np.argwhere(y != 0)
    lo, hi = nz.min(axis=0), nz.max(axis=0)
    box = y[lo[0]: hi[0] + 1, lo[1]: hi[1] + 1]
    assert (box != 0).all()  # a solid square, no holes
    return tuple(int(v) for v in hi - lo + 1), tuple(int(v) for v in (lo + hi) // 2)


def test_receptive_field_by_impulse():
    # All-ones kernels, zero biases: an impulse at the centre of a 151x151 image
    # spreads to exactly the receptive field after each prefix of layers:
    # 1 + 2 * cumulative dilation = 3, 5, 9, 17, 33, 65, 67, and the 1x1 keeps 67.
    module = ContextModule(1, kernel_initializer="ones")
    x = np.zeros((1, 151, 151, 1), "float32")
    x[0, 75, 75, 0] = 1.0
    module.build(x.shape)
    for conv in module.convs:
        np.testing.assert_array_equal(to_np(conv.bias), 0.0)
    h = x
    sizes = []
    for conv in module.convs:
        h = conv(h)
        size, centre = support_extent(to_np(h)[0, :, :, 0])
        assert size[0] == size[1] and centre == (75, 75)
        sizes.append(size[0])
    assert sizes == [3, 5, 9, 17, 33, 65, 67, 67]
    # The module's own call gives the same map.
    size, _ = support_extent(to_np(module(x))[0, :, :, 0])
    assert size == (67, 67) and module.receptive_field == 67


def test_kernel_sizes_make_1x1_layers():
    # All-ones kernels: 1x1 layers do not widen the support, 3x3 ones by 2 * dilation.
    module = ContextModule(1, dilations=(1, 4, 2, 3), kernel_sizes=(3, 1, 3, 1),
                           kernel_initializer="ones")
    x = np.zeros((1, 41, 41, 1), "float32")
    x[0, 20, 20, 0] = 1.0
    module.build(x.shape)
    assert [tuple(c.kernel_size) for c in module.convs] == [(3, 3), (1, 1), (3, 3), (1, 1),
                                                            (1, 1)]
    h, sizes = x, []
    for conv in module.convs:
        h = conv(h)
        sizes.append(support_extent(to_np(h)[0, :, :, 0])[0][0])
    assert sizes == [3, 3, 7, 7, 7] and module.receptive_field == 7


@pytest.mark.parametrize("variant", ["basic", "large"])
def test_fresh_module_with_1x1_layers_is_identity(variant):
    # Noise-free identity initialisation: still the identity on non-negative maps.
    fresh = ContextModule(3, variant, kernel_sizes=(3, 1, 3, 1, 3, 1, 3), noise_stddev=0.0)
    x = non_negative_input((2, 15, 14, 3))
    np.testing.assert_allclose(to_np(fresh(x)), x, rtol=1e-5, atol=1e-6)


def test_output_shape_and_compute_output_shape():
    module = ContextModule(3, "basic")
    x = non_negative_input((2, 13, 9, 3))
    assert tuple(module(x).shape) == (2, 13, 9, 3)
    assert tuple(module.compute_output_shape((None, 13, 9, 3))) == (None, 13, 9, 3)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"variant": "huge"}, "variant"),
    ({"channels": 0}, "channels"),
    ({"channels": 2.0}, "channels"),
    ({"channels": True}, "channels"),
    ({"dilations": ()}, "dilations"),
    ({"dilations": (1, 0, 2)}, "dilations"),
    ({"dilations": (1, 1.5)}, "dilations"),
    ({"kernel_sizes": (3, 3)}, r"`kernel_sizes` must be odd positive ints, one per dilation \(7\)"),
    ({"kernel_sizes": (3, 1, 3, 1, 3, 2, 3)}, "kernel_sizes"),
    ({"dilations": (1, 2), "kernel_sizes": (0, 3)}, "kernel_sizes"),
    ({"noise_stddev": -1e-3}, "noise_stddev"),
    ({"noise_stddev": float("nan")}, "noise_stddev"),
    ({"noise_stddev": "0.1"}, "noise_stddev"),
])
def test_bad_arguments_raise(kwargs, match):
    args = {"channels": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        ContextModule(**args)


@pytest.mark.parametrize("variant", ["basic", "large"])
def test_input_channels_must_equal_channels(variant):
    module = ContextModule(8, variant)
    with pytest.raises(ValueError, match="must have 8 channels, got 4"):
        module(np.zeros((1, 9, 9, 4), "float32"))
    with pytest.raises(ValueError, match="must have 8 channels, got 16"):
        ContextModule(8, variant).build((None, 9, 9, 16))
    with pytest.raises(ValueError, match="must have 8 channels, got 4"):
        ContextModule(8, variant)(keras.Input((None, None, 4)))
    # Unknown spatial sizes are fine; the matching channel count builds.
    assert tuple(module(keras.Input((None, None, 8))).shape) == (None, None, None, 8)


def test_non_4d_input_raises():
    with pytest.raises(ValueError, match="ndim|4-D"):
        ContextModule(2)(np.zeros((8, 8, 2), "float32"))


@pytest.mark.parametrize("variant", ["basic", "large"])
def test_unknown_input_channels_build_at_the_module_width(variant):
    # Before: Conv2D raised a TypeError on the unknown channel count.
    module = ContextModule(3, variant, noise_stddev=0.0)
    model = keras.Model(inputs := keras.Input((None, None, None)), module(inputs))
    assert tuple(model.output.shape) == (None, None, None, 3)
    x = non_negative_input((2, 9, 11, 3))
    np.testing.assert_allclose(to_np(model(x)), x, rtol=0, atol=1e-5)


def test_a_seeded_kernel_initializer_gives_each_layer_its_own_draw():
    # A seeded Keras initializer repeats its values at every call; shared as it is, every
    # same-shape layer of the module would start equal (all of basic's 3x3 layers).
    variant = "basic"
    init = keras.initializers.HeNormal(seed=3)
    module = ContextModule(4, variant, dilations=(1, 2, 4, 1), kernel_initializer=init)
    module.build((None, 16, 16, 4))
    kernels = [to_np(conv.kernel) for conv in module.convs]
    # The first layer draws what the user's initializer gives for its shape.
    np.testing.assert_array_equal(kernels[0], to_np(init(kernels[0].shape)))
    same_shape = [(i, j) for i in range(len(kernels)) for j in range(i)
                  if kernels[i].shape == kernels[j].shape]
    assert same_shape
    for i, j in same_shape:
        assert not np.allclose(kernels[i], kernels[j]), (i, j)
    again = ContextModule(4, variant, dilations=(1, 2, 4, 1), kernel_initializer=init)
    again.build((None, 16, 16, 4))
    for got, conv in zip(kernels, again.convs):
        np.testing.assert_array_equal(got, to_np(conv.kernel))


# ---------------------------------------------------------------------------
# serialisation and training
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"channels": 2, "variant": "large", "dilations": (1, 2, 4), "noise_stddev": 1e-2,
     "seed": 5},
    {"channels": 3, "kernel_initializer": "he_normal", "dilations": (1, 3)},
    {"channels": 2, "dilations": (1, 2, 4), "kernel_sizes": (3, 1, 5)},
])
def test_config_round_trip(kwargs):
    check_config_round_trip(ContextModule, kwargs, (2, 12, 11, kwargs["channels"]))


def test_numpy_dilations_give_a_json_config():
    """NumPy integers are taken and stored as Python ints, so the config is JSON."""
    import json

    layer = ContextModule(2, dilations=np.array([1, 2, 4]), kernel_sizes=np.array([3, 1, 3]))
    config = json.loads(json.dumps(layer.get_config()))
    assert config["dilations"] == [1, 2, 4] and config["kernel_sizes"] == [3, 1, 3]
    check_config_round_trip(ContextModule, {"channels": 2, "dilations": np.array([1, 2])},
                            (2, 8, 8, 2))


def test_saving_round_trip(tmp_path):
    check_saving_round_trip(
        lambda: ContextModule(2, "large", dilations=(1, 2), seed=0), (2, 10, 9, 2), tmp_path)


@pytest.mark.training
def test_fit_step():
    check_fit_step(lambda: ContextModule(2, dilations=(1, 2)), (2, 10, 10, 2))
