"""The one module that reads a model's layer graph (Keras 3 and tf_keras models).

Keras' public API covers part of the graph: ``model.inputs`` / ``model.outputs`` of a
functional or built Sequential model, ``model.layers``, ``layer.input`` / ``output``
of a layer called once. Which layer call produced a tensor, which calls a layer took
part in and a layer's nested sublayers are reachable only through Keras' private
``_keras_history``, ``_inbound_nodes`` and ``_flatten_layers``. This module is the
only place in the library that touches them, so that a change in Keras is mended once;
the report, the export rewrites, the tf_keras bridge and `optimize` go through it.

    graph_io(model)       -> (inputs, outputs): KerasTensors of a graph model
    layer_calls(model)    -> [Call(layer, inputs, outputs, args, kwargs)], inputs first
    inbound_layers(layer) -> [[layers read by call 0], [... call 1], ...]
    sole_inbound_layer(layer) -> the one layer it reads (one call, one input), or None
    consumers(model)      -> {layer name: [layers / operations reading its output, once
                             per call; MODEL_OUTPUT where the model returns it]}
    sublayers(layer)      -> the layers a layer (or a nested model) holds directly
    all_sublayers(layer)  -> every layer inside it, any depth
"""

import collections

import keras

Call = collections.namedtuple("Call", "layer inputs outputs args kwargs")
Call.__doc__ = """One call of a layer in a model's graph.

``inputs`` / ``outputs``: the call's input and output tensors (flat lists);
``args`` / ``kwargs``: the call's arguments as passed, tensors in place."""


def graph_io(model, purpose="This"):
    """``(inputs, outputs)``, lists of KerasTensors, of a functional or built Sequential
    Keras 3 model.

    Raises:
        ValueError: ``model`` has no graph (a subclassed model, an unbuilt Sequential);
            the message starts with ``purpose`` (e.g. ``"to_tf_keras"``).
    """
    if isinstance(model, keras.Sequential) and not model.built:
        raise ValueError(f"{purpose} needs a built model: Sequential model {model.name!r} "
                         "is not built; build it on an input first.")
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, TypeError, ValueError):
        inputs = outputs = None
    if not (isinstance(model, keras.Model) and inputs and outputs and all(
            getattr(t, "_keras_history", None) is not None for t in inputs + outputs)):
        raise ValueError(
            f"{purpose} needs a functional (or built Sequential) Keras 3 model. Received "
            f"{type(model).__name__} {getattr(model, 'name', model)!r}: subclassed models "
            "have no graph to read.")
    return inputs, outputs


def _node_of(tensor):
    """``(layer, node)``: the layer call that produced a Keras 3 KerasTensor."""
    history = tensor._keras_history
    return history.operation, history.operation._inbound_nodes[history.node_index]


def producer(tensor):
    """The layer whose call produced the Keras 3 KerasTensor ``tensor`` (an
    ``InputLayer`` for a model input), or `None` for a tensor no layer produced."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def layer_calls(model):
    """Every layer call of a Keras 3 graph model (functional or built Sequential, see
    `graph_io`), each after the calls it reads from; model inputs' ``InputLayer``s are
    left out. A list of `Call`: a layer called twice appears twice."""
    _, outputs = graph_io(model, "Reading the layer graph")
    ordered, seen = [], set()

    def visit(tensor):
        layer, node = _node_of(tensor)
        if id(node) in seen:
            return
        seen.add(id(node))
        inputs = list(node.input_tensors)
        for t in inputs:
            visit(t)
        if not isinstance(layer, keras.layers.InputLayer):
            ordered.append(Call(layer, inputs, list(node.output_tensors),
                                node.arguments.args, node.arguments.kwargs))

    for output in outputs:
        visit(output)
    return ordered


def _flat(structure):
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in _flat(item)]
    return [structure]


def inbound_layers(layer):
    """The layers each call of ``layer`` reads from: one list per call, in call order
    (``[]`` for a layer never called on a graph tensor). Keras 3 and tf_keras layers."""
    calls = []
    for node in getattr(layer, "_inbound_nodes", None) or ():
        if hasattr(node, "inbound_layers"):  # tf_keras
            calls.append(_flat(node.inbound_layers))
        else:  # Keras 3
            calls.append([producer(t) for t in node.input_tensors])
    return calls


def sole_inbound_layer(layer):
    """The layer ``layer`` reads from when it is called once on one input, else `None`
    (several calls or inputs: not clear-cut)."""
    calls = inbound_layers(layer)
    return calls[0][0] if len(calls) == 1 and len(calls[0]) == 1 else None


class _ModelOutput:
    """The reader `consumers` lists for a layer whose output the model returns."""

    name = "<model output>"

    def __repr__(self):
        return "MODEL_OUTPUT"


MODEL_OUTPUT = _ModelOutput()


def consumers(model):
    """``{layer name: [what reads its output]}``: the layers of ``model``, the operations
    of a Keras 3 functional model that are not layers (``x * 0.5``, ``keras.ops.add``),
    and `MODEL_OUTPUT` for an output the model returns; a reader of the same producer in
    two calls is listed twice. Keras 3 and tf_keras models (whose operations on tensors
    are ``TFOpLambda`` layers)."""
    found = collections.defaultdict(list)
    for operation in getattr(model, "operations", None) or model.layers:
        for call in inbound_layers(operation):
            for inbound in call:
                if inbound is not None:
                    found[inbound.name].append(operation)
    try:
        outputs = model.outputs or []
    except (AttributeError, ValueError):  # a subclassed or unbuilt model: no graph outputs
        outputs = []
    for tensor in outputs:
        history = getattr(tensor, "_keras_history", None)
        made_by = getattr(history, "operation", None) or getattr(history, "layer", None)
        if made_by is not None:
            found[made_by.name].append(MODEL_OUTPUT)
    return found


def sublayers(layer):
    """The layers ``layer`` holds directly (a nested model's layers, its ``InputLayer``
    included; a composite layer's tracked sublayers), not recursively, without ``layer``."""
    flatten = getattr(layer, "_flatten_layers", None)
    if callable(flatten):
        try:
            return list(flatten(include_self=False, recursive=False))
        except TypeError:  # a Keras whose _flatten_layers takes other arguments
            pass
    return list(getattr(layer, "layers", ()))


def all_sublayers(layer):
    """Every layer inside ``layer`` (`sublayers`, recursively, parents first), without
    ``layer``."""
    for sub in sublayers(layer):
        yield sub
        yield from all_sublayers(sub)
