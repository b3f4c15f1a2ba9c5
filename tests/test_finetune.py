"""Pretrained weights into another head / no head / other input channels; freezing."""

import keras
import numpy as np
import pytest

from kronecker_zoo import models


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A kron_resnet_8 with every weight randomised (BN statistics included), saved."""
    model = models.get("kron_resnet_8")
    rng = np.random.default_rng(0)
    model.set_weights([np.abs(rng.normal(1.0, 0.3, w.shape)).astype("float32")
                       if "variance" in w.path else rng.normal(0, 0.3, w.shape).astype("float32")
                       for w in model.weights])
    path = str(tmp_path_factory.mktemp("w") / "kron_resnet_8.weights.h5")
    model.save_weights(path)
    return model, path


def _pixels(shape, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def test_same_configuration_loads_exactly(saved):
    model, path = saved
    x = _pixels((2, 28, 28, 1))
    np.testing.assert_array_equal(_np(models.get("kron_resnet_8", weights=path)(x)), _np(model(x)))


def test_backbone_and_new_head(saved):
    model, path = saved
    x = _pixels((2, 28, 28, 1))
    features = keras.Model(model.input, model.get_layer("stage3_block1_out").output)
    backbone = models.get("kron_resnet_8", weights=path, include_top=False)
    np.testing.assert_allclose(_np(backbone(x)), _np(features(x)), rtol=1e-5, atol=1e-5)
    five = models.get("kron_resnet_8", weights=path, num_classes=5)
    assert five.output_shape == (None, 5)
    for layer in five.layers:
        if layer.weights and layer.name != "predictions":
            for a, b in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    # The new head is initialised, not copied: its kernel has the new shape.
    assert five.get_layer("predictions").kernel.shape == (64, 5)


def test_rgb_input_adapts_the_first_convolution(saved):
    model, path = saved
    grey = _pixels((2, 28, 28, 1))
    rgb_model = models.get("kron_resnet_8", weights=path, input_shape=(28, 28, 3))
    np.testing.assert_allclose(_np(rgb_model(np.repeat(grey, 3, axis=-1))), _np(model(grey)),
                               rtol=1e-4, atol=1e-4)
    old = model.get_layer("stem_conv").get_weights()[0]
    new = rgb_model.get_layer("stem_conv").get_weights()[0]
    np.testing.assert_allclose(new, np.repeat(old, 3, axis=2) / 3, rtol=1e-6)


def test_a_fine_tuned_file_loads_back(saved, tmp_path):
    _, path = saved
    five = models.get("kron_resnet_8", weights=path, num_classes=5)
    own = str(tmp_path / "five.weights.h5")
    five.save_weights(own)
    again = models.get("kron_resnet_8", weights=own, num_classes=5)
    x = _pixels((2, 28, 28, 1))
    np.testing.assert_array_equal(_np(again(x)), _np(five(x)))


def test_weights_of_another_model_are_rejected(saved):
    _, path = saved
    with pytest.raises(ValueError):
        models.get("resnet_8", weights=path)


@pytest.mark.training
def test_frozen_backbone_trains_only_the_head(saved):
    _, path = saved
    model = models.set_backbone_trainable(
        models.get("kron_resnet_8", weights=path, num_classes=3), False)
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"predictions"}
    before = {w.path: _np(w).copy() for w in model.weights}
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(_pixels((8, 28, 28, 1)), np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)
    for w in model.weights:
        changed = not np.array_equal(before[w.path], _np(w))
        assert changed == w.path.startswith("predictions"), w.path  # BN stats frozen too
    models.set_backbone_trainable(model, True)
    assert len(model.trainable_weights) > 10


def test_missing_layers_raise_or_keep_their_initialisation():
    """``missing="keep"``: the layers the source has are copied, the others stay as built."""
    front = models.get("context_net_frontend", input_shape=(16, 16, 1))
    rng = np.random.default_rng(2)
    front.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in front.weights])
    basic = models.get("context_net_basic", input_shape=(16, 16, 1))
    built = {layer.name: [w.copy() for w in layer.get_weights()] for layer in basic.layers}
    with pytest.raises(ValueError, match="has no layer 'context"):
        models.transfer_weights(front, basic)
    kept = models.transfer_weights(front, basic, missing="keep")
    front_names = {layer.name for layer in front.layers if layer.weights}
    assert kept and set(kept) == {layer.name for layer in basic.layers
                                  if layer.weights and layer.name not in front_names}
    for layer in basic.layers:
        if not layer.weights:
            continue
        expected = (front.get_layer(layer.name).get_weights() if layer.name in front_names
                    else built[layer.name])
        for a, b in zip(layer.get_weights(), expected):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="missing must be"):
        models.transfer_weights(front, basic, missing="skip")


@pytest.mark.parametrize("c_old", [1, 2, 3, 4])
@pytest.mark.parametrize("c_new", [1, 2, 3, 4])
def test_adapted_first_convolution_is_exact_on_images_with_equal_channels(c_old, c_new):
    """Any channel count to any other (3 -> 1 took channel 0 three times; 2 -> 3 scaled by
    2/3): a Conv2D with the adapted kernel on an image whose channels are all equal gives
    what the original gives on that image with its own channel count."""
    from kronecker_zoo.models.transfer import _adapt_input_channels

    rng = np.random.default_rng(c_old * 10 + c_new)
    old = rng.normal(size=(3, 3, c_old, 5)).astype("float32")
    new = _adapt_input_channels(old, (3, 3, c_new, 5))
    assert new.shape == (3, 3, c_new, 5) and new.dtype == old.dtype
    grey = rng.uniform(0, 255, (2, 8, 8, 1)).astype("float32")

    def conv(kernel, channels):
        layer = keras.layers.Conv2D(5, 3, use_bias=False)
        layer.build((None, 8, 8, channels))
        layer.set_weights([kernel])
        return _np(layer(np.repeat(grey, channels, axis=-1)))

    np.testing.assert_allclose(conv(new, c_new), conv(old, c_old), rtol=1e-4, atol=1e-3)


def test_a_failed_transfer_leaves_the_target_as_it_was():
    """The layers are all checked before any is written: a source without one of the
    target's layers (or with another width) raises and changes nothing."""
    source = models.get("resnet_8")
    for target in (models.get("resnet_20"), models.get("resnet_8", widths=(16, 32, 32))):
        before = [w.copy() for w in target.get_weights()]
        with pytest.raises(ValueError):
            models.transfer_weights(source, target)
        for a, b in zip(target.get_weights(), before):
            np.testing.assert_array_equal(a, b)


def test_set_backbone_trainable_takes_a_bool():
    model = models.get("resnet_8")
    with pytest.raises(ValueError, match="`trainable` must be True or False"):
        models.set_backbone_trainable(model, "False")
    assert len(model.trainable_weights) == len(
        [w for w in model.weights if "moving" not in w.path])  # unchanged
    models.set_backbone_trainable(model, np.bool_(False))
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"predictions"}
