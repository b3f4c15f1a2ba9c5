"""compress.LogitKLDivergence / logits_distillation against a float64 NumPy KL."""

import keras
import numpy as np
import pytest

from kronecker_zoo import compress


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float64")


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _kl(t, s):
    """Row-wise KL(softmax(t) || softmax(s)) in float64."""
    lp, lq = _log_softmax(t.astype("float64")), _log_softmax(s.astype("float64"))
    return (np.exp(lp) * (lp - lq)).sum(-1)


@pytest.mark.parametrize("spread", [1.0, 30.0])
def test_logit_kl_equals_numpy(spread):
    rng = np.random.default_rng(0)
    t = (rng.normal(size=(6, 10)) * spread).astype("float32")
    s = (rng.normal(size=(6, 10)) * spread).astype("float32")
    loss = compress.LogitKLDivergence(scale=2.5)
    np.testing.assert_allclose(_np(loss(t, s)), 2.5 * _kl(t, s).mean(), rtol=1e-5)
    assert float(loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    per_row = compress.LogitKLDivergence(reduction=None)(t, s)
    np.testing.assert_allclose(_np(per_row), _kl(t, s), rtol=1e-5, atol=1e-6)


def test_logits_distillation_is_t2_times_the_tempered_kl():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(8, 10)).astype("float32") * 5
    s = rng.normal(size=(8, 10)).astype("float32") * 5
    kd = compress.logits_distillation(temperature=4.0)
    assert isinstance(kd, keras.distillation.LogitsDistillation)
    np.testing.assert_allclose(_np(kd.compute_loss(t, s)), 16.0 * _kl(t / 4, s / 4).mean(),
                               rtol=1e-5)
    # Keras' own KL branch (a KLDivergence instance) agrees where nothing is clipped.
    keras_kd = keras.distillation.LogitsDistillation(temperature=4.0,
                                                     loss=keras.losses.KLDivergence())
    np.testing.assert_allclose(_np(kd.compute_loss(t, s)), _np(keras_kd.compute_loss(t, s)),
                               rtol=1e-4)


def test_far_apart_logits_keep_a_finite_loss_and_the_exact_gradient():
    # A student whose tempered probabilities underflow: the clipped KL loses the gradient.
    t = np.array([[0.0, 2.0, -1.0, 1.0]], "float32")
    s = np.array([[400.0, -400.0, 0.0, -300.0]], "float32")
    loss = compress.LogitKLDivergence()
    value = _np(loss(t, s))
    assert np.isfinite(value) and value == pytest.approx(_kl(t, s)[0], rel=1e-5)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        v = tf.Variable(s)
        with tf.GradientTape() as tape:
            out = loss(t, v)
        grad = tape.gradient(out, v).numpy()
    else:
        import jax

        grad = np.asarray(jax.grad(lambda z: loss(t, z))(s))
    p, q = np.exp(_log_softmax(t)), np.exp(_log_softmax(s))
    np.testing.assert_allclose(grad, q - p, atol=1e-6)  # d KL / d s = softmax(s) - softmax(t)


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale must be positive"):
        compress.LogitKLDivergence(scale=0)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        compress.logits_distillation(temperature=-1)


def test_serializes():
    loss = compress.LogitKLDivergence(scale=9.0)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, compress.LogitKLDivergence) and again.scale == 9.0
