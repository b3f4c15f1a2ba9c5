"""Swap a model's ``Conv2D`` / ``Dense`` layers for Kronecker or low-rank layers.

The architecture half of a factorization: `factorized_layer` builds the replacement of
one layer from its config and a spec ``{"layer": type, "factors": [...], "rank": r}``,
and `replace_layers` rebuilds a Sequential or functional model with replacements
(fresh weights; `kronecker_zoo.compress.factorize` fills them from the trained kernels).
The zoo's students (`students.py`) are a teacher's architecture rebuilt this way.
"""

import keras

from kronecker_zoo.layers import KroneckerConv2D, KroneckerDense, LowRankConv2D

LAYER_TYPES = ("KroneckerConv2D", "LowRankConv2D", "KroneckerDense")

__all__ = ["LAYER_TYPES", "factorized_layer", "layer_paths", "replace_layers"]


def layer_paths(model, visit_model=None):
    """``(path, layer)`` for every layer of ``model``, nested Sequential/functional models
    flattened (``"block/conv"``: layer ``conv`` of nested model ``block``), in model order.
    ``visit_model(nested)`` is called on each nested model first, e.g. to check it."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if visit_model is not None:
                visit_model(layer)
            for path, inner in layer_paths(layer, visit_model):
                yield f"{layer.name}/{path}", inner
        else:
            yield layer.name, layer


def factorized_layer(layer, layer_type, factors=None, rank=1, execution="auto"):
    """The ``layer_type`` twin of a ``Conv2D`` / ``Dense`` ``layer`` (not built).

    Same name, filters/units, kernel size, strides, padding, bias, activation,
    regularizers and constraints (these act on each factor), dtype policy and
    ``trainable``. ``factors``: the factor shapes, outermost first (`KroneckerConv2D`:
    ``(kh, kw, in, out)`` each; `KroneckerDense`: ``(in, out)`` each; unused by
    `LowRankConv2D`, whose shapes the rank fixes).
    """
    if layer_type not in LAYER_TYPES:
        raise ValueError(f"layer_type must be one of {LAYER_TYPES}. Received: {layer_type!r}")
    expected = keras.layers.Dense if layer_type == "KroneckerDense" else keras.layers.Conv2D
    if type(layer) is not expected:
        raise ValueError(f"A {layer_type} replaces a {expected.__name__}; layer "
                         f"{layer.name!r} is a {type(layer).__name__}")
    if layer_type != "LowRankConv2D" and not factors:
        raise ValueError(f"A {layer_type} needs its factor shapes (layer {layer.name!r})")
    config = layer.get_config()
    try:  # resolved once, here, to name the problem if it cannot be rebuilt
        activation = keras.activations.get(config["activation"])
    except (TypeError, ValueError) as error:
        raise _not_rebuildable(layer, error) from error
    common = dict(
        use_bias=config["use_bias"], activation=activation,
        kernel_regularizer=config["kernel_regularizer"],
        bias_regularizer=config["bias_regularizer"],
        kernel_constraint=config["kernel_constraint"],
        bias_constraint=config["bias_constraint"],
        activity_regularizer=config.get("activity_regularizer"),
        name=layer.name, dtype=layer.dtype_policy, trainable=layer.trainable)
    if layer_type == "KroneckerDense":
        return KroneckerDense(config["units"], [tuple(f) for f in factors], rank=rank, **common)
    if layer_type == "LowRankConv2D":
        return LowRankConv2D(config["filters"], config["kernel_size"], rank,
                             strides=config["strides"], padding=config["padding"], **common)
    return KroneckerConv2D(config["filters"], config["kernel_size"],
                           [tuple(f) for f in factors], rank=rank, strides=config["strides"],
                           padding=config["padding"], execution=execution, **common)


def replace_layers(model, specs, name=None):
    """A new model: ``model`` with each layer named in ``specs`` replaced.

    ``specs``: ``{layer: {"layer": type, "factors": [...], "rank": r}}``, each key a
    layer's path (``"block/conv"`` for layer ``conv`` of nested model ``block``; a layer
    shared across nesting levels by any of its paths) or, if no other layer has it, its
    bare name. Replaced layers get fresh weights; every other
    layer is rebuilt from its config (fresh weights too: copy them if you need them).
    ``model`` is not modified.
    """
    ids = {}  # path -> id(layer); a layer shared across nesting levels has several paths
    by_name = {}  # name -> the first path of each layer of that name
    first = {}
    for path, layer in layer_paths(model):
        ids[path] = id(layer)
        if first.setdefault(id(layer), path) == path:
            by_name.setdefault(layer.name, []).append(path)
    resolved, missing = {}, []  # id(layer) -> spec
    for key, spec in specs.items():
        if key in ids:
            resolved[ids[key]] = spec
        elif len(by_name.get(key, ())) == 1:
            resolved[ids[by_name[key][0]]] = spec
        elif key in by_name:
            raise ValueError(f"Layer name {key!r} is ambiguous in model {model.name!r} "
                             f"({by_name[key]}): give its path")
        else:
            missing.append(key)
    if missing:
        raise ValueError(f"Model {model.name!r} has no layer(s) {sorted(missing)} to replace")

    def clone(layer):
        spec = resolved.get(id(layer))
        if spec is not None:
            return factorized_layer(layer, spec["layer"], spec.get("factors"), spec["rank"])
        try:
            copy = layer.__class__.from_config(layer.get_config())
        except (TypeError, ValueError) as error:
            raise _not_rebuildable(layer, error) from error
        if copy.name != layer.name:  # a custom layer whose config leaves its name out
            copy.name = layer.name   # (Keras' automatic get_config): keep it
        return copy

    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    _copy_trainable(model, new_model)
    if name is not None:
        new_model.name = name
    return new_model


def _not_rebuildable(layer, error):
    return ValueError(
        f"Layer {layer.name!r} ({type(layer).__name__}) cannot be rebuilt from its "
        "config, which copying a model needs (as keras.models.clone_model does): "
        "a Lambda layer of a Python lambda, or an unregistered function as "
        "activation, is refused by Keras' safe mode; give the function a name and "
        "register it with @keras.saving.register_keras_serializable(), and a custom "
        f"layer needs a get_config matching its __init__. Keras said: {error}")


def _copy_trainable(source, target):
    """Give ``target`` (a copy of ``source``) the ``trainable`` flags of ``source``, its
    nested models' and its layers'. A model's flag is set first: Keras passes it on to
    the layers it contains, whose own flags are then set again."""
    if target.trainable != source.trainable:
        target.trainable = source.trainable
    for layer in source.layers:
        if isinstance(layer, keras.layers.InputLayer):  # clone_model renames these
            continue
        twin = target.get_layer(layer.name)
        if isinstance(layer, keras.Model):
            _copy_trainable(layer, twin)
        elif twin.trainable != layer.trainable:
            twin.trainable = layer.trainable
