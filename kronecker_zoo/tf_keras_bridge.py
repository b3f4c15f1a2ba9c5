"""A tf_keras (Keras 2) twin of a Keras 3 zoo model, for tools that need Keras 2.

TensorFlow Model Optimization (tfmot: quantization-aware training, pruning)
only works on tf_keras models. `to_tf_keras` rebuilds a Keras 3 functional
model as a tf_keras functional model with the same graph, layer names and
weights:

- built-in layers (Conv2D, BatchNormalization, ReLU, Add, Dense, Rescaling, ...)
  become the tf_keras class of the same name, built from the same config
  (Keras-3-only keys that are at their default are dropped, anything else is
  refused with the layer's name and class);
- every kronecker_zoo layer (KroneckerConv2D, KroneckerDense, LowRankConv2D,
  ContextModule, DilatedStack, CropToMatch, ...) becomes one generic
  `BridgedLayer`. It owns tf_keras variables shaped like the Keras 3 layer's
  and runs *the Keras 3 layer's own* ``call`` on them in a
  ``keras.StatelessScope`` (under the TensorFlow backend ``keras.ops``
  takes and returns tf tensors, so gradients reach the tf_keras variables).
  The layers' math exists once, in `kronecker_zoo.layers` / `kronecker_zoo.ops`;
  the bridge has no copy of it.

`copy_weights` moves weights between the two (either direction, by layer name,
looking through tfmot's ``PruneLowMagnitude`` / ``QuantizeWrapper`` wrappers).

Requires the TensorFlow backend of Keras 3.
"""

import inspect

import keras
import numpy as np

from kronecker_zoo import graph, runtime

runtime.require_extra("optimize", "kronecker_zoo.tf_keras_bridge")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

__all__ = [
    "BridgedLayer",
    "UnsupportedLayerError",
    "check_tensorflow_backend",
    "copy_weights",
    "is_bridged",
    "to_tf_keras",
    "unwrap",
]

# Built-in Keras 3 layers mapped to the tf_keras class of the same name.
STANDARD_LAYERS = (
    "Activation",
    "Add",
    "AveragePooling2D",
    "BatchNormalization",
    "Concatenate",
    "Conv2D",
    "Cropping2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "LeakyReLU",
    "MaxPooling2D",
    "Multiply",
    "ReLU",
    "Rescaling",
    "Reshape",
    "SeparableConv2D",
    "Softmax",
    "Subtract",
    "UpSampling2D",
    "ZeroPadding2D",
)

# Options Keras 3 and tf_keras name differently: (layer class, Keras 3 name) -> tf_keras name.
_RENAMED_OPTIONS = {("LeakyReLU", "negative_slope"): "alpha"}
# Activations tf_keras knows by the same name but computes differently (Keras 3:
# relu6(x + 3) / 6; tf_keras: clip(0.2 x + 0.5, 0, 1)).
_DIFFERENT_ACTIVATIONS = ("hard_sigmoid",)

# Keyword arguments every tf_keras layer accepts besides its own.
_BASE_KWARGS = {"name", "trainable", "dtype", "input_dim", "input_shape",
                "batch_input_shape", "batch_size", "weights", "activity_regularizer",
                "autocast", "implementation", "dynamic"}


class UnsupportedLayerError(ValueError):
    """A layer of the Keras 3 model has no tf_keras twin."""


def check_tensorflow_backend(what="to_tf_keras"):
    """ValueError unless Keras 3 runs on TensorFlow (the bridge runs Keras ops on tf tensors)."""
    runtime.require_tensorflow_backend(
        what, "builds a tf_keras model whose zoo layers run Keras 3 ops on TensorFlow tensors")


def _is_zoo_layer(layer):
    return type(layer).__module__.startswith("kronecker_zoo.")


def _is_builtin(layer):
    return type(layer).__module__.startswith("keras.")


def _describe(layer):
    cls = type(layer)
    return f"layer {layer.name!r} ({cls.__module__}.{cls.__qualname__})"


# -- the generic wrapper of Keras 3 layers -------------------------------------------


