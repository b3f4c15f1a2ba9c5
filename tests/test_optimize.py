"""tfmot on zoo models: the tf_keras bridge, quantization-aware training, pruning.

Fast tests check the bridge (every registry model's tf_keras twin computes the
same function with the same weights, gradients included), the errors, and the
structure of the QAT and pruned twins. The slow tests fine-tune the pretrained
kron_resnet_8 (and resnet_8) briefly on a Fashion-MNIST train subset and score
the 10,000 test images: QAT int8 TFLite vs float Keras vs post-training int8, and 50%
magnitude pruning (sparsity of the kernels, accuracy, zeros in the .tflite).
"""

import importlib.util
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from kronecker_zoo import data, models, optimize
from kronecker_zoo.export import run_tflite, tflite_quantization, to_tflite, verify_tflite
from kronecker_zoo.export.verify import sqnr_db
from kronecker_zoo.layers import KroneckerConv2D
from kronecker_zoo.tf_keras_bridge import (
    BridgedLayer,
    UnsupportedLayerError,
    copy_weights,
    to_tf_keras,
    unwrap,
)
from tests import zoo_cases


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def _randomize(model, seed=0):
    """Every weight random (BN statistics too), so no weight is trivially 0 or 1."""
    rng = np.random.default_rng(seed)
    model.set_weights([
        np.abs(rng.normal(1.0, 0.3, w.shape)).astype("float32") if "variance" in w.path
        else (w.numpy() + rng.normal(0, 0.05, w.shape)).astype("float32")
        for w in model.weights])
    return model


def _sample_shape(model):
    return tuple(d or 37 for d in model.input_shape[1:])


def _rel_error(a, b):
    a, b = _np(a), _np(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12))


