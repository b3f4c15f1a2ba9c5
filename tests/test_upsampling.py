"""BilinearUpSampling2D against Keras' own bilinear UpSampling2D, on known and unknown sizes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kronecker_zoo import models
from kronecker_zoo.layers import BilinearUpSampling2D


def test_equals_keras_bilinear_upsampling_on_known_and_unknown_sizes():
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype("float32")
    want = keras.layers.UpSampling2D((2, 3), interpolation="bilinear")(x).numpy()
    layer = BilinearUpSampling2D((2, 3))
    np.testing.assert_allclose(layer(x).numpy(), want, rtol=0, atol=1e-6)
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3))])
    np.testing.assert_allclose(traced(x).numpy(), want, rtol=0, atol=1e-6)


def test_config_round_trip_and_errors():
    layer = BilinearUpSampling2D(2, name="up")
    clone = BilinearUpSampling2D.from_config(layer.get_config())
    assert clone.size == (2, 2) and clone.interpolation == "bilinear" and clone.name == "up"
    with pytest.raises(ValueError, match="bilinear"):
        BilinearUpSampling2D(2, interpolation="nearest")


@pytest.mark.parametrize("name", ["pool_segnet_small", "context_net_basic"])
def test_any_size_segmentation_model_predicts_on_several_sizes(name):
    model = models.get(name, input_shape=(None, None, 1))
    rng = np.random.default_rng(1)
    for h, w in ((64, 64), (96, 80), (40, 56)):  # predict retraces with relaxed shapes
        x = rng.uniform(0, 255, (1, h, w, 1)).astype("float32")
        got = model.predict(x, verbose=0)
        assert got.shape == (1, h, w, 11)
        np.testing.assert_allclose(got, model(x, training=False).numpy(), rtol=1e-4,
                                   atol=1e-4)


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", ["kron_context_net_basic", "pool_segnet_small"])
def test_segmentation_models_train_in_mixed_precision_with_jit_compile(mixed_float16, name):
    """XLA on CPU refused the float16 gradient of a bilinear resize inside a jit-compiled
    train step ("mixed precision is disallowed"); the layer resizes in float32 and casts
    back, so the values are the float32 resize's, rounded to float16."""
    x = np.random.default_rng(1).normal(size=(2, 5, 7, 3)).astype("float16")
    layer = BilinearUpSampling2D((2, 3))
    got = layer(x)
    assert got.dtype == "float16"
    want = keras.layers.UpSampling2D((2, 3), interpolation="bilinear", dtype="float32")(
        x.astype("float32")).numpy().astype("float16")
    np.testing.assert_array_equal(np.asarray(got), want)
    model = models.get(name)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 1)).astype("float32")
    history = model.fit(images, np.zeros((4, 64, 64), "int32"), batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
