"""experiments/int8_activation_equalization.py: the rescaled copy computes the same function
(float), leaves the model untouched, and ("act") gives every channel the same range."""

import keras
import numpy as np
import pytest

from experiments import int8_activation_equalization as eq


def _model(seed=0):
    rng = np.random.default_rng(seed)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="b1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(5, 3, strides=2, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="b2")(x)
    x = keras.layers.Activation("relu", name="r2")(x)
    y = keras.layers.Conv2D(4, 1, name="c3")(x)
    z = keras.layers.Conv2D(4, 1, name="side")(x)  # r2 has two readers: not equalizable
    outputs = keras.layers.Add()([y, z])
    model = keras.Model(inputs, outputs)
    for conv in (model.get_layer(n) for n in ("c1", "c2", "c3", "side")):
        conv.kernel.assign(rng.normal(0, 0.3, conv.kernel.shape).astype("float32"))
    for bn in (model.get_layer("b1"), model.get_layer("b2")):
        c = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.1, 3.0, c).astype("float32"))  # unequal ranges
        beta = rng.normal(0, 1, c)
        beta[:2] = -50.0, 5.0  # channel 0 never fires, channel 1 always does
        bn.beta.assign(beta.astype("float32"))
        bn.moving_mean.assign(rng.normal(0, 0.5, c).astype("float32"))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
    return model


def test_chains_are_only_those_read_by_one_convolution():
    names = [(bn.name, relu.name, conv.name)
             for bn, relu, conv in eq.equalizable_chains(_model())]
    assert names == [("b1", "r1", "c2")]


def test_chains_skip_what_cannot_be_rescaled_exactly():
    """No gamma (``scale=False``), a channels-first BatchNormalization, a convolution
    called twice (rescaling it would change its other call): none is a chain."""
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.BatchNormalization(scale=False, name="no_gamma")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="after_no_gamma")(x)
    y = keras.layers.BatchNormalization(axis=1, name="axis_1")(x)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(4, 3, padding="same", name="after_axis_1")(y)
    shared = keras.layers.Conv2D(4, 1, name="shared")
    z = keras.layers.BatchNormalization(name="ok_bn")(y)
    z = shared(keras.layers.ReLU()(z))
    outputs = keras.layers.Add()([z, shared(y)])
    assert eq.equalizable_chains(keras.Model(inputs, outputs)) == []


@pytest.mark.parametrize("mode", ["act", "cle"])
def test_equalized_copy_is_exact_in_float_and_leaves_the_model_alone(mode):
    model = _model()
    before = [np.array(w) for w in model.get_weights()]
    x = np.random.default_rng(1).uniform(0, 1, (16, 12, 12, 3)).astype("float32")
    copy, spreads = eq.equalized_copy(model, x, mode)
    assert [name for name, _ in spreads] == ["c2"] and 0 < spreads[0][1] < 1
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)
    relu_max = keras.Model(copy.inputs, copy.get_layer("r1").output).predict(x, verbose=0)
    relu_max = relu_max.reshape(-1, 6).max(axis=0)
    original = keras.Model(model.inputs, model.get_layer("r1").output).predict(x, verbose=0)
    original = original.reshape(-1, 6).max(axis=0)
    live = original > 0
    assert 0 < live.sum() < 6  # the fixture has dead channels: they keep their scale
    np.testing.assert_array_equal(relu_max[~live], 0)
    if mode == "act":  # every live channel now spans the tensor's range
        np.testing.assert_allclose(relu_max[live], original.max(), rtol=1e-5)
    else:  # Nagel: activation range / s == weight range * s, per live channel
        kernel = np.abs(np.asarray(copy.get_layer("c2").kernel)).max(axis=(0, 1, 3))
        ratio = relu_max[live] / kernel[live]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)


def test_dead_channels_keep_their_scale():
    s = eq.channel_scales(np.array([0.0, 2.0, 4.0]), np.ones((3, 3, 3, 2)), "act")
    np.testing.assert_allclose(s, [1.0, 0.5, 1.0])


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="Unknown mode 'x'"):
        eq.channel_scales(np.ones(3), np.ones((1, 1, 3, 2)), "x")