# -- the bridge ------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [None, "0"])
def test_import_leaves_tf_keras_and_the_environment_as_they_were(legacy):
    """tfmot's import sets TF_USE_LEGACY_KERAS=1 and would bind tf.keras to tf_keras."""
    script = ("import os, tensorflow as tf, kronecker_zoo.optimize\n"
              "print('LEGACY', os.environ.get('TF_USE_LEGACY_KERAS'))\n"
              "print('TFKERAS', tf.keras.version())\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    env.pop("TF_USE_LEGACY_KERAS", None)
    if legacy is not None:
        env["TF_USE_LEGACY_KERAS"] = legacy
    result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    lines = result.stdout.splitlines()
    assert f"LEGACY {legacy}" in lines, result.stdout + result.stderr[-3000:]
    assert f"TFKERAS {keras.version()}" in lines, result.stdout + result.stderr[-3000:]


@pytest.mark.parametrize("name", zoo_cases.ONE_PER_FAMILY)
def test_twin_matches_every_registry_model(name):
    model = _randomize(models.get(name))
    twin = to_tf_keras(model)
    assert isinstance(twin, tf_keras.Model)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    for layer in model.layers:
        k3 = [_np(v) for v in (layer.variables if type(layer).__module__.startswith(
            "kronecker_zoo") else layer.weights)]
        tk = twin.get_layer(layer.name)
        tk = ([t.numpy() for _, t in tk.variable_pairs] if isinstance(tk, BridgedLayer)
              else [w.numpy() for w in tk.weights])
        assert len(k3) == len(tk), layer.name
        for a, b in zip(k3, tk):
            np.testing.assert_array_equal(a, b)  # carried over exactly
    assert twin.count_params() == model.count_params()
    x = _pixels((2,) + _sample_shape(model))
    assert _rel_error(model(x, training=False), twin(x, training=False)) < 1e-5


def test_zoo_layers_become_bridged_layers():
    twin = to_tf_keras(models.get("kron_resnet_8"))
    kron = twin.get_layer("stage2_block1_conv1")
    assert isinstance(kron, BridgedLayer) and isinstance(kron.source, KroneckerConv2D)
    # One variable per factor, shaped as the Keras 3 factors; the kernels are the factors.
    assert [tuple(t.shape) for _, t in kron.variable_pairs] == [
        tuple(v.shape) for v in kron.source.factor_weights]
    assert kron.kernel_variables == [t for _, t in kron.variable_pairs]
    assert kron.get_prunable_weights() == kron.kernel_variables
    assert type(twin.get_layer("stem_conv")) is tf_keras.layers.Conv2D
    assert type(twin.get_layer("stem_bn")) is tf_keras.layers.BatchNormalization
    assert type(twin.get_layer("normalize")) is tf_keras.layers.Rescaling


@pytest.mark.parametrize("name", ["pool_segnet_small", "kron_context_net_basic"])
def test_twin_with_unknown_input_size(name):
    model = _randomize(models.get(name, input_shape=(None, None, 1)))
    twin = to_tf_keras(model)
    x = _pixels((1, 37, 45, 1))  # odd sizes: CropToMatch after the upsampling
    assert _rel_error(model(x, training=False), twin(x, training=False)) < 1e-5


@pytest.mark.training
def test_twin_gradients_match():
    # Layer by layer, on each bridged layer's own input: a randomised network in
    # training mode is too ill-conditioned for an end-to-end float32 comparison (a
    # 1e-6 relative change of the input moves its gradients by percents).
    model = _randomize(models.get("kron_resnet_8"))
    twin = to_tf_keras(model)
    bridged = [layer for layer in twin.layers if isinstance(layer, BridgedLayer)]
    assert len(bridged) == 6  # the six Kronecker convolutions
    rng = np.random.default_rng(1)
    for layer in bridged:
        source = layer.source
        x = tf.constant(rng.normal(size=(2,) + tuple(source.input.shape[1:])), "float32")
        dy = tf.constant(rng.normal(size=(2,) + tuple(source.output.shape[1:])), "float32")

        def grads(call, variables):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = call(x)
            return tape.gradient(y, [x, *variables], output_gradients=dy)

        pairs = [pair for pair in layer.variable_pairs if pair[0].trainable]
        expected = grads(lambda t: source(t, training=True), [v.value for v, _ in pairs])
        actual = grads(lambda t: layer(t, training=True), [t for _, t in pairs])
        names = ["input"] + [v.path for v, _ in pairs]
        for name, a, e in zip(names, actual, expected):
            e = _np(e)
            np.testing.assert_allclose(a.numpy(), e, rtol=1e-4,
                                       atol=1e-5 * np.abs(e).max(), err_msg=name)


def test_copy_weights_round_trip():
    model = models.get("kron_resnet_8")
    twin = to_tf_keras(model)
    rng = np.random.default_rng(3)
    twin.set_weights([w + rng.normal(0, 0.05, w.shape).astype("float32")
                      for w in twin.get_weights()])
    x = _pixels((2, 28, 28, 1))
    assert _rel_error(model(x, training=False), twin(x, training=False)) > 1e-3
    copy_weights(twin, model)
    assert _rel_error(model(x, training=False), twin(x, training=False)) < 1e-5
    mismatched = models.get("kron_resnet_8", num_classes=3)
    with pytest.raises(ValueError, match="predictions"):
        copy_weights(twin, mismatched)


def test_twin_serializes():
    twin = to_tf_keras(_randomize(models.get("kron_context_net_basic")))
    clone = tf_keras.models.clone_model(twin)  # through get_config / from_config
    clone.set_weights(twin.get_weights())
    x = _pixels((1, 64, 64, 1))
    assert _rel_error(twin(x), clone(x)) < 1e-6


@keras.saving.register_keras_serializable(package="test_optimize")
class Doubler(keras.layers.Layer):
    """A non-zoo custom layer written with keras.ops."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return keras.ops.multiply(inputs, 2.0 * self.scale)


def _custom_model():
    inputs = keras.Input((8, 8, 2), name="pixels")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    return keras.Model(inputs, Doubler(name="double")(x))


def test_unsupported_layers_are_named():
    with pytest.raises(UnsupportedLayerError, match=r"'double'.*Doubler.*custom_layers"):
        to_tf_keras(_custom_model())
    model = _custom_model()
    twin = to_tf_keras(model, custom_layers=(Doubler,))
    x = _pixels((1, 8, 8, 2))
    assert _rel_error(model(x), twin(x)) < 1e-6

    inputs = keras.Input((5, 3))
    lstm = keras.Model(inputs, keras.layers.LSTM(4, name="recurrent")(inputs))
    with pytest.raises(UnsupportedLayerError, match=r"'recurrent'.*LSTM"):
        to_tf_keras(lstm)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(UnsupportedLayerError, match="functional"):
        to_tf_keras(Subclassed())


def test_keras3_only_options_are_refused():
    inputs = keras.Input((6,))
    dense = keras.layers.Dense(4, name="adapted")
    model = keras.Model(inputs, dense(inputs))
    dense.enable_lora(2)
    with pytest.raises(UnsupportedLayerError, match=r"'adapted'.*lora_rank"):
        to_tf_keras(model)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed")
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="this is the outer (TensorFlow) run")
def test_quantize_aware_and_prune_refuse_the_jax_backend():
    script = (
        "import keras\n"
        "from kronecker_zoo import models, optimize, tf_keras_bridge\n"
        "m = models.get('kron_resnet_8')\n"
        "calls = {'quantize_aware': lambda: optimize.quantize_aware(m),\n"
        "         'prune': lambda: optimize.prune(m, 0.5),\n"
        "         'to_tf_keras': lambda: tf_keras_bridge.to_tf_keras(m)}\n"
        "for name, call in calls.items():\n"
        "    try:\n"
        "        call()\n"
        "    except ValueError as error:\n"
        "        print(name, 'REFUSED:', error)\n"
        "    else:\n"
        "        print(name, 'RAN')\n"
        "print('backend', keras.backend.backend())\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=root)
    result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    lines = result.stdout.splitlines()
    assert "backend jax" in lines, result.stdout + result.stderr[-3000:]
    for name in ("quantize_aware", "prune", "to_tf_keras"):
        line = next((x for x in lines if x.startswith(name + " ")), "")
        assert line.startswith(f"{name} REFUSED: {name} builds a tf_keras model"), line
        assert "on the 'jax' backend. Set KERAS_BACKEND=tensorflow" in line, line


# -- quantization-aware training (structure) --------------------------------------------


@pytest.mark.training
def test_quantize_aware_structure_and_step():
    model = models.get("kron_resnet_8", execution="materialized")
    qat = optimize.quantize_aware(model)
    wrappers = {unwrap(layer).name: layer for layer in qat.layers
                if isinstance(layer, tf_keras.layers.Wrapper)}
    kron = wrappers["stage1_block1_conv1"]
    assert isinstance(kron.quantize_config, optimize.BridgedQuantizeConfig)
    # Kronecker factors fake-quantized; output left to the BatchNormalization after it.
    assert len(kron._weight_vars) == len(kron.layer.kernel_variables) == 2
    assert kron.quantize_config.quantize_output is False
    assert wrappers["stage1_block1_1_bn"].quantize_config.get_config() == {
        "quantize_output": True}
    # Weights carried over exactly.
    np.testing.assert_array_equal(
        kron.layer.kernel_variables[0].numpy(),
        _np(model.get_layer("stage1_block1_conv1").factor_weights[0]))
    optimize.compile_for_finetuning(qat)
    history = qat.fit(_pixels((32, 28, 28, 1)), np.arange(32) % 10, batch_size=16,
                      epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_quantize_aware_model_saved_as_h5_reloads_under_quantize_scope(tmp_path):
    """The documented way to keep a QAT fine-tune between sessions: ``.h5`` (tf_keras'
    ``.keras`` cannot reload tfmot's QuantizeLayer) loaded under `quantize_scope`, which
    knows the bridged zoo layers and their quantize config: same outputs, same ranges."""
    model = _randomize(models.get("kron_resnet_8", execution="materialized"))
    x = _pixels((16, 28, 28, 1))
    qat = optimize.quantize_aware(model, representative_data=x)
    optimize.compile_for_finetuning(qat)
    qat.fit(x, np.arange(16) % 10, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "qat.h5")
    qat.save(path)
    with optimize.quantize_scope():
        loaded = tf_keras.models.load_model(path)
    kron = next(layer for layer in loaded.layers if unwrap(layer).name == "stage1_block1_conv1")
    assert isinstance(kron.quantize_config, optimize.BridgedQuantizeConfig)
    assert len(loaded.weights) == len(qat.weights)  # (names gain a "quant_" scope)
    for saved, original in zip(loaded.weights, qat.weights):
        np.testing.assert_array_equal(saved.numpy(), original.numpy())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))


@pytest.mark.training
def test_quantize_aware_and_prune_never_touch_the_users_model():
    """Building, training and stripping the twins, and calls that fail, leave the user's
    model's weights and outputs bit for bit as they were."""
    model = _randomize(models.get("kron_resnet_8", execution="materialized"))
    x = _pixels((4, 28, 28, 1))
    weights = [np.array(w) for w in model.weights]
    expected = _np(model(x, training=False))
    for twin in (optimize.quantize_aware(model), optimize.prune(model, 0.5, frequency=1)):
        optimize.compile_for_finetuning(twin)
        callbacks = optimize.pruning_callbacks() if optimize.pruned_layers(twin) else []
        twin.fit(x, np.arange(4) % 10, batch_size=2, epochs=1, verbose=0, callbacks=callbacks)
    optimize.strip_pruning(twin)
    with pytest.raises(ValueError, match="nope"):
        optimize.prune(model, 0.5, layers=["nope"])
    with pytest.raises(ValueError, match="target_sparsity"):
        optimize.prune(model, 1.0)
    for w, before in zip(model.weights, weights):
        np.testing.assert_array_equal(np.array(w), before)
    np.testing.assert_array_equal(_np(model(x, training=False)), expected)


FAMILY_MODELS = ["resnet_8", "lowrank_resnet_8", "separable_resnet_8", "drn_8",
                 "context_net_basic", "kron_context_net_basic", "dilated_fcn_small",
                 "pool_segnet_small"]


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_quantize_and_prune_every_family(name):
    """QAT and pruning twins build and run for one model of every family."""
    model = models.get(name)
    x = _pixels((1,) + _sample_shape(model))
    qat = optimize.quantize_aware(model)
    assert qat(x, training=False).shape == model.output_shape[:0] + (1,) + model.output_shape[1:]
    pruned = optimize.prune(model, 0.5)
    assert optimize.pruned_layers(pruned)
    assert _rel_error(model(x, training=False), pruned(x, training=False)) < 1e-5


def test_options_renamed_or_redefined_in_tf_keras():
    """LeakyReLU's ``negative_slope`` is tf_keras' ``alpha``; ``hard_sigmoid`` is another
    function in tf_keras (refused, not silently changed); a Keras operation that is not a
    layer (``x * 0.5``) is named."""
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 1)(inputs)
    model = keras.Model(inputs, keras.layers.LeakyReLU(negative_slope=0.1)(x))
    x_in = _pixels((2, 8, 8, 2)) - 128.0
    assert _rel_error(model(x_in), to_tf_keras(model)(x_in)) < 1e-6
    for layer in (keras.layers.Dense(3, activation="hard_sigmoid", name="hard"),
                  keras.layers.Activation("hard_sigmoid", name="hard")):
        with pytest.raises(UnsupportedLayerError, match="'hard'.*'hard_sigmoid' computes"):
            to_tf_keras(keras.Model(inputs, layer(inputs)))
    scaled = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs) * 0.5)
    with pytest.raises(UnsupportedLayerError, match=r"Keras operation 'multiply(_\d+)?'.*Rescaling"):
        to_tf_keras(scaled)


