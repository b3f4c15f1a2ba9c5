"""An independent multiply-accumulate (MAC) counter: the ops TensorFlow actually runs.

`kronecker_zoo.report` counts MACs from layer *configurations* (kernel sizes,
channels, the factored plan). This module knows nothing of layers: it traces
``model(x, training=False)`` in a `tf.function` at a fixed input shape, walks the
ops of the concrete function's graph (recursing into the bodies of function-call
ops, ``PartitionedCall`` / ``StatefulPartitionedCall``) and counts, from each op's
static tensor shapes:

- ``Conv2D``: output elements * kh * kw * (input channels of the filter), so a
  grouped convolution counts its per-group channels and a dilated convolution
  that Keras runs as SpaceToBatchND + Conv2D counts what that Conv2D computes
  (including the outputs on the padding SpaceToBatchND adds when the spatial
  size is not a multiple of the rate);
- ``DepthwiseConv2dNative``: output elements * kh * kw;
- ``MatMul`` / ``BatchMatMul*``: output elements * the contracted length
  (``m * n * k`` times the batch);
- ``Einsum`` with two operands: the product of the sizes of all distinct indices
  (each output element sums over the indices that are not in the output);
- ``Conv2DBackpropInput`` (transposed convolution): elements of the incoming
  gradient (the transposed conv's input) * kh * kw * (its output channels, axis 2
  of the filter ``(kh, kw, out, in)``): every input element scatters a patch.

Everything else (additions, BatchNorm's affine, pooling, resizing, ...) counts 0,
as in the report. Shapes must be fully static (`ValueError` otherwise), and ops
whose bodies run a data-dependent number of times (``While``, ``If``, ...) are
refused rather than guessed.

Per-example MACs are ``graph_macs(batch=2) - graph_macs(batch=1)``: every op
that processes activations scales linearly with the batch, while ops that touch
only weights do not depend on it and cancel. That matters because layers compute
things from their weights on every call: a materialised KroneckerConv2D forms its
kernel ``kron(F_0, F_1)`` with an ``Einsum`` (its multiplies are per call, not per
example), and the report rightly leaves such weight preprocessing out.
"""

import math

import keras

CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
BATCH_MATMULS = ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")


def _dims(tensor, op):
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape.as_list()):
        raise ValueError(f"{op.type} op {op.name!r} has a tensor of non-static shape {shape}; "
                         "trace with a fully defined input shape")
    return shape.as_list()


def _elements(tensor, op):
    return math.prod(_dims(tensor, op))


def _einsum_macs(op):
    equation = op.get_attr("equation")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    lhs = equation.split("->")[0]
    terms = lhs.split(",")
    if "." in equation:
        raise ValueError(f"Einsum {op.name!r}: ellipsis equations are not supported "
                         f"({equation!r})")
    if len(terms) == 1:
        return 0  # a transpose / reduction of one operand: no multiplications
    if len(terms) != 2:
        raise ValueError(f"Einsum {op.name!r} with {len(terms)} operands: {equation!r}")
    sizes = {}
    for term, tensor in zip(terms, op.inputs):
        dims = _dims(tensor, op)
        if len(term) != len(dims):
            raise ValueError(f"Einsum {op.name!r}: {term!r} vs shape {dims}")
        for letter, size in zip(term, dims):
            if sizes.setdefault(letter, size) != size:
                raise ValueError(f"Einsum {op.name!r}: index {letter!r} has sizes "
                                 f"{sizes[letter]} and {size} (broadcasting not supported)")
    return math.prod(sizes.values())


def op_macs(op):
    """MACs of one (non-call) graph op, from its static shapes; 0 if it does none."""
    kind = op.type
    if kind == "Conv2D":
        kh, kw, cin, _ = _dims(op.inputs[1], op)
        return _elements(op.outputs[0], op) * kh * kw * cin
    if kind == "DepthwiseConv2dNative":
        kh, kw, _, _ = _dims(op.inputs[1], op)
        return _elements(op.outputs[0], op) * kh * kw
    if kind == "MatMul":
        a = _dims(op.inputs[0], op)
        k = a[0] if op.get_attr("transpose_a") else a[1]
        return _elements(op.outputs[0], op) * k
    if kind in BATCH_MATMULS:
        a = _dims(op.inputs[0], op)
        k = a[-2] if op.get_attr("adj_x") else a[-1]
        return _elements(op.outputs[0], op) * k
    if kind == "Einsum":
        return _einsum_macs(op)
    if kind == "Conv2DBackpropInput":
        kh, kw, cout, _ = _dims(op.inputs[1], op)  # filter (kh, kw, out, in) of the transpose
        return _elements(op.inputs[2], op) * kh * kw * cout
    if kind in ("Conv3D", "Conv2DBackpropFilter", "DepthwiseConv2dNativeBackpropInput",
                "Conv3DBackpropInputV2", "Conv"):
        raise NotImplementedError(f"graph_macs does not count {kind} ({op.name!r})")
    return 0


def _function_attrs(op):
    """Names of the functions an op's attributes refer to."""
    names = []
    for value in op.node_def.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        elif value.HasField("list") and len(value.list.func):
            names.extend(f.name for f in value.list.func)
    return names


def _callee_graph(graph, name):
    function = graph._get_function(name)
    callee = getattr(function, "graph", None)
    if callee is None:
        raise NotImplementedError(f"graph_macs cannot open the body of function {name!r}")
    return callee


def macs_of_graph(graph, counts=None):
    """Total MACs of ``graph``, function-call bodies included; ``counts`` (a dict)
    collects the MACs per op type if given."""
    total = 0
    for op in graph.get_operations():
        functions = _function_attrs(op)
        if op.type in CALL_OPS:
            total += macs_of_graph(_callee_graph(graph, op.get_attr("f").name), counts)
            continue
        if functions:
            raise NotImplementedError(
                f"{op.type} op {op.name!r} runs functions {functions} a data-dependent "
                "number of times; graph_macs does not count it")
        macs = op_macs(op)
        if counts is not None and macs:
            counts[op.type] = counts.get(op.type, 0) + macs
        total += macs
    return total


def trace_graph(model, batch, input_shape=None):
    """The graph of ``model(x, training=False)`` for ``x`` of shape ``(batch, *input_shape)``."""
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("graph_macs traces TensorFlow graphs (KERAS_BACKEND=tensorflow)")
    if input_shape is None:
        input_shape = tuple(model.inputs[0].shape[1:])
    input_shape = tuple(input_shape)
    if any(d is None for d in input_shape):
        raise ValueError(f"graph_macs needs a static input shape; {model.name} takes "
                         f"{input_shape}: pass input_shape=(H, W, C)")
    spec = tf.TensorSpec((batch,) + input_shape, model.inputs[0].dtype)
    fn = tf.function(lambda x: model(x, training=False))
    return fn.get_concrete_function(spec).graph


def graph_macs(model, batch, input_shape=None, counts=None):
    """MACs of one forward pass of ``model`` on a batch of ``batch`` examples."""
    return macs_of_graph(trace_graph(model, batch, input_shape), counts)


def macs_per_example(model, input_shape=None):
    """``graph_macs(batch=2) - graph_macs(batch=1)``: weight-only work cancels."""
    return graph_macs(model, 2, input_shape) - graph_macs(model, 1, input_shape)
