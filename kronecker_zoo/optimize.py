"""Quantization-aware training and magnitude pruning of zoo models with tfmot.

TensorFlow Model Optimization (tfmot) works on tf_keras (Keras 2) models only.
These functions take a Keras 3 zoo model (Kronecker layers included), build its
tf_keras twin with `kronecker_zoo.tf_keras_bridge.to_tf_keras` (same graph,
names and weights; the zoo layers run their own Keras 3 ``call`` there, so the
layers' math is not duplicated) and apply tfmot to the twin:

    from kronecker_zoo import models, optimize
    from kronecker_zoo.export import to_tflite

    model = models.get("kron_resnet_8", weights="fashion_mnist")

    # Quantization-aware training -> full-integer int8 TFLite
    qat = optimize.quantize_aware(model, representative_data=x[:256])  # ranges start there
    optimize.compile_for_finetuning(qat, learning_rate=1e-4)   # or qat.compile(...)
    qat.fit(x, y, epochs=1)
    to_tflite(qat, "kron_int8.tflite", quantization="int8", representative_data=x[:256])
    qat.save("kron_qat.h5")            # to go on later (not ".keras": see below)
    with optimize.quantize_scope():
        qat = tf_keras.models.load_model("kron_qat.h5")

    # Magnitude pruning to 50% -> sparse kernels, back into the Keras 3 model. Pruned
    # at once (no ramp), every step recovers; the learning rate decays to 0.
    steps = 2 * (len(x) // 32)
    pruned = optimize.prune(model, 0.5, begin_step=0, frequency=steps // 20)
    optimize.compile_for_finetuning(
        pruned, learning_rate=tf_keras.optimizers.schedules.CosineDecay(1e-3, steps))
    pruned.fit(x, y, epochs=2, callbacks=optimize.pruning_callbacks())
    stripped = optimize.strip_pruning(pruned)     # plain tf_keras model, sparse kernels
    optimize.sparsity(stripped, optimize.pruned_layers(pruned))   # {"total": 0.5, ...}
    optimize.restore_weights(stripped, model)     # the sparse weights, in Keras 3
    to_tflite(stripped, "kron_sparse.tflite")

Quantization: every zoo layer's kernels and Kronecker factors are fake-quantized
to 8 bits (symmetric, per tensor) and its output to 8 bits (asymmetric,
moving-average range) by `BridgedQuantizeConfig`; built-in layers get tfmot's
default 8-bit scheme (per-channel Conv2D kernels; no fake-quant inside
Conv-BN-ReLU and Add-ReLU). A BatchNormalization after a zoo layer cannot be
folded into it (TFLite keeps it as MUL + ADD), so it quantizes its own output
and the zoo layer's output is left to it. Ranges start at the weights' own and, given
representative images, at the float model's tensors' (`initialize_ranges`). A fake-quantized
Kronecker layer exports with its "batch" lowering. The tensors inside a factored
convolution have no fake-quant op; the int8 export's calibration data give
them ranges, and the file is then int8 from its QUANTIZE to its DEQUANTIZE.

Saving a QAT model: ``.h5`` or a SavedModel directory, loaded under `quantize_scope()`
(it knows the bridged zoo layers and their quantize config). tf_keras' ``.keras`` format
saves but cannot load tfmot's QuantizeLayer ("expected 5 variables, but received 3";
tensorflow/model-optimization#1123); `restore_weights` takes the trained float weights back
into the Keras 3 model, which saves as ``.keras``.

Pruning: the kernels of Conv2D, Dense, SeparableConv2D (pointwise) and every
zoo layer's kernels and factors, by magnitude, except (by default) the first
and last weighted layers (the stem convolution on the raw pixels and the
classifier), which are tiny and the most sensitive.

Requires the TensorFlow backend (``KERAS_BACKEND=tensorflow``); under another,
`quantize_aware` and `prune` raise a ValueError saying so.

Training speed: a `KroneckerConv2D`'s ``execution`` only changes how the same
factors run; on CPU, fine-tune a model built with ``execution="materialized"``
(about twice as fast on 28x28 inputs): the export traces it factored anyway.
"""