def _as_shape(shape):
    """tf_keras build shapes (TensorShape, nested lists of them) -> tuples / lists."""
    if isinstance(shape, tf.TensorShape):
        return tuple(shape.as_list()) if shape.rank is not None else None
    if isinstance(shape, (list, tuple)) and shape and not all(
            s is None or isinstance(s, (int, np.integer)) for s in shape):
        return [_as_shape(s) for s in shape]
    return tuple(shape) if isinstance(shape, (list, tuple)) else shape


def _weight_name(layer, variable):
    """Variable path relative to the layer: ``factor_0``, ``context_0/kernel`` -> ``_``."""
    path = getattr(variable, "path", variable.name)
    prefix = layer.name + "/"
    if path.startswith(prefix):
        path = path[len(prefix):]
    return path.replace("/", "_")


@tf_keras.saving.register_keras_serializable(package="kronecker_zoo")
class BridgedLayer(tf_keras.layers.Layer):
    """tf_keras layer that runs a Keras 3 layer's ``call`` on tf_keras variables.

    Built, it holds one tf_keras variable per variable of the Keras 3 layer
    (same order, shapes, dtypes, trainability; regularizers and constraints are
    delegated), and ``call`` runs the Keras 3 layer in a ``keras.StatelessScope``
    with those values substituted for its variables (its own ``__call__``, so a
    mixed dtype policy autocasts them). The Keras 3 layer's variables are never read.

    For tfmot, `kernel_variables` (its variables of rank >= 2 that train when the
    layer does: factors, kernels) are what gets fake-quantized or pruned:
    ``get_prunable_weights`` implements tfmot's ``PrunableLayer`` protocol, and
    `set_weight_overrides` substitutes tensors (e.g. fake-quantized kernels) for them in
    ``call``.

    Args:
        layer: a Keras 3 layer, or its serialized form (from `get_config`).
    """

    def __init__(self, layer, **kwargs):
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"BridgedLayer wraps a Keras 3 layer. Received: {layer!r}")
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("trainable", layer.trainable)
        kwargs.setdefault("dtype", layer.dtype_policy.name)
        super().__init__(**kwargs)
        # Not tracked by tf_keras: its variables are placeholders in a StatelessScope.
        object.__setattr__(self, "_source", layer)
        object.__setattr__(self, "_overrides", {})
        object.__setattr__(self, "_pairs", [])
        object.__setattr__(self, "_trains", [])
        params = inspect.signature(layer.call).parameters
        self._accepts_training = "training" in params
        if layer.activity_regularizer is not None:
            self.activity_regularizer = _delegate(layer.activity_regularizer)

    @property
    def source(self):
        """The wrapped Keras 3 layer (its call is the single source of the math)."""
        return self._source

    def build(self, input_shape):
        source = self._source
        if not source.built:
            source.build(_as_shape(input_shape))
        pairs = []
        for variable in source.variables:
            value = np.asarray(keras.ops.convert_to_numpy(variable))
            twin = self.add_weight(
                name=_weight_name(source, variable),
                shape=tuple(variable.shape),
                dtype=variable.dtype,
                initializer=tf_keras.initializers.Constant(value) if value.size else "zeros",
                trainable=bool(variable.trainable),
                regularizer=_delegate(getattr(variable, "regularizer", None)),
                constraint=_delegate(getattr(variable, "constraint", None)),
            )
            pairs.append((variable, twin))
        object.__setattr__(self, "_pairs", pairs)
        object.__setattr__(self, "_trains", _trains_when_unfrozen(source))
        super().build(input_shape)

    @property
    def variable_pairs(self):
        """``[(keras3_variable, tf_keras_variable), ...]`` in the Keras 3 layer's order."""
        return list(self._pairs)

    @property
    def kernel_variables(self):
        """The tf_keras variables of rank >= 2 that train when the layer does (kernels and
        factors, no biases or statistics), a frozen layer's too (as tfmot quantizes and
        prunes a frozen Conv2D's kernel)."""
        return [twin for (variable, twin), trains in zip(self._pairs, self._trains)
                if trains and len(variable.shape) >= 2]

    def get_prunable_weights(self):
        """tfmot ``PrunableLayer`` protocol: the kernels and factors."""
        return self.kernel_variables

    def set_weight_overrides(self, overrides):
        """Use ``overrides[i]`` in place of ``kernel_variables[i]`` in ``call``."""
        kernels = self.kernel_variables
        object.__setattr__(self, "_overrides",
                           {id(kernels[i]): value for i, value in enumerate(overrides)})

    @property
    def weights_overridden(self):
        """Whether `set_weight_overrides` replaced kernels in ``call`` (under tfmot's QAT:
        the fake-quantized kernels and factors)."""
        return bool(self._overrides)

    def call(self, inputs, training=None):
        # The Keras 3 layer's own __call__ (which autocasts its variables under a mixed
        # dtype policy) with the twin's values in place of its variables.
        source = self._source
        mapping = [(variable, self._overrides.get(id(twin), twin))
                   for variable, twin in self._pairs]
        kwargs = {"training": training} if self._accepts_training else {}
        with keras.StatelessScope(state_mapping=mapping) as scope:
            start = {id(v): scope.get_current_value(v) for v, _ in self._pairs}
            outputs = source(inputs, **kwargs)
        if training:  # what the call assigned (BatchNorm statistics), back to the twin
            for variable, twin in self._pairs:
                value = scope.get_current_value(variable)
                if value is not start[id(variable)]:
                    twin.assign(value)
        return outputs

    def compute_output_shape(self, input_shape):
        shape = _as_shape(input_shape)
        try:
            out = self._source.compute_output_shape(shape)
        except NotImplementedError:  # a custom layer without it: Keras 3 traces its call
            out = self._source.compute_output_spec(keras.KerasTensor(shape)).shape
        return tf.TensorShape(out)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)  # the wrapped layer carries it
        config["layer"] = keras.saving.serialize_keras_object(self._source)
        return config