def test_quantize_aware_takes_unregistered_custom_layers():
    """tfmot rebuilds every layer from its config: the user's class (not registered for
    serialization) is found through ``custom_layers``."""

    class Gain(keras.layers.Layer):
        def build(self, shape):
            self.gain = self.add_weight(shape=(shape[-1],), initializer="ones", name="gain")

        def call(self, x):
            return x * self.gain

    inputs = keras.Input((8, 8, 2))
    x = Gain(name="gain")(keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(
        keras.layers.GlobalAveragePooling2D()(x)))
    model.get_layer("gain").gain.assign(np.linspace(0.5, 2.0, 4).astype("float32"))
    twin = optimize.quantize_aware(model, custom_layers=[Gain])
    gain = next(unwrap(layer) for layer in twin.layers if unwrap(layer).name == "gain")
    assert isinstance(gain, BridgedLayer) and type(gain.source).__name__ == "Gain"
    np.testing.assert_array_equal(gain.variable_pairs[0][1].numpy(),
                                  _np(model.get_layer("gain").gain))
    assert twin(_pixels((2, 8, 8, 2))).shape == (2, 3)


def test_quantize_aware_of_a_custom_layer_without_compute_output_shape():
    """Keras 3 does not require compute_output_shape of a custom layer: the bridge traces
    its call instead (tfmot's wrapper asks for the shape). Its twin computes what the
    twin of the same layer with compute_output_shape computes."""

    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.w

    class ShapedScale(Scale):
        def compute_output_shape(self, shape):
            return shape

    def build(layer_class):
        inputs = keras.Input((8, 8, 2))
        x = layer_class(name="scale")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(
            keras.layers.GlobalAveragePooling2D()(x)))

    model = _randomize(build(Scale))
    shaped = build(ShapedScale)
    shaped.set_weights(model.get_weights())
    images = _pixels((32, 8, 8, 2)) / 255.0
    twin = optimize.quantize_aware(model, custom_layers=[Scale], representative_data=images)
    reference = optimize.quantize_aware(shaped, custom_layers=[ShapedScale],
                                        representative_data=images)
    np.testing.assert_allclose(_np(twin(images)), _np(reference(images)), rtol=0, atol=1e-6)
    assert _rel_error(model(images), twin(images)) < 0.2  # and near the float model