import functools
import os
import re

import numpy as np

from kronecker_zoo import graph, runtime
from kronecker_zoo.export.calibration import MAX_CALIBRATION_EXAMPLES

runtime.require_extra("optimize", "kronecker_zoo.optimize (tfmot QAT and pruning)")

import keras  # noqa: E402
import tf_keras  # noqa: E402



def _import_tfmot():
    """``(tfmot, default_8bit_quantize_configs, default_8bit_quantize_registry,
    PruneLowMagnitude)``, imported without changing the process.

    tfmot's import sets ``TF_USE_LEGACY_KERAS=1`` in ``os.environ`` and then reads
    ``tf.keras``, whose lazy loader would bind it to tf_keras for the rest of the process
    (measured: after a bare ``import tensorflow_model_optimization``, ``tf.keras`` is
    tf_keras). So ``tf.keras`` is resolved first, under the user's setting, and the
    variable is put back as it was, also when the import fails.
    """
    import tensorflow as tf

    getattr(tf.keras, "__name__", None)  # resolve the lazy tf.keras before tfmot does
    saved = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot_module
        from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
            default_8bit_quantize_configs as configs,
            default_8bit_quantize_registry as registry,
        )
        from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
            PruneLowMagnitude as prune_wrapper,
        )
    finally:
        if saved is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = saved
    return tfmot_module, configs, registry, prune_wrapper


(tfmot, default_8bit_quantize_configs, default_8bit_quantize_registry,
 PruneLowMagnitude) = _import_tfmot()

from kronecker_zoo.tf_keras_bridge import (  # noqa: E402
    BridgedLayer,
    UnsupportedLayerError,
    check_tensorflow_backend,
    copy_weights,
    layer_weights,
    to_tf_keras,
    unwrap,
)

__all__ = [
    "BridgedQuantizeConfig",
    "compile_for_finetuning",
    "initialize_ranges",
    "prunable_weights",
    "prune",
    "pruned_layers",
    "pruning_callbacks",
    "quantize_aware",
    "quantize_scope",
    "restore_weights",
    "sparsity",
    "strip_pruning",
]

_quantizers = tfmot.quantization.keras.quantizers
# Conv-like layers tfmot's default scheme folds a following BatchNormalization into.
_TFMOT_BN_FOLDED_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")


# -- quantization ----------------------------------------------------------------------