def _trains_when_unfrozen(layer):
    """``[bool per layer.variables]``: whether each variable trains once ``layer`` (and
    every layer inside it) is trainable. Found by unfreezing them for a moment; every
    layer's and variable's flag is then set back as it was."""
    layers = [layer, *graph.all_sublayers(layer)]
    saved_layers = [sub.trainable for sub in layers]
    saved_variables = [variable.trainable for variable in layer.variables]
    try:
        for sub in layers:
            sub.trainable = True
        return [bool(variable.trainable) for variable in layer.variables]
    finally:
        for sub, trainable in zip(layers, saved_layers):
            sub.trainable = trainable
        for variable, trainable in zip(layer.variables, saved_variables):
            variable.trainable = trainable


def _delegate(function):
    """A Keras 3 regularizer/constraint as a plain callable on tf tensors."""
    if function is None:
        return None

    def delegate(x):
        return function(x)

    return delegate


def is_bridged(layer):
    """Whether ``layer`` is a `BridgedLayer` (looking through tfmot wrappers)."""
    return isinstance(unwrap(layer), BridgedLayer)


def unwrap(layer):
    """The layer inside tfmot's ``PruneLowMagnitude`` / ``QuantizeWrapper`` (recursively)."""
    while isinstance(layer, tf_keras.layers.Wrapper):
        layer = layer.layer
    return layer


# -- built-in layers -------------------------------------------------------------------


