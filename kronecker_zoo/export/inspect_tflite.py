"""Reading a .tflite file: its operators and how it was quantized.

Parses the flatbuffer with LiteRT's generated schema (``ai_edge_litert``), so
nothing runs and no delegate rewrites the graph (an allocated interpreter with
XNNPACK shows ``DELEGATE`` nodes instead of the ops).
"""

import collections
import os
import re

from ai_edge_litert import schema_py_generated as schema

# Ops that mean the file will not run on a plain LiteRT runtime (Flex/Select TF ops
# and other custom ops) or will not run on mobile GPU delegates (the dynamic-batch
# lowering of dilated convolutions).
FORBIDDEN_OPS = ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND")
_BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items()
                  if not k.startswith("_") and isinstance(v, int)}
_TENSOR_TYPES = {v: k for k, v in vars(schema.TensorType).items()
                 if not k.startswith("_") and isinstance(v, int)}
_QUANTIZED_ACTIVATIONS = ("INT8", "UINT8", "INT16")
_IO_OPS = ("QUANTIZE", "DEQUANTIZE")


class TFLiteOpsError(ValueError):
    """A .tflite file holds ops it should not (Flex/custom, SPACE_TO_BATCH_ND, ...)."""


def _load(source):
    """The schema ``Model`` of a .tflite path, or of the file's bytes."""
    if isinstance(source, (bytes, bytearray)):
        buf, what = bytes(source), "the given bytes"
    else:
        what = repr(os.fspath(source))
        with open(os.fspath(source), "rb") as f:
            buf = f.read()
    if len(buf) < 8 or not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise ValueError(f"{what} is not a TFLite flatbuffer (no 'TFL3' identifier).")
    return schema.Model.GetRootAs(buf, 0)


def _op_name(model, opcode_index):
    code = model.OperatorCodes(opcode_index)
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = _BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        custom = code.CustomCode()
        custom = custom.decode() if isinstance(custom, bytes) else str(custom)
        return f"CUSTOM:{custom}"
    return name


def _operators(model):
    """Yield ``(subgraph, operator, op_name)`` for every operator of every subgraph."""
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            yield graph, op, _op_name(model, op.OpcodeIndex())


def tflite_op_counts(path):
    """``{op name: count}`` over all subgraphs of a .tflite path (or its bytes). Custom ops read ``"CUSTOM:<name>"``
    (Select TF ops are ``"CUSTOM:Flex<TfOp>"``)."""
    return dict(sorted(collections.Counter(
        name for _, _, name in _operators(_load(path))).items()))


def _layer_of(tensor_name, order):
    """The layer a converter tensor name points at, or None. ``order``: ``{layer name:
    position in the model}``.

    A tensor is named after its TensorFlow scopes (``"model_1/stage1_conv_1/convolution"``:
    Keras adds ``_<n>`` to a layer's scope when it traces it again); an op into which the
    converter fused later layers (a BatchNormalization folded into a convolution, a ReLU)
    names every part, separated by ``;``: the op belongs to the earliest of them.
    """
    found = []
    for part in tensor_name.split(";"):
        for component in part.split("/")[1:] or part.split("/"):
            for name in (component, re.sub(r"_\d+$", "", component)):
                if name in order:
                    found.append(name)
                    break
    return min(found, key=order.get) if found else None


def tflite_ops_by_layer(path, layer_names):
    """``{layer name: {op name: count}}``: the file's ops grouped by the Keras layer
    that produced them, read from each op's output tensor name (see `_layer_of`). Ops no
    layer name matches count under ``"(other)"``; layers without ops are left out.

    Args:
        path: the .tflite file (or its bytes).
        layer_names: the model's layer names, e.g. ``[l.name for l in model.layers]``.
    """
    names = list(dict.fromkeys(layer_names))
    order = {n: i for i, n in enumerate(names)}
    counts = collections.OrderedDict((n, collections.Counter()) for n in names + ["(other)"])
    for graph, op, op_name in _operators(_load(path)):
        tensor = graph.Tensors(op.Outputs(0)) if op.OutputsLength() else None
        label = tensor.Name().decode() if tensor is not None and tensor.Name() else ""
        counts[_layer_of(label, order) or "(other)"][op_name] += 1
    return {n: dict(sorted(c.items())) for n, c in counts.items() if c}


def tflite_ops(path):
    """Sorted list of the distinct op names in the file (see `tflite_op_counts`)."""
    return sorted(tflite_op_counts(path))


def forbidden_ops(ops):
    """The entries of ``ops`` that `check_tflite_ops` rejects."""
    return sorted(op for op in ops
                  if op.startswith("CUSTOM:") or op.startswith("Flex") or op in FORBIDDEN_OPS)


def check_tflite_ops(path, raise_error=True):
    """Check that the file holds only builtin ops and no SPACE_TO_BATCH_ND /
    BATCH_TO_SPACE_ND.

    Args:
        path: the .tflite file.
        raise_error: bool. `True` raises `TFLiteOpsError` (a ValueError) naming the
            offending ops; `False` returns them instead.

    Returns:
        The sorted list of offending op names (empty when the file is clean).
    """
    bad = forbidden_ops(tflite_ops(path))
    if bad and raise_error:
        what = "The model" if isinstance(path, (bytes, bytearray)) else repr(os.fspath(path))
        raise TFLiteOpsError(
            f"{what} holds ops unsuitable for mobile runtimes: {bad}. "
            "Flex/custom ops need the Select-TF-ops runtime; SPACE_TO_BATCH_ND / "
            "BATCH_TO_SPACE_ND come from dilated convolutions traced with a dynamic batch "
            "and are rejected by GPU delegates (export with a fixed batch_size)."
        )
    return bad


def tflite_quantization(path):
    """How the file was quantized, read from its tensor types.

    Returns:
        ``"int8"`` (integer activations: full-integer quantization),
        ``"float16"`` (float16 weights), ``"dynamic"`` (int8 weights, float
        activations: dynamic-range quantization) or ``"float32"``.
    """
    model = _load(path)
    types = set()
    for graph, op, name in _operators(model):
        if name == "CAST":  # a model's own dtype casts (e.g. a uint8 Input): not quantization
            continue
        tensors = [graph.Tensors(i) for i in op.InputsAsNumpy() if i >= 0] if (
            op.InputsLength()) else []
        kinds = [_TENSOR_TYPES.get(t.Type()) for t in tensors]
        types.update(kinds)
        if name not in _IO_OPS and kinds and kinds[0] in _QUANTIZED_ACTIVATIONS:
            return "int8"
    if "FLOAT16" in types:
        return "float16"
    if "INT8" in types or "UINT8" in types:
        return "dynamic"
    return "float32"


def tflite_io(path):
    """``{"input": (shape, dtype), "output": (shape, dtype)}`` of the main subgraph."""
    model = _load(path)
    graph = model.Subgraphs(0)

    def describe(index):
        t = graph.Tensors(index)
        return tuple(int(d) for d in t.ShapeAsNumpy()), _TENSOR_TYPES.get(t.Type())

    return {"input": describe(graph.Inputs(0)), "output": describe(graph.Outputs(0))}