@tf_keras.saving.register_keras_serializable(package="kronecker_zoo")
class BridgedQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """tfmot QuantizeConfig of a `BridgedLayer` (any zoo layer).

    Weights: every kernel / Kronecker factor (``layer.kernel_variables``) gets an
    8-bit symmetric, narrow-range, per-tensor ``LastValueQuantizer``; the
    fake-quantized tensors replace the variables in the layer's call. (Per-axis
    ranges are not offered: tfmot's per-channel op takes 2-D and 4-D weights
    only, and the TFLite converter rejects per-axis ranges carried through the
    reshapes of 3-D / 5-D factors.) Output: an 8-bit asymmetric
    ``MovingAverageQuantizer`` when ``quantize_output``.

    Args:
        quantize_output: bool. Fake-quantize the layer's output. Defaults to `True`.
    """

    def __init__(self, quantize_output=True):
        self.quantize_output = bool(quantize_output)

    def get_weights_and_quantizers(self, layer):
        return [
            (variable, _quantizers.LastValueQuantizer(
                num_bits=8, per_axis=False, symmetric=True, narrow_range=True))
            for variable in layer.kernel_variables
        ]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.set_weight_overrides(quantize_weights)

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        if not self.quantize_output:
            return []
        return [_quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {"quantize_output": self.quantize_output}


def quantize_scope():
    """Context in which tf_keras can deserialize quantization-aware zoo models.

    Use it around ``tf_keras.models.load_model`` / ``clone_model`` of a model from
    `quantize_aware` saved as ``.h5`` or a SavedModel (tf_keras' ``.keras`` format does not
    reload tfmot's QuantizeLayer: tensorflow/model-optimization#1123).
    """
    return tfmot.quantization.keras.quantize_scope({
        "BridgedLayer": BridgedLayer,
        "BridgedQuantizeConfig": BridgedQuantizeConfig,
    })


def _producers(layer):
    return [inbound for call in graph.inbound_layers(layer) for inbound in call]


def _class_name(layer):
    return type(layer).__name__


# The activations tfmot's default 8-bit scheme quantizes (before or after them).
_TFMOT_ACTIVATIONS = frozenset({"linear", "relu", "swish", "gelu", "softmax", "sigmoid",
                                "tanh"})


def _quantize_annotation(layer, consumers, registry):
    """The ``quantize_annotate_layer`` of one twin layer (see module docstring)."""
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    name = _class_name(layer)
    after = consumers.get(layer.name, [])
    only_bn_after = len(after) == 1 and _class_name(after[0]) == "BatchNormalization"
    if isinstance(layer, tf_keras.layers.InputLayer):
        return layer
    if isinstance(layer, BridgedLayer):
        # A zoo layer without weights (CropToMatch) only moves values: no new range.
        quantize_output = bool(layer.kernel_variables) and not only_bn_after
        return annotate(layer, BridgedQuantizeConfig(quantize_output))
    if name == "BatchNormalization":
        producers = _producers(layer)
        if (len(producers) == 1 and _class_name(producers[0]) in _TFMOT_BN_FOLDED_INTO
                and producers[0].get_config().get("activation") == "linear"
                and len(consumers.get(producers[0].name, [])) == 1):
            return annotate(layer)  # tfmot's Conv-BN(-ReLU) transforms handle it
        # (they match a convolution read by the BatchNormalization alone)
        return annotate(layer, default_8bit_quantize_configs.Default8BitOutputQuantizeConfig())
    if name == "Rescaling":
        return annotate(layer, default_8bit_quantize_configs.Default8BitOutputQuantizeConfig())
    if name == "SeparableConv2D" or registry.supports(layer):
        activation = layer.get_config().get("activation")
        activation = activation.get("config", {}).get("name", activation) if isinstance(
            activation, dict) else activation
        if activation is not None and activation not in _TFMOT_ACTIVATIONS:
            raise UnsupportedLayerError(
                f"Cannot quantize layer {layer.name!r} ({name}): tfmot's default 8-bit "
                f"scheme supports the activations {sorted(_TFMOT_ACTIVATIONS)}, not "
                f"{activation!r}. Use one of those, or a separate activation layer.")
        return annotate(layer)
    raise UnsupportedLayerError(
        f"Cannot quantize layer {layer.name!r} ({type(layer).__module__}.{name}): tfmot's "
        "default 8-bit scheme does not support it and kronecker_zoo has no config for it.")


def _skip_taken_auto_names(model):
    """Advance tf_keras' automatic layer names past the names ``model`` uses.

    tfmot splits each SeparableConv2D into a new DepthwiseConv2D and Conv2D named by
    tf_keras' counters (``conv2d``, ``conv2d_1``, ...), which know nothing of the names
    the twin took from the Keras 3 model: a clash makes ``quantize_apply`` set one
    layer's weights into the other (a wrong model, or a shape error). Creating throwaway
    layers until each counter is past every taken ``<prefix>_<n>`` fixes that."""
    if not any(_class_name(getattr(layer, "layer", layer)) == "SeparableConv2D"
               for layer in model.layers):  # (annotated: the wrapped layer)
        return
    taken = {name for layer in model.layers  # annotated: the wrapped layer's name too
             for name in (layer.name, getattr(getattr(layer, "layer", None), "name", ""))}
    for prefix, make in (("depthwise_conv2d", lambda: tf_keras.layers.DepthwiseConv2D(1)),
                         ("conv2d", lambda: tf_keras.layers.Conv2D(1, 1))):
        pattern = re.compile(rf"^{prefix}(?:_(\d+))?$")
        used = [int(m.group(1) or 0) for m in map(pattern.match, taken) if m]
        while used:
            match = pattern.match(make().name)
            if match is None or int(match.group(1) or 0) >= max(used):
                break


def quantize_aware(model, custom_layers=(), representative_data=None,
                   max_calibration_examples=None):
    """A tf_keras quantization-aware-training twin of a Keras 3 zoo model.

    Args:
        model: a functional Keras 3 model (e.g. `kronecker_zoo.models.get`); its
            weights are carried over exactly.
        custom_layers: extra Keras 3 layer classes to bridge (see `to_tf_keras`).
        representative_data: images in any form `to_tflite` takes (e.g. 256 training
            images), or `None`. Every weight's range starts at the weight's own (as
            tfmot's first training step would set it); with data, the input's and every
            activation's range start at what ``model`` computes on them
            (`initialize_ranges`), so the twin starts where post-training int8 is.
            Without, tfmot's starts stand until training moves them: the input's range
            is [0, 0] (the untrained twin's output is constant) and grows to the data's
            in the first step; the activations' start at +-6 and move 0.1% a step, so a
            short fine-tune of a model whose logits reach 20 keeps them clipped.
        max_calibration_examples: the ranges come from the first this many images;
            `None` (default): all of them, and of an endless (repeated) `tf.data`
            dataset the first `MAX_CALIBRATION_EXAMPLES`, as `to_tflite` reads it (an
            endless Python generator needs a number).

    Returns:
        An uncompiled `tf_keras.Model` with fake-quantization (``QuantizeWrapperV2``
        layers; built-in convolutions get tfmot's per-channel weight ranges, zoo
        layers per-tensor ones). Train it with ``fit`` (see `compile_for_finetuning`), then
        convert it with ``kronecker_zoo.export.to_tflite(qat_model, path,
        quantization="int8", representative_data=...)``: the representative data
        give ranges to the tensors inside the factored convolutions, which the
        fake-quant ops do not cover, so every op runs in int8.

    Raises:
        UnsupportedLayerError: naming a layer that cannot be converted or quantized
            (or that computes in another dtype than float32, e.g. mixed_float16).
        ValueError: Keras does not run on the TensorFlow backend (set
            ``KERAS_BACKEND=tensorflow``).
    """
    check_tensorflow_backend("quantize_aware")
    low = next((layer for layer in graph.all_sublayers(model)
                if getattr(layer, "compute_dtype", "float32") not in ("float32", None)), None)
    if low is not None:
        raise UnsupportedLayerError(
            f"quantize_aware: layer {low.name!r} computes in {low.compute_dtype} (dtype "
            f"policy {low.dtype_policy.name!r}); tfmot's fake quantization runs in float32 "
            "only. Build the model for QAT under the float32 policy and copy the weights in "
            "(keras.config.set_dtype_policy('float32'), then model.set_weights(...)).")
    twin = to_tf_keras(model, custom_layers=custom_layers)
    consumers = graph.consumers(twin)
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()

    def annotate(layer):
        return _quantize_annotation(layer, consumers, registry)

    # quantize_apply clones through configs: each BridgedLayer rebuilds its Keras 3 layer,
    # which for the user's custom layers needs their classes
    custom = keras.saving.custom_object_scope({c.__name__: c for c in custom_layers})
    with quantize_scope(), custom:
        annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
        _skip_taken_auto_names(annotated)
        qat = tfmot.quantization.keras.quantize_apply(annotated)
    initialize_ranges(qat, model, representative_data,
                      max_calibration_examples=max_calibration_examples)
    return qat


def _is_endless(data):
    """Whether ``data`` is a `tf.data` dataset that never ends (e.g. ``.repeat()``)."""
    import tensorflow as tf

    return (isinstance(data, tf.data.Dataset)
            and int(data.cardinality()) == int(tf.data.INFINITE_CARDINALITY))


def _quantizer_range(low, high, quantizer):
    """tfmot's stored range for values spanning ``[low, high]`` (arrays: per channel):
    zero inside it; symmetric quantizers balanced around zero as tfmot's ops do it."""
    if not getattr(quantizer, "symmetric", False):
        return np.minimum(low, 0.0), np.maximum(high, 0.0)
    ratio = -1.0 if quantizer.narrow_range else -((1 << quantizer.num_bits) - 2) / (
        1 << quantizer.num_bits)
    return np.minimum(low, high / ratio), np.maximum(high, low * ratio)


def _assign_range(variables, low, high, quantizer):
    low, high = _quantizer_range(np.asarray(low), np.asarray(high), quantizer)
    for key, value in (("min_var", low), ("max_var", high)):
        shape = tuple(variables[key].shape)  # a per-channel range: the same for each
        variables[key].assign(np.broadcast_to(value, shape).astype("float32"))


def initialize_ranges(qat_model, model, representative_data=None, batch_size=64,
                      max_calibration_examples=None):
    """Starts a fresh `quantize_aware` twin's quantization ranges where its tensors are
    (on a trained twin it replaces the learnt ranges).

    Weights (every fake-quantized kernel and factor): their own range, set by running
    each weight's quantizer once in training mode on it (tfmot's own rule, per channel
    where it is per channel). With ``representative_data``: the input's range and every
    layer's output (and post-activation) range, from the float ``model`` run on every
    one of those images (up to ``max_calibration_examples``; all calls of a shared
    layer), the ranges a post-training calibration would find (zero inside; a layer is
    matched by name). Kept at tfmot's start: the pre-activation ranges of softmax,
    sigmoid, tanh and gelu layers, which ``model`` does not expose. The DepthwiseConv2D
    and Conv2D tfmot makes of a SeparableConv2D take the ranges of its depthwise step and
    of its output.

    Args:
        qat_model: the tf_keras twin `quantize_aware` built from ``model``.
        model: the Keras 3 model it was built from (not changed).
        representative_data: images in any form `kronecker_zoo.export.to_tflite`
            takes, or `None` (weights only).
        batch_size: images per forward pass of ``model``.
        max_calibration_examples: how many of the images to read (with a warning
            when some were left); `None` reads them all, and of an endless `tf.data`
            dataset the first `MAX_CALIBRATION_EXAMPLES`.

    Returns:
        ``qat_model``.

    Raises:
        ValueError: ``model`` has more than one input, or the images do not fit it.
    """
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (
        QuantizeLayer,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import (
        QuantizeWrapper,
    )

    wrappers = [layer for layer in qat_model.layers if isinstance(layer, QuantizeWrapper)]
    for wrapper in wrappers:
        for weight, quantizer, variables in wrapper._weight_vars:
            if _has_range(variables):
                quantizer(weight, True, weights=variables)  # assigns the weight's range
    if representative_data is None:
        return qat_model
    if len(model.inputs) != 1:
        raise ValueError("initialize_ranges takes representative images for a model with one "
                         f"input; {model.name!r} has {len(model.inputs)}.")
    from kronecker_zoo.export import representative_batches

    targets = {}  # layer name -> [(range variables, quantizer), ...]
    for wrapper in wrappers:
        found = [(wrapper._output_quantizer_vars, wrapper._output_quantizers[0])
                 ] if wrapper._output_quantizers else []
        found += [(activation._post_activation_vars, activation.quantizer)
                  for activation in wrapper._quantize_activations
                  if activation._should_post_quantize()]
        found = [(v, q) for v, q in found if _has_range(v)]
        if found:
            targets[wrapper.layer.name] = found
    # every call of a layer (a shared layer quantizes them all with one range):
    # (QAT layer name, tensor of ``model``, what to compute from it or None)
    layer_calls = graph.layer_calls(model)
    calls = [(call.layer.name, output, None) for call in layer_calls
             if call.layer.name in targets for output in call.outputs]
    for name, (separable, part) in _separable_parts(qat_model, layer_calls).items():
        if name in targets:
            calls += [(name, output, None) for call in layer_calls if call.layer is separable
                      for output in call.outputs] if part == "pointwise" else [
                (name, call.inputs[0], functools.partial(_depthwise_part, separable))
                for call in layer_calls if call.layer is separable]
    if max_calibration_examples is None and _is_endless(representative_data):
        max_calibration_examples = MAX_CALIBRATION_EXAMPLES
    images = np.concatenate(list(representative_batches(
        representative_data, (1,) + tuple(model.input_shape[1:]), max_calibration_examples)))
    low, high = {}, {}
    probe = keras.Model(model.inputs[0], [t for _, t, _ in calls]) if calls else None
    for start in range(0, len(images) if calls else 0, batch_size):
        outputs = probe(images[start:start + batch_size], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for (name, _, compute), values in zip(calls, outputs):
            values = keras.ops.convert_to_numpy(values if compute is None else compute(values))
            low[name] = min(low.get(name, np.inf), float(values.min()))
            high[name] = max(high.get(name, -np.inf), float(values.max()))
    for layer in qat_model.layers:
        if isinstance(layer, QuantizeLayer) and _has_range(getattr(layer, "quantizer_vars", None)):
            _assign_range(layer.quantizer_vars, float(images.min()), float(images.max()),
                          layer.quantizer)
    for name, found in targets.items():
        if name in low:
            for variables, quantizer in found:
                _assign_range(variables, low[name], high[name], quantizer)
    return qat_model


def _separable_parts(qat_model, layer_calls):
    """``{QAT layer name: (SeparableConv2D of the Keras 3 model, "depthwise" |
    "pointwise")}`` for the DepthwiseConv2D and Conv2D tfmot made of each one (names of
    their own, in the separable layers' order; matched by kernel shapes)."""
    separables = list(dict.fromkeys(call.layer for call in layer_calls
                                    if type(call.layer) is keras.layers.SeparableConv2D))
    if not separables:
        return {}
    known = {call.layer.name for call in layer_calls}
    new = [getattr(layer, "layer", layer) for layer in qat_model.layers
           if getattr(layer, "layer", layer).name not in known]
    parts = {}
    for part, kind, kernel in (("depthwise", "DepthwiseConv2D", "depthwise_kernel"),
                               ("pointwise", "Conv2D", "pointwise_kernel")):
        made = [layer for layer in new if _class_name(layer) == kind]
        for separable in separables:
            shape = tuple(getattr(separable, kernel).shape)
            match = next((layer for layer in made if tuple(
                (layer.depthwise_kernel if kind == "DepthwiseConv2D" else layer.kernel).shape)
                == shape), None)
            if match is not None:
                made.remove(match)
                parts[match.name] = (separable, part)
    return parts


def _depthwise_part(separable, inputs):
    """The depthwise step of a Keras 3 SeparableConv2D on its ``inputs``."""
    return keras.ops.depthwise_conv(inputs, separable.depthwise_kernel, separable.strides,
                                    separable.padding, separable.data_format,
                                    separable.dilation_rate)


def _has_range(variables):
    """Whether a quantizer's variables hold a trainable range (FixedQuantizer's do not)."""
    return isinstance(variables, dict) and "min_var" in variables and "max_var" in variables


# -- pruning ---------------------------------------------------------------------------


def prunable_weights(layer):
    """The weights magnitude pruning acts on in one tf_keras layer (maybe wrapped)."""
    layer = unwrap(layer)
    if isinstance(layer, BridgedLayer):
        return layer.get_prunable_weights()
    name = _class_name(layer)
    if name in ("Conv2D", "Dense"):
        return [layer.kernel]
    if name == "SeparableConv2D":
        return [layer.pointwise_kernel]
    return []


def _first_and_last(model):
    """Names of the weighted layers with no weighted layer before, or after, them."""
    consumers = graph.consumers(model)
    memo_before, memo_after = {}, {}

    def weighted_before(layer):
        if layer.name not in memo_before:
            memo_before[layer.name] = any(
                bool(prunable_weights(p)) or weighted_before(p) for p in _producers(layer))
        return memo_before[layer.name]

    def weighted_after(layer):
        if layer.name not in memo_after:
            memo_after[layer.name] = any(
                bool(prunable_weights(c)) or weighted_after(c)
                for c in consumers.get(layer.name, []))
        return memo_after[layer.name]

    return {layer.name for layer in model.layers if prunable_weights(layer)
            and not (weighted_before(layer) and weighted_after(layer))}


def prune(model, target_sparsity, begin_step=0, end_step=None, initial_sparsity=0.0,
          frequency=100, layers=None, keep_first_and_last=True, custom_layers=()):
    """A tf_keras magnitude-pruning twin of a Keras 3 zoo model.

    Layers with prunable kernels (Conv2D, Dense, SeparableConv2D's pointwise
    kernel, every zoo layer's kernels and Kronecker factors) are wrapped in
    tfmot's ``PruneLowMagnitude`` (a zoo layer's `BridgedLayer` implements
    tfmot's ``PrunableLayer``: ``get_prunable_weights``); other layers stay as
    they are.

    Args:
        model: a functional Keras 3 model; its weights are carried over exactly.
        target_sparsity: float in [0, 1). Final fraction of zeros in each pruned
            kernel.
        begin_step: int. Optimizer step at which pruning starts. Defaults to `0`.
        end_step: int or `None`. With an int, the sparsity ramps from
            ``initial_sparsity`` to ``target_sparsity`` between ``begin_step`` and
            ``end_step`` (``PolynomialDecay``, power 3); with `None`, the target
            applies from ``begin_step`` on (``ConstantSparsity``).
        initial_sparsity: float. Start of the ramp. Defaults to `0.0`.
        frequency: int. The masks are updated every ``frequency`` steps, at steps
            ``begin_step, begin_step + frequency, ...`` counted from 1 (the schedule
            only acts on those steps; with ``begin_step=0`` the first update is at
            step ``frequency``, so a fine-tune shorter than that prunes nothing).
            Defaults to `100` (tfmot's); use a fraction of the ramp's length for
            short fine-tunings.
        layers: `None`, or the names of the layers to prune (a str: one name).
        keep_first_and_last: with ``layers=None``, leave the first and last
            weighted layers (those with no weighted layer before / after them:
            the stem convolution and the classifier) dense. Defaults to `True`.
        custom_layers: extra Keras 3 layer classes to bridge (see `to_tf_keras`).

    Returns:
        An uncompiled `tf_keras.Model`. Train it with ``fit(...,
        callbacks=pruning_callbacks())``, then `strip_pruning` it (to export it,
        or to `restore_weights` into the Keras 3 model).

    Raises:
        ValueError: bad arguments, or Keras does not run on the TensorFlow backend
            (set ``KERAS_BACKEND=tensorflow``).
    """
    check_tensorflow_backend("prune")
    target_sparsity = float(target_sparsity)
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"`target_sparsity` must be in [0, 1). Received: {target_sparsity!r}")
    api = tfmot.sparsity.keras
    if end_step is None:
        schedule = api.ConstantSparsity(target_sparsity, begin_step, frequency=frequency)
    else:
        if end_step <= begin_step:
            raise ValueError(f"`end_step` ({end_step}) must be after `begin_step` "
                             f"({begin_step}).")
        if not 0.0 <= initial_sparsity <= target_sparsity:
            raise ValueError(f"`initial_sparsity` must be in [0, target_sparsity="
                             f"{target_sparsity}]: the ramp prunes more, never less. "
                             f"Received: {initial_sparsity!r}")
        schedule = api.PolynomialDecay(initial_sparsity, target_sparsity, begin_step,
                                       end_step, frequency=frequency)
    twin = to_tf_keras(model, custom_layers=custom_layers)
    if layers is None:
        skip = _first_and_last(twin) if keep_first_and_last else set()
        selected = {layer.name for layer in twin.layers
                    if prunable_weights(layer) and layer.name not in skip}
    else:
        selected = {layers} if isinstance(layers, str) else set(layers)
        by_name = {layer.name: layer for layer in twin.layers}
        unknown = sorted(selected - set(by_name))
        if unknown:
            raise ValueError(f"No layer(s) {unknown} in model {model.name!r}")
        weightless = sorted(n for n in selected if not prunable_weights(by_name[n]))
        if weightless:
            raise ValueError(f"Layer(s) {weightless} have no prunable kernels.")

    def wrap(layer):
        if layer.name not in selected:
            return layer
        return api.prune_low_magnitude(layer, pruning_schedule=schedule)

    return tf_keras.models.clone_model(twin, clone_function=wrap)


def pruned_layers(model):
    """Names of the layers of a model from `prune` that are being pruned."""
    return [layer.layer.name for layer in model.layers
            if isinstance(layer, PruneLowMagnitude)]


def pruning_callbacks(log_dir=None):
    """The callbacks ``fit`` needs for a model from `prune`.

    ``UpdatePruningStep`` (required: it advances the pruning step that drives the
    schedule and the mask updates), plus ``PruningSummaries`` (sparsity and
    thresholds to TensorBoard) when ``log_dir`` is given.
    """
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    if log_dir is not None:
        callbacks.append(tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir))
    return callbacks


def strip_pruning(model):
    """The plain tf_keras model of a pruned one: wrappers removed, kernels sparse."""
    if not isinstance(model, tf_keras.Model):
        raise ValueError(f"strip_pruning takes the tf_keras twin that `prune` returned (after "
                         f"training it). Received: {type(model).__module__}."
                         f"{type(model).__name__}")
    return tfmot.sparsity.keras.strip_pruning(model)


def sparsity(model, layers=None):
    """Fraction of exact zeros in the prunable kernels, per layer and in total.

    Args:
        model: a tf_keras model from `prune` (wrapped) or `strip_pruning`, or a
            twin from `to_tf_keras`.
        layers: names of the layers the ``"total"`` is over (e.g.
            `pruned_layers(pruned)`); `None`: every layer with prunable kernels.

    Returns:
        ``{"total": fraction, layer_name: fraction, ...}``, a per-layer entry for
        every layer with prunable kernels.
    """
    result = {}
    zeros = total = 0
    for layer in model.layers:
        weights = prunable_weights(layer)
        if not weights:
            continue
        name = unwrap(layer).name
        values = [np.asarray(w.numpy()) for w in weights]
        z = sum(int(np.sum(v == 0)) for v in values)
        n = sum(v.size for v in values)
        result[name] = z / n
        if layers is None or name in layers:
            zeros += z
            total += n
    result["total"] = zeros / total if total else 0.0
    return result


def restore_weights(tf_keras_model, model):
    """Copies a twin's trained weights (pruned, stripped or QAT) into the Keras 3 ``model``.

    Layer by layer, by name. Only the layers' own weights travel (not pruning
    masks or fake-quant ranges); after `strip_pruning` the kernels are the sparse
    ones. A SeparableConv2D takes the weights of the DepthwiseConv2D and Conv2D that
    tfmot's QAT made of it. Returns ``model``.
    """
    split = {}  # separable layer -> {"depthwise": QAT layer, "pointwise": QAT layer}
    try:
        calls = graph.layer_calls(model)
    except ValueError:  # no graph (copy_weights still copies by name)
        calls = []
    if calls:
        for name, (separable, part) in _separable_parts(tf_keras_model, calls).items():
            wrapper = next(layer for layer in tf_keras_model.layers
                           if unwrap(layer).name == name)
            split.setdefault(separable, {})[part] = layer_weights(wrapper)
    copy_weights(tf_keras_model, model, skip={separable.name for separable in split})
    for separable, parts in split.items():
        if set(parts) != {"depthwise", "pointwise"}:
            raise ValueError(f"restore_weights: found only the {sorted(parts)} part of "
                             f"SeparableConv2D {separable.name!r} in {tf_keras_model.name!r}")
        separable.set_weights(parts["depthwise"] + parts["pointwise"])  # dw, pw(, bias)
    return model


# -- training --------------------------------------------------------------------------


def compile_for_finetuning(model, learning_rate=1e-4):
    """Compiles a twin to fine-tune a zoo model: Adam, cross-entropy on logits, accuracy.

    Zoo models output logits (classification ``(N, classes)``, segmentation
    ``(N, H, W, classes)``); labels are class ids. ``learning_rate`` is a float or a
    ``tf_keras.optimizers.schedules.LearningRateSchedule``. Returns ``model``.
    """
    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