def _separable_after_a_conv(kernel_size):
    """A Conv2D auto-named ``conv2d...`` before a SeparableConv2D: tfmot's split of the
    separable layer names its Conv2D from the same counter."""
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, kernel_size)(inputs)
    x = keras.layers.SeparableConv2D(4, 3, activation="relu", name="sep")(x)
    return _randomize(keras.Model(inputs, keras.layers.Dense(3)(
        keras.layers.GlobalAveragePooling2D()(x))))


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_quantize_aware_of_a_separable_conv_next_to_auto_named_convs(kernel_size):
    """The DepthwiseConv2D and Conv2D tfmot makes of a SeparableConv2D never take the name
    of one of the model's layers (a clash set one layer's weights into the other: a
    wrong model, or a shape error), start at the separable layer's ranges, and give
    their weights back to it (restore_weights)."""
    keras.utils.clear_session()  # auto names from conv2d on, as in a fresh process
    keras.utils.set_random_seed(0)
    model = _separable_after_a_conv(kernel_size)
    images = _pixels((32, 8, 8, 4)) / 255.0
    twin = optimize.quantize_aware(model, representative_data=images)
    names = [unwrap(layer).name for layer in twin.layers]
    assert len(names) == len(set(names)), names
    assert _rel_error(model(images), twin(images)) < 0.2  # a clash: about 1 (wrong kernel)
    copy = _randomize(keras.models.clone_model(model), seed=1)
    optimize.restore_weights(twin, copy)
    for a, b in zip(copy.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_quantize_aware_of_a_conv_read_by_a_batchnorm_and_another_layer():
    """tfmot folds a BatchNormalization into the conv before it only where the conv has no
    other reader; elsewhere the BatchNormalization is quantized on its own."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4))
    conv = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.Concatenate()([keras.layers.ReLU()(keras.layers.BatchNormalization()(
        conv)), conv])
    model = _randomize(keras.Model(inputs, keras.layers.Dense(3)(
        keras.layers.GlobalAveragePooling2D()(x))))
    images = _pixels((32, 8, 8, 4)) / 255.0
    twin = optimize.quantize_aware(model, representative_data=images)
    assert _rel_error(model(images), twin(images)) < 0.2


@pytest.mark.training
def test_weights_trained_under_quantize_aware_go_back_into_the_keras3_model():
    """tfmot's QuantizeWrapper holds a built-in layer's kernel itself (its call puts the
    fake-quantized tensor in ``layer.kernel``): restore_weights must still find it."""
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(x))
    x = KroneckerConv2D(4, 9, factors=[(3, 3, 2, 2), (3, 3, 2, 2)], name="kron")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(
        keras.layers.GlobalAveragePooling2D()(x)))
    qat = optimize.quantize_aware(model)
    optimize.compile_for_finetuning(qat, 1e-2)
    qat.fit(_pixels((16, 8, 8, 2)), np.arange(16) % 3, batch_size=8, epochs=1, verbose=0)
    trained = {unwrap(layer).name: layer for layer in qat.layers}
    optimize.restore_weights(qat, model)
    for name in ("stem", "head"):
        kernel = trained[name]._weight_vars[0][0].numpy()
        assert not np.array_equal(kernel, 0 * kernel)
        np.testing.assert_array_equal(_np(model.get_layer(name).kernel), kernel)
        np.testing.assert_array_equal(_np(model.get_layer(name).bias),
                                      unwrap(trained[name]).bias.numpy())
    np.testing.assert_array_equal(_np(model.get_layer("kron").factor_weights[0]),
                                  unwrap(trained["kron"]).kernel_variables[0].numpy())


@pytest.mark.training
@pytest.mark.parametrize("execution", ["factored", "planned", "materialized", "as_built"])
def test_qat_int8_export_of_a_kronecker_layer_the_int8_planner_lowers_by_channels(
        execution, tmp_path):
    """A fake-quantized Kronecker layer converts to int8 with any execution and computes
    what the QAT model computes, also where the int8 planner runs the layer's factored
    form by the "channels" lowering: its kernel, a concatenation of copies of a factor,
    cannot carry the factor's fake-quantized (weight) range, so QAT layers run "batch"."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 16))
    kron = KroneckerConv2D(16, 9, factors=[(3, 3, 4, 4), (3, 3, 4, 4)], rank=2,
                           padding="same", name="kron")
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(kron(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(
        keras.layers.GlobalAveragePooling2D()(x)))
    _randomize(model)
    assert kron.lowering_for("litert_int8") == "channels"  # the case that failed
    x = np.random.default_rng(1).normal(0, 1, (64, 12, 12, 16)).astype("float32")
    qat = optimize.quantize_aware(model, representative_data=x)
    optimize.compile_for_finetuning(qat, 1e-5)
    tf_keras.utils.set_random_seed(0)
    qat.fit(x, np.arange(64) % 10, batch_size=16, epochs=2, verbose=0)
    exported = to_tflite(qat, tmp_path / "qat.tflite", quantization="int8",
                         representative_data=x, execution=execution)
    assert tflite_quantization(exported) == "int8"
    expected = qat.predict(x, verbose=0)
    got = run_tflite(exported, x)
    # the int8 rounding of what QAT leaves in float (the tensors inside the cascade)
    assert sqnr_db(expected, got) >= 35
    assert np.mean(expected.argmax(-1) == got.argmax(-1)) >= 0.9


def _quantizer_vars(qat, name):
    """``(weight quantizer ranges, output or post-activation range)`` of layer ``name``
    of a QAT twin: ``[(min, max), ...]`` per weight, then ``(min, max)`` or None."""
    wrapper = next(layer for layer in qat.layers if unwrap(layer).name == name)
    weights = [(v["min_var"].numpy(), v["max_var"].numpy())
               for _, _, v in wrapper._weight_vars]
    output = None
    if wrapper._output_quantizers:
        output = wrapper._output_quantizer_vars
    for activation in wrapper._quantize_activations:
        if activation._should_post_quantize():
            output = activation._post_activation_vars
    return weights, None if output is None else (output["min_var"].numpy(),
                                                  output["max_var"].numpy())


def test_quantize_aware_starts_its_ranges_where_the_float_tensors_are():
    """With representative data every range starts at its tensor's: weights symmetric
    (per channel for Conv2D, per tensor for the factors), the input and activations the
    float model's [min, max] with 0 inside (a shared layer's over both its calls); the
    twin then computes what the model computes, to int8 rounding."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(keras.layers.BatchNormalization(name="bn")(x))
    x = KroneckerConv2D(4, 9, factors=[(3, 3, 2, 2), (3, 3, 2, 2)], name="kron")(x)
    shared = keras.layers.Conv2D(4, 1, name="shared")
    x = keras.layers.Add(name="add")([x, shared(shared(x))])  # one layer, two ranges
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = _randomize(keras.Model(inputs, keras.layers.Dense(3, name="head")(x)))
    shared.kernel.assign(3 * np.eye(4, dtype="float32").reshape(1, 1, 4, 4))  # 2nd call wider
    images = _pixels((40, 8, 8, 2))
    qat = optimize.quantize_aware(model, representative_data=images)

    conv_ranges, _ = _quantizer_vars(qat, "conv")
    kernel = _np(model.get_layer("conv").kernel)
    bound = np.abs(kernel).max(axis=(0, 1, 2))  # per output channel
    np.testing.assert_allclose(conv_ranges[0][1], bound, rtol=1e-6)
    np.testing.assert_allclose(conv_ranges[0][0], -bound, rtol=1e-6)
    factor_ranges, kron_output = _quantizer_vars(qat, "kron")
    for (low, high), factor in zip(factor_ranges, model.get_layer("kron").factor_weights):
        bound = np.abs(_np(factor)).max()
        np.testing.assert_allclose([low, high], [-bound, bound], rtol=1e-6)
    for name in ("relu", "kron", "add", "head", "shared"):
        calls = model.get_layer(name)._inbound_nodes
        values = np.concatenate([_np(keras.Model(inputs, node.output_tensors[0])(images)).ravel()
                                 for node in calls])
        _, (low, high) = _quantizer_vars(qat, name)
        np.testing.assert_allclose([low, high], [min(values.min(), 0), max(values.max(), 0)],
                                   rtol=1e-5)
    assert kron_output is not None and kron_output[1] > 6  # beyond tfmot's start (+-6)
    wrapper = next(layer for layer in qat.layers if "QuantizeLayer" in type(layer).__name__)
    np.testing.assert_allclose([wrapper.quantizer_vars["min_var"].numpy(),
                                wrapper.quantizer_vars["max_var"].numpy()],
                               [min(images.min(), 0), images.max()], rtol=1e-6)

    assert sqnr_db(_np(model(images, training=False)), qat(images, training=False)) >= 30
    with pytest.raises(ValueError, match=r"representative_data.*\(8, 8, 2\)"):
        optimize.quantize_aware(model, representative_data=np.zeros((4, 5, 5, 2)))


@pytest.mark.parametrize("narrow_range", [True, False])
def test_symmetric_ranges_follow_tfmots_rule(narrow_range):
    """The range a symmetric quantizer is given is the one tfmot's own op stores for the
    same values (a LastValueQuantizer run once in training mode)."""
    from kronecker_zoo.optimize import _quantizer_range

    values = np.array([-0.3, 0.1, 0.9], "float32")
    quantizer = optimize.tfmot.quantization.keras.quantizers.LastValueQuantizer(
        num_bits=8, per_axis=False, symmetric=True, narrow_range=narrow_range)
    layer = tf_keras.layers.Layer()
    variables = quantizer.build(values.shape, "w", layer)
    quantizer(tf.constant(values), True, weights=variables)
    low, high = _quantizer_range(values.min(), values.max(), quantizer)
    np.testing.assert_allclose([low, high], [variables["min_var"].numpy(),
                                             variables["max_var"].numpy()], rtol=1e-6)
    assert high == pytest.approx(0.9) and low < -0.3


def test_quantize_aware_unsupported_layer():
    inputs = keras.Input((8, 8, 2))
    a = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    out = keras.layers.Multiply(name="gate")([a, inputs])
    with pytest.raises(UnsupportedLayerError, match=r"quantize layer 'gate'.*Multiply"):
        optimize.quantize_aware(keras.Model(inputs, out))
    elu = keras.layers.Conv2D(2, 3, activation="elu", name="elu_conv")(inputs)
    with pytest.raises(UnsupportedLayerError, match=r"layer 'elu_conv'.*not 'elu'"):
        optimize.quantize_aware(keras.Model(inputs, elu))


# -- pruning (structure) ----------------------------------------------------------------


@pytest.mark.training
def test_prune_structure_sparsity_and_restore():
    model = _randomize(models.get("kron_resnet_8", execution="materialized"))
    pruned = optimize.prune(model, 0.5, frequency=1)  # ConstantSparsity from step 0
    names = optimize.pruned_layers(pruned)
    kron_names = [layer.name for layer in model.layers if isinstance(layer, KroneckerConv2D)]
    assert set(kron_names) <= set(names)
    assert "stem_conv" not in names and "predictions" not in names  # first and last
    optimize.compile_for_finetuning(pruned)
    pruned.fit(_pixels((32, 28, 28, 1)), np.arange(32) % 10, batch_size=16, epochs=1,
               verbose=0, callbacks=optimize.pruning_callbacks())
    stripped = optimize.strip_pruning(pruned)
    assert not any(isinstance(layer, tf_keras.layers.Wrapper) for layer in stripped.layers)
    fractions = optimize.sparsity(stripped, names)
    assert fractions["total"] >= 0.49
    assert all(fractions[name] >= 0.49 for name in names)
    assert fractions["stem_conv"] == 0.0
    restored = optimize.restore_weights(stripped, models.get("kron_resnet_8"))
    factors = _np(restored.get_layer(kron_names[0]).factor_weights[0])
    assert np.mean(factors == 0) >= 0.49
    x = _pixels((2, 28, 28, 1))
    assert _rel_error(restored(x, training=False), stripped(x, training=False)) < 1e-5


def test_prune_arguments():
    model = models.get("resnet_8")
    with pytest.raises(ValueError, match="target_sparsity"):
        optimize.prune(model, 1.0)
    with pytest.raises(ValueError, match="end_step"):
        optimize.prune(model, 0.5, begin_step=10, end_step=5)
    with pytest.raises(ValueError, match="nope"):
        optimize.prune(model, 0.5, layers=["nope"])
    with pytest.raises(ValueError, match="stem_bn"):
        optimize.prune(model, 0.5, layers=["stem_bn"])
    with pytest.raises(ValueError, match="initial_sparsity"):
        optimize.prune(model, 0.5, end_step=10, initial_sparsity=0.9)
    assert optimize.pruned_layers(optimize.prune(model, 0.5, layers="stem_conv")) == [
        "stem_conv"]
    with pytest.raises(ValueError, match="strip_pruning takes the tf_keras twin"):
        optimize.strip_pruning(model)
    every = optimize.prune(model, 0.5, keep_first_and_last=False)
    assert {"stem_conv", "predictions"} <= set(optimize.pruned_layers(every))


# -- slow: pretrained classifiers, Fashion-MNIST -------------------------------------------

TRAIN_SEED = 0
TEST_IMAGES = 10000


@pytest.fixture(scope="module")
def fashion():
    """(train images, train labels) shuffled with a fixed seed; the whole test set."""
    x, y = data.fashion_mnist("train")
    order = np.random.default_rng(TRAIN_SEED).permutation(len(x))
    xt, yt = data.fashion_mnist("test")
    return (x[order].astype("float32"), y[order],
            xt[:TEST_IMAGES].astype("float32"), yt[:TEST_IMAGES])


def _keras_accuracy(model, x, y):
    return float(np.mean(np.argmax(_np(model.predict(x, batch_size=500, verbose=0)), -1) == y))


# Test-set accuracy of the published float models, measured once per run (name -> float).
FLOAT_ACCURACY = {}


def _qat_vs_ptq(name, fashion, tmp_path, train_images=4000, learning_rate=1e-5):
    x, y, xt, yt = fashion
    calibration = x[-256:]  # not among the fine-tuning images
    overrides = {"execution": "materialized"} if name.startswith("kron") else {}
    model = models.get(name, weights="fashion_mnist", **overrides)

    # plain post-training int8, as QAT's export gets (tf_keras models get no bias correction)
    ptq = to_tflite(model, tmp_path / "ptq.tflite", quantization="int8",
                    representative_data=calibration, bias_correction=False)
    ptq_report = verify_tflite(model, ptq, xt, yt)  # runs the Keras model on xt too
    float_accuracy, ptq_accuracy = ptq_report.keras_accuracy, ptq_report.tflite_accuracy
    FLOAT_ACCURACY[name] = float_accuracy

    tf_keras.utils.set_random_seed(0)
    qat = optimize.quantize_aware(model, representative_data=calibration)
    optimize.compile_for_finetuning(qat, learning_rate=learning_rate)
    qat.fit(x[:train_images], y[:train_images], batch_size=64, epochs=1, verbose=0)
    exported = to_tflite(qat, tmp_path / "qat.tflite", quantization="int8",
                         representative_data=calibration)
    assert tflite_quantization(exported) == "int8"
    # the int8 file's accuracy alone (no second Keras pass over the test set: the QAT
    # model's own float accuracy is not what is compared)
    qat_accuracy = float(np.mean(run_tflite(exported, xt).argmax(-1) == yt))
    print(f"\n{name}: float Keras {100 * float_accuracy:.2f}%, post-training int8 "
          f"{100 * ptq_accuracy:.2f}%, QAT int8 TFLite {100 * qat_accuracy:.2f}%, "
          f"{exported.size_bytes:,} B, ops {exported.ops}")
    assert qat_accuracy >= float_accuracy - 0.01
    # "Not worse than post-training int8", to within 25 of 10,000 images (0.25 points, the
    # run-to-run spread of either: calibration set, fine-tuning order). Measured (session
    # 32): kron_resnet_8 float 90.57%, PTQ 90.64%, QAT 90.42% (oneDNN) / 90.57% (Eigen);
    # resnet_8 93.34%, 93.36%, 93.34% / 93.38%. A fine-tune at 1e-4 instead of 1e-5 cost
    # QAT about half a point on 4,000 images (earlier weights).
    assert qat_accuracy >= ptq_accuracy - 0.0025
    return float_accuracy, ptq_accuracy, qat_accuracy


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason=(
    "issue 13: since the planner subsamples strided Kronecker layers earlier (a different int8 "
    "arithmetic for the same function), QAT int8 sits 0.1-0.3 points under post-training "
    "int8 (the test allows 0.25): clean-clone CI once 90.36% vs 90.65%. Session 32, ranges "
    "now initialised from the calibration images (quantize_aware(representative_data=)) and "
    "the QAT conversion fixed (the int8 'channels' lowering's concatenated kernel of a "
    "fake-quantized factor; QAT layers run 'batch'): QAT 90.42% vs PTQ 90.64% with oneDNN, "
    "90.57% vs 90.64% with Eigen: within the bound, at its edge with oneDNN."))
def test_qat_int8_kron_resnet_8(fashion, tmp_path):
    start = time.perf_counter()
    _qat_vs_ptq("kron_resnet_8", fashion, tmp_path)
    print(f"  took {time.perf_counter() - start:.0f} s")


@pytest.mark.slow
def test_qat_int8_resnet_8(fashion, tmp_path):
    _qat_vs_ptq("resnet_8", fashion, tmp_path)


def _tflite_weight_zeros(path):
    """Fraction of zeros over the float weight tensors (rank >= 2) stored in the file."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        buf = f.read()
    model = schema.Model.GetRootAs(buf, 0)
    graph = model.Subgraphs(0)
    zeros = total = 0
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        data_ = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if (tensor.Type() != schema.TensorType.FLOAT32 or tensor.ShapeLength() < 2
                or isinstance(data_, int) or not len(data_)):
            continue
        values = np.frombuffer(data_.tobytes(), np.float32)
        zeros += int(np.sum(values == 0))
        total += values.size
    return zeros / total


@pytest.mark.slow
def test_prune_half_kron_resnet_8(fashion, tmp_path):
    start = time.perf_counter()
    x, y, xt, yt = fashion
    n, epochs, batch = 8000, 2, 64
    steps = epochs * (-(-n // batch))
    model = models.get("kron_resnet_8", weights="fashion_mnist", execution="materialized")
    float_accuracy = FLOAT_ACCURACY.get("kron_resnet_8") or _keras_accuracy(model, xt, yt)

    tf_keras.utils.set_random_seed(0)
    # One-shot magnitude pruning to 50% at step 0, then every step recovers with a
    # cosine-decayed learning rate. Measured on 8,000 images x 2 epochs (float 90.57%,
    # 2 CPU cores): this 88.89% (88.79% from 5e-4); a ramp to 50% over the first 30% of
    # the steps at a constant 5e-4 (the earlier recipe) 88.56%, with cosine decay 88.63%
    # (1e-3: 88.59%, 2e-3: 88.34%); a ramp over half of the steps 88.12% (1e-3) and
    # 87.85% (2e-4). The sooner the target sparsity, the longer the recovery.
    pruned = optimize.prune(model, 0.5, begin_step=0, frequency=steps // 20)
    optimize.compile_for_finetuning(
        pruned, learning_rate=tf_keras.optimizers.schedules.CosineDecay(1e-3, steps))
    pruned.fit(x[:n], y[:n], batch_size=batch, epochs=epochs, verbose=0,
               callbacks=optimize.pruning_callbacks())
    stripped = optimize.strip_pruning(pruned)
    names = optimize.pruned_layers(pruned)
    fractions = optimize.sparsity(stripped, names)
    every_kernel = optimize.sparsity(stripped)["total"]
    assert fractions["total"] >= 0.49

    # the pruned weights back in the Keras 3 model compute what the stripped twin does
    # (on real images here), so the twin's test-set accuracy (verify_tflite's Keras side)
    # is the Keras 3 model's: one pass over the test set instead of two
    sparse = optimize.restore_weights(stripped, models.get("kron_resnet_8"))
    assert _rel_error(sparse(xt[:64], training=False), stripped(xt[:64], training=False)) < 1e-5
    exported = to_tflite(stripped, tmp_path / "pruned.tflite")
    report = verify_tflite(stripped, exported, xt, yt)
    pruned_accuracy = report.keras_accuracy
    file_zeros = _tflite_weight_zeros(exported)
    print(f"\nkron_resnet_8 pruned: {100 * fractions['total']:.1f}% zeros in the pruned "
          f"kernels ({len(names)} layers), {100 * every_kernel:.1f}% over every kernel, "
          f"{100 * file_zeros:.1f}% of the .tflite float weights; accuracy float "
          f"{100 * float_accuracy:.2f}% -> pruned {100 * pruned_accuracy:.2f}% (Keras 3), "
          f"{100 * report.tflite_accuracy:.2f}% (TFLite); took "
          f"{time.perf_counter() - start:.0f} s")
    assert pruned_accuracy >= float_accuracy - 0.02
    assert report.passed and abs(report.tflite_accuracy - pruned_accuracy) <= 0.001
    assert file_zeros >= every_kernel - 0.01  # the file keeps the zeros


def test_qat_ranges_read_every_image_and_a_twin_keeps_the_pixel_range_check():
    """initialize_ranges runs on every image given (the bright ones here come after
    to_tflite's 1,024-image calibration limit), and the twin of a user model that
    rescales 8-bit pixels first still refuses [0, 1]-scaled images."""
    from kronecker_zoo.models.pixel_range import model_input_range

    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Rescaling(1 / 255.0, name="r")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(keras.layers.Flatten()(x)))
    images = np.zeros((2000, 4, 4, 1), "float32")
    images[1500:] = 255.0
    qat = optimize.quantize_aware(model, representative_data=images)
    ranges = {v.name: float(v.numpy()) for layer in qat.layers
              if "quantize_layer" in layer.name for v in layer.weights}
    assert max(ranges.values()) == 255.0, ranges
    assert model_input_range(model) == model_input_range(qat) == (0.0, 255.0)


def _conv_zoo_head(zoo_layer, dtype=None, frozen=False):
    inputs = keras.Input((10, 10, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv", dtype=dtype)(inputs)
    zoo = zoo_layer(dtype)
    zoo.trainable = not frozen
    x = keras.layers.GlobalAveragePooling2D(dtype=dtype)(zoo(x))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits", dtype="float32")(x))


def _kron(dtype):
    return KroneckerConv2D(4, 3, factors=[(3, 1, 2, 2), (1, 3, 2, 2)], name="zoo", dtype=dtype)


def test_a_mixed_float16_zoo_layer_bridges_and_qat_names_the_policy():
    """Under mixed_float16 (float32 variables, float16 compute) the twin runs the zoo
    layer's own __call__, which autocasts its variables; QAT, float32 only in tfmot,
    refuses with the layer and policy named."""
    model = _randomize(_conv_zoo_head(_kron, dtype="mixed_float16"))
    x = np.random.default_rng(0).normal(size=(2, 10, 10, 4)).astype("float32")
    twin = to_tf_keras(model)
    assert _rel_error(twin(x, training=False), model(x, training=False)) < 1e-2  # float16
    optimize.prune(model, 0.5)
    with pytest.raises(UnsupportedLayerError, match="'conv' computes in float16 .*float32"):
        optimize.quantize_aware(model)


@pytest.mark.training
def test_a_frozen_zoo_layer_is_quantized_and_pruned_like_a_frozen_conv():
    """tfmot fake-quantizes and prunes a frozen Conv2D's kernel; a frozen zoo layer's
    factors likewise, and the user's trainable flags stay as they were."""
    model = _randomize(_conv_zoo_head(_kron, frozen=True))
    model.get_layer("conv").trainable = False
    flags = [(w.path, w.trainable) for w in model.weights]
    qat = optimize.quantize_aware(model)
    weights, _ = _quantizer_vars(qat, "zoo")
    assert len(weights) == 2 == len(_quantizer_vars(qat, "conv")[0]) + 1  # two factors
    pruned = optimize.prune(model, 0.5, frequency=1, keep_first_and_last=False)
    assert {"conv", "zoo"} <= set(optimize.pruned_layers(pruned))
    assert [(w.path, w.trainable) for w in model.weights] == flags
    assert not model.get_layer("zoo").trainable and not model.get_layer("conv").trainable


@pytest.mark.training
def test_quantize_aware_reads_an_endless_dataset_up_to_its_cap():
    model = _randomize(_conv_zoo_head(_kron))
    images = _pixels((8, 10, 10, 4)) / 255.0
    endless = tf.data.Dataset.from_tensor_slices(images).batch(4).repeat()
    with pytest.warns(UserWarning, match="first 16 examples"):
        qat = optimize.quantize_aware(model, representative_data=endless,
                                      max_calibration_examples=16)
    with pytest.warns(UserWarning, match="first 1,024 examples"):  # to_tflite's default
        optimize.quantize_aware(model, representative_data=endless)
    bounded = optimize.quantize_aware(model, representative_data=images)
    ranges, expected = _quantizer_vars(qat, "zoo")[1], _quantizer_vars(bounded, "zoo")[1]
    assert ranges is not None and expected is not None  # the zoo layer's output range
    for a, b in zip(ranges, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6)