def _translate(value, module, layer, key):
    """A Keras 3 serialized initializer/regularizer/constraint -> tf_keras object."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and "class_name" in value:
        try:
            return module.deserialize({"class_name": value["class_name"],
                                       "config": value.get("config", {})})
        except (ValueError, TypeError) as error:
            raise UnsupportedLayerError(
                f"Cannot convert {key}={value!r} of {_describe(layer)} to tf_keras: {error}"
            ) from None
    raise UnsupportedLayerError(
        f"Cannot convert {key}={value!r} of {_describe(layer)} to tf_keras.")


def _standard_twin(layer):
    """The tf_keras layer of the same class and config as a built-in Keras 3 layer."""
    name = type(layer).__name__
    cls = getattr(tf_keras.layers, name, None)
    if name not in STANDARD_LAYERS or cls is None:
        raise UnsupportedLayerError(
            f"Cannot convert {_describe(layer)} to tf_keras: built-in layers supported are "
            f"{', '.join(STANDARD_LAYERS)}, plus every kronecker_zoo layer.")
    config = dict(layer.get_config())
    accepted = set(_BASE_KWARGS)
    for klass in cls.__mro__:  # subclasses pass **kwargs on to their bases
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    translated = {"name": layer.name, "trainable": layer.trainable,
                  "dtype": layer.dtype_policy.name}
    for key, value in config.items():
        if key in ("name", "trainable", "dtype"):
            continue
        key = _RENAMED_OPTIONS.get((name, key), key)
        if key == "activation" and value in _DIFFERENT_ACTIVATIONS:
            raise UnsupportedLayerError(
                f"Cannot convert {_describe(layer)} to tf_keras: tf_keras' {value!r} "
                "computes another function than Keras 3's.")
        if key not in accepted:
            if value in (None, False, 0, (), [], {}) or (key, value) == ("data_format",
                                                                        "channels_last"):
                continue  # a Keras-3-only option left at its default (lora_rank, ...)
            raise UnsupportedLayerError(
                f"Cannot convert {_describe(layer)} to tf_keras: option {key}={value!r} "
                "has no tf_keras equivalent.")
        if key.endswith("_initializer"):
            continue  # weights are copied; tf_keras keeps its default initializer
        if key.endswith("_regularizer"):
            value = _translate(value, tf_keras.regularizers, layer, key)
        elif key.endswith("_constraint"):
            value = _translate(value, tf_keras.constraints, layer, key)
        elif key == "activation" and isinstance(value, dict):
            value = _translate(value, tf_keras.activations, layer, key)
        translated[key] = value
    try:
        return cls(**translated)
    except (TypeError, ValueError) as error:
        raise UnsupportedLayerError(
            f"Cannot convert {_describe(layer)} to tf_keras: {error}") from None


def _twin_layer(layer, custom_layers):
    if not isinstance(layer, keras.layers.Layer):
        raise UnsupportedLayerError(
            f"Cannot convert the Keras operation {layer.name!r} "
            f"({type(layer).__module__}.{type(layer).__qualname__}) to tf_keras: operations "
            "on tensors (x * 0.5, x + y, keras.ops.*) have no tf_keras twin. Write it as a "
            "layer (keras.layers.Rescaling for x * 0.5, keras.layers.Add / Multiply for two "
            "tensors).")
    if _is_zoo_layer(layer) or isinstance(layer, tuple(custom_layers)):
        return BridgedLayer(layer)
    if _is_builtin(layer):
        return _standard_twin(layer)
    raise UnsupportedLayerError(
        f"Cannot convert {_describe(layer)} to tf_keras: it is neither a kronecker_zoo "
        "layer nor a supported built-in Keras layer. Pass its class in `custom_layers` "
        "if its call is written with keras.ops (it is then wrapped in a BridgedLayer).")


# -- the graph -------------------------------------------------------------------------


def to_tf_keras(model, copy=True, custom_layers=()):
    """The tf_keras functional twin of a Keras 3 functional ``model``.

    Args:
        model: a functional (or built Sequential) Keras 3 model, e.g. from
            `kronecker_zoo.models.get`.
        copy: copy the weights (exactly) into the twin. Defaults to `True`.
        custom_layers: extra Keras 3 layer classes (written with ``keras.ops``) to
            wrap in a `BridgedLayer` like the zoo's own layers.

    Returns:
        A `tf_keras.Model` with the same inputs, outputs, layer names and weights,
        computing the same function (to float round-off).

    Raises:
        UnsupportedLayerError: for a layer that has no twin (names it and its class).
        ValueError: Keras does not run on the TensorFlow backend.
    """
    check_tensorflow_backend("to_tf_keras")
    try:
        inputs, outputs = graph.graph_io(model, "to_tf_keras")
    except ValueError as error:
        raise UnsupportedLayerError(str(error)) from None
    tensors = {}  # id(Keras 3 KerasTensor) -> tf_keras tensor
    twins = {}  # id(Keras 3 layer) -> tf_keras layer

    def convert(x):
        return tensors[id(x)] if isinstance(x, keras.KerasTensor) else x

    for tensor in inputs:
        layer = graph.producer(tensor)
        tensors[id(tensor)] = tf_keras.Input(
            batch_shape=tuple(layer.batch_shape), dtype=layer.dtype, name=layer.name,
            sparse=bool(getattr(layer, "sparse", False)))
    for call in graph.layer_calls(model):
        layer = call.layer
        if isinstance(layer, keras.Model):
            raise UnsupportedLayerError(
                f"Cannot convert nested model {_describe(layer)}: flatten it first.")
        args = keras.tree.map_structure(convert, call.args)
        kwargs = keras.tree.map_structure(convert, call.kwargs)
        if id(layer) not in twins:
            twins[id(layer)] = _twin_layer(layer, custom_layers)
        results = keras.tree.flatten(twins[id(layer)](*args, **kwargs))
        for k3_output, output in zip(call.outputs, results):
            tensors[id(k3_output)] = output

    inputs = [tensors[id(t)] for t in inputs]
    outputs = [tensors[id(t)] for t in outputs]
    twin = tf_keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=model.name,
    )
    if copy:
        copy_weights(model, twin)
    return twin


# -- weights ---------------------------------------------------------------------------


def layer_weights(layer):
    """A layer's own weights as NumPy arrays, a tfmot wrapper's wrapped layer's (see
    `_layer_variables`)."""
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in _layer_variables(layer)]


def _layer_variables(layer):
    """A layer's own weights, in the order the twins share.

    A `BridgedLayer` and a Keras 3 zoo (or custom) layer: every variable, in the
    Keras 3 layer's order; a built-in layer: ``layer.weights`` (the same order in
    Keras 3 and tf_keras). A tfmot wrapper's masks and quantizer ranges are not
    included: only the wrapped layer's. Under tfmot's ``QuantizeWrapper`` a built-in
    layer's kernels are held by the wrapper (its call replaces ``layer.kernel`` by the
    fake-quantized tensor): they come first, as Keras builds kernels before biases.
    """
    quantized = [weight for weight, *_ in getattr(layer, "_weight_vars", None) or ()]
    layer = unwrap(layer)
    if isinstance(layer, BridgedLayer):
        return [twin for _, twin in layer.variable_pairs]
    if isinstance(layer, keras.layers.Layer) and not _is_builtin(layer):
        return list(layer.variables)
    return quantized + [w for w in layer.weights if all(w is not q for q in quantized)]


def copy_weights(source, target, strict=True, skip=()):
    """Copies weights layer by layer (by name) from ``source`` into ``target``.

    Either model may be Keras 3 or tf_keras; tf_keras layers may be wrapped by
    tfmot (``prune_low_magnitude`` / ``quantize_apply``: the wrapped layer's own
    weights are copied, not masks or quantizer ranges). Typical use: after
    pruning and `tfmot.sparsity.keras.strip_pruning`, copy the sparse weights
    back into the Keras 3 model.

    Args:
        source, target: models with the same layer names.
        strict: raise if a ``target`` layer with weights has no counterpart in
            ``source``. Defaults to `True`.
        skip: names of ``target`` layers to leave as they are.

    Returns:
        ``target``.

    Raises:
        ValueError: on a missing layer (``strict``) or on mismatched shapes.
    """
    by_name = {}
    for layer in source.layers:
        by_name[unwrap(layer).name] = layer
        by_name.setdefault(layer.name, layer)
    for layer in target.layers:
        inner = unwrap(layer)
        variables = _layer_variables(layer)
        if not variables or inner.name in skip:
            continue
        src = by_name.get(inner.name)
        if src is None:
            if strict:
                raise ValueError(f"Source model {source.name!r} has no layer {inner.name!r}")
            continue
        values = layer_weights(src)
        shapes = [tuple(v.shape) for v in values]
        want = [tuple(v.shape) for v in variables]
        if shapes != want:
            raise ValueError(
                f"Layer {inner.name!r}: source weights have shapes {shapes}, the target "
                f"needs {want}")
        for variable, value in zip(variables, values):
            variable.assign(value)
    return target
