"""Float-exact graph rewrites that make full-integer int8 exports more faithful.

A BatchNormalization right after a Conv2D is folded by the TFLite converter into
the convolution's per-channel int8 weights. So is one after any layer whose traced
output is a convolution plus constant biases (`ends_in_convolution`): a linear
`LowRankConv2D`, or a `KroneckerConv2D` whose last cascade step writes its output
channels (the "channels" lowering, or the "batch" one where no channel axis moves).
Folded, it costs no op and no requantization: the depth-20 students' int8 files get 20%
smaller and 22-27% faster than with rewrite 1 below, and agree more often with Keras
(`python tflite/benchmark.py --compare ...` and `python tflite/int8_parity.py ...`,
tables in tflite/README.md). After a layer it cannot fold into (a `KroneckerConv2D` whose output
comes out of a transpose, in the "batch" lowering; a layer with an activation; a layer
whose output is read elsewhere too) it stays a MUL and an ADD by constant vectors, and an int8
MUL quantizes its constant **per tensor**: the small per-channel scales
``gamma / sigma`` lose most of their bits, and each of MUL and ADD requantizes.
Rewrites, exact in float (4. but at image borders), are applied while an int8 file is
traced:

1. Such a BatchNormalization runs as ``depthwise_conv2d(x, s) + b`` with
   ``s = gamma / sqrt(var + eps)`` and ``b = beta - mean * s``: one
   DEPTHWISE_CONV_2D whose weights are quantized per channel and whose bias is
   int32 (ReLU fuses into it).
2. When it follows a linear `KroneckerConv2D` (output used only by it), the input range
   of that depthwise convolution is equalised across channels (cross-layer range
   equalisation, Nagel et al. 2019): the Kronecker output channel
   ``c = (o_0, ..., o_{m-1})`` has standard deviation about ``sigma_c`` (the
   BatchNormalization's moving statistics); `kernels.kronecker_channel_scales`
   fits ``log sigma_c ~ sum_k a_k[o_k]`` and each factor ``F_k`` is divided by
   ``exp(a_k)`` along its output channels, so the product kernel (and the layer's
   bias) is divided by ``t_c = exp(sum_k a_k[o_k])``; the depthwise scale is
   multiplied by ``t_c`` to compensate. The factor variables are restored on exit.
   After a linear `LowRankConv2D` the same equalisation is simpler: its output channels
   are its second convolution's, divided (with the bias) by ``sigma_c`` exactly.
3. In every `LowRankConv2D` the rank channels between its two convolutions are balanced
   (data-free cross-layer equalisation, `_balance_rank_channels`); restored on exit.
4. Raw 8-bit pixels ``p`` (0..255) normalised by a centring ``Rescaling`` ``x = s p + o``
   (the zoo's ``p / 127.5 - 1``; ``|128 s + o| <= |s|``) straight into a `Conv2D`: the int8
   grid of ``x`` has its zero point between two steps, so every pixel is off by half a step (1/255 here; measured,
   that alone changes 0.2-0.6% of the zoo classifiers' answers). Rewritten, the
   ``Rescaling`` computes the centred pixels ``c = p - 128``, held exactly (scale 1, zero
   point 0: fake-quantized to [-128, 127], the input to [0, 255]), the convolution's
   kernel is multiplied by ``s`` and the constant ``(128 s + o) sum(w)`` per output channel
   goes into its bias, or into the moving mean of the BatchNormalization that alone reads
   it. Exact in float but at the borders of a "same" convolution, whose zero padding of
   ``c`` is ``x = 128 s + o`` (1/255) instead of 0: an error of the same size as the
   rounding it removes, on the padded taps only (`_center_pixels`).

Only Keras 3 functional models are rewritten (tf_keras / tfmot models are
exported as they are). The rewrites change the model they are given while the block
runs: `to_tflite` applies them to its private copy (`execution.private_copy`), never to
the caller's model.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from kronecker_zoo import graph, kernels

# Layers whose following BatchNormalization the TFLite converter folds into weights.
TFLITE_FOLDS_BATCHNORM_INTO = ("Conv2D", "Conv1D", "Dense", "DepthwiseConv2D", "SeparableConv2D")


def channels_last_batchnorm(layer):
    """Whether ``layer`` is a BatchNormalization over the last axis (the one TFLite folds
    or rewrites; others are left as they are)."""
    return (isinstance(layer, keras.layers.BatchNormalization)
            and layer.axis in (-1, len(layer.input.shape) - 1))


def _depends_on(tensor, source):
    """Whether ``tensor`` is computed from the graph tensor ``source``."""
    seen, stack = set(), [tensor.op]
    while stack:
        op = stack.pop()
        if op is source.op:
            return True
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
    return False


def ends_in_convolution(layer):
    """Whether ``layer``, traced as it runs now (its current execution and lowering),
    outputs a convolution's result plus at most constant biases: the pattern into which
    the TFLite converter folds a following BatchNormalization (reshapes that end in the
    shape they started from are no-ops it removes). True for a linear `LowRankConv2D`
    and for a `KroneckerConv2D` whose last cascade step writes the output channels: the
    "channels" lowering, or the "batch" lowering when no channel axis needs moving
    (factors whose other channel sizes are 1, such as the low-rank shape); False after
    an activation, a strided slice or a transpose."""
    inputs = layer.input
    if not hasattr(inputs, "shape") or None in tuple(inputs.shape[1:]):
        return False  # several inputs (Add, Concatenate, ...) or no static shape
    shape = (1,) + tuple(int(v) for v in inputs.shape[1:])
    traced = tf.function(lambda x: layer(x)).get_concrete_function(
        tf.TensorSpec(shape, inputs.dtype))
    source = traced.graph.inputs[0]
    tensor = traced.graph.outputs[0]
    while True:
        op = tensor.op
        if op.type == "Identity":
            tensor = op.inputs[0]
        elif op.type == "IdentityN":  # a custom gradient's wrapper
            tensor = op.inputs[tensor.value_index]
        elif op.type == "Reshape":  # a chain of reshapes back to its input's shape: a no-op
            start = op.inputs[0]
            while start.op.type == "Reshape":
                start = start.op.inputs[0]
            if not tensor.shape.is_fully_defined() or start.shape != tensor.shape:
                return False
            tensor = start
        elif op.type in ("AddV2", "Add", "BiasAdd"):
            variable = [t for t in op.inputs if _depends_on(t, source)]
            if len(variable) != 1:
                return False
            tensor = variable[0]
        elif op.type == "Conv2D":  # a grouped one (fewer filter than input channels): no
            return op.inputs[1].shape[-2] == op.inputs[0].shape[-1]
        else:
            return op.type == "DepthwiseConv2dNative"


def converter_folds_batchnorm(bn, producer, consumers):
    """Whether the TFLite converter folds ``bn`` into the last weights of ``producer``, the
    layer whose output ``bn`` reads: only where ``bn`` is its one reader (``consumers``,
    `graph.consumers`: no other layer, operation or model output) and nothing (no
    activation) comes between its convolution and ``bn``."""
    if consumers.get(producer.name) != [bn] or not linear_activation(producer):
        return False
    return (type(producer).__name__ in TFLITE_FOLDS_BATCHNORM_INTO
            or ends_in_convolution(producer))


def unfoldable_batchnorms(model):
    """``[(bn_layer, producer)]`` for BatchNormalizations TFLite leaves as MUL + ADD, on
    images ``(N, H, W, C)`` (the only ones rewrite 1 can run as a depthwise convolution;
    others, e.g. after pooling to ``(N, C)``, are left as they are)."""
    consumers = graph.consumers(model)
    found = []
    for layer in model.layers:
        if not channels_last_batchnorm(layer) or len(layer.input.shape) != 4:
            continue
        producer = graph.sole_inbound_layer(layer)
        if producer is None or converter_folds_batchnorm(layer, producer, consumers):
            continue
        found.append((layer, producer))
    return found


def linear_activation(layer):
    """Whether ``layer`` has no activation (or the linear one)."""
    return getattr(layer, "activation", None) in (None, keras.activations.linear)


def _affine(bn):
    """``(s, b)`` with ``bn(x) == x * s + b`` in inference mode (float64)."""
    mean = np.asarray(bn.moving_mean, np.float64)
    sigma = np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
    gamma = np.ones_like(sigma) if bn.gamma is None else np.asarray(bn.gamma, np.float64)
    beta = np.zeros_like(sigma) if bn.beta is None else np.asarray(bn.beta, np.float64)
    scale = gamma / sigma
    return scale, beta - mean * scale, sigma


def _equalize(kron, sigma):
    """Divide ``kron``'s factors (and bias) by ``t``; returns ``t`` (per output channel)."""
    outs = [int(f.shape[-1]) for f in kron.factor_weights]
    factor_scales = kernels.kronecker_channel_scales(np.log(sigma), outs)
    t = np.ones(())
    for f, a in zip(kron.factor_weights, factor_scales):
        f.assign((np.asarray(f) / a).astype(f.dtype))
        t = np.multiply.outer(t, a)
    t = t.reshape(-1)
    if kron.use_bias:
        kron.bias.assign((np.asarray(kron.bias) / t).astype(kron.bias.dtype))
    return t


def _balance_rank_channels(low_rank):
    """Scale ``low_rank``'s rank channels so that both convolutions' weights have the same
    range per rank channel: ``V[..., r] / t_r`` and ``H[:, :, r, :] * t_r`` with
    ``t_r = sqrt(max|V_r| / max|H_r|)`` (exact in float; data-free cross-layer
    equalisation, Nagel et al. 2019). The int8 intermediate tensor, quantized per tensor,
    then no longer carries rank channels of very different ranges."""
    vertical, horizontal = np.asarray(low_rank.vertical), np.asarray(low_rank.horizontal)
    v_range = np.abs(vertical).max(axis=(0, 1, 2))
    h_range = np.abs(horizontal).max(axis=(0, 1, 3))
    t = np.sqrt(np.maximum(v_range, 1e-12) / np.maximum(h_range, 1e-12))
    low_rank.vertical.assign((vertical / t).astype(vertical.dtype))
    low_rank.horizontal.assign((horizontal * t[None, None, :, None]).astype(horizontal.dtype))


class DepthwiseAffine:
    """A BatchNormalization's ``call`` while rewritten: ``depthwise_conv2d(x, s) + b`` with
    per-channel ``scale`` ``s`` and ``shift`` ``b`` (float64 arrays, read when traced)."""

    def __init__(self, scale, shift):
        self.scale = np.asarray(scale, np.float64)
        self.shift = np.asarray(shift, np.float64)

    def __call__(self, inputs, training=None, mask=None):
        scale = tf.constant(self.scale[None, None, :, None], dtype=inputs.dtype)
        return (tf.nn.depthwise_conv2d(inputs, scale, [1, 1, 1, 1], "VALID")
                + tf.constant(self.shift, dtype=inputs.dtype))


class CenteredPixels:
    """A pixel ``Rescaling``'s ``call`` while rewritten (rewrite 4): raw pixels held on
    the int8 grid of [0, 255], minus 128, held on the one of [-128, 127]."""

    def __call__(self, inputs, training=None, mask=None):
        pixels = tf.quantization.fake_quant_with_min_max_args(
            tf.cast(inputs, tf.float32), min=0.0, max=255.0, num_bits=8)
        return tf.quantization.fake_quant_with_min_max_args(
            pixels - 128.0, min=-128.0, max=127.0, num_bits=8)


def _pixel_rescaling_into_conv(model, consumers):
    """``(rescaling, conv, bn)`` where rewrite 4 applies (``bn`` None: the constant goes
    into ``conv``'s bias), else None: a centring ``Rescaling`` of the model's input of
    8-bit pixels (`pixel_range.model_input_range`) read by one plain `Conv2D` alone, float32, which has
    a bias or whose output only a channels-last BatchNormalization reads (no activation
    between)."""
    from kronecker_zoo.models.blocks import PIXEL_RANGE
    from kronecker_zoo.models.pixel_range import model_input_range, rescaling_scale_offset

    if model_input_range(model) != PIXEL_RANGE or len(model.inputs) != 1:
        return None
    for layer in model.layers:
        rescaling = rescaling_scale_offset(layer)
        if rescaling is None:
            continue
        scale, offset = rescaling
        if abs(128.0 * scale + offset) > abs(scale):
            # not centred (x / 255: its own grid holds every pixel exactly already), and
            # the zero padding of p - 128 would be far from the model's
            return None
        source = graph.sole_inbound_layer(layer)
        readers = consumers.get(layer.name, [])
        if not isinstance(source, keras.layers.InputLayer) or len(readers) != 1:
            return None
        conv = readers[0]
        if type(conv) is not keras.layers.Conv2D or conv.dtype_policy.compute_dtype != "float32":
            return None
        if conv.use_bias:
            return layer, conv, None
        bn = consumers.get(conv.name, [])
        if (len(bn) == 1 and channels_last_batchnorm(bn[0]) and linear_activation(conv)
                and graph.sole_inbound_layer(bn[0]) is conv):
            return layer, conv, bn[0]
        return None
    return None


def _center_pixels(rescaling, conv, bn):
    """Apply rewrite 4 to ``rescaling`` -> ``conv`` (-> ``bn``); returns the variables it
    changed with their values, to restore."""
    from kronecker_zoo.models.pixel_range import rescaling_scale_offset

    scale, offset = rescaling_scale_offset(rescaling)
    kernel = np.asarray(conv.kernel, np.float64)
    constant = (128.0 * scale + offset) * kernel.sum(axis=(0, 1, 2))
    changed = [(conv.kernel, np.array(conv.kernel))]
    conv.kernel.assign((kernel * scale).astype(conv.kernel.dtype))
    target = conv.bias if bn is None else bn.moving_mean
    changed.append((target, np.array(target)))
    value = np.asarray(target, np.float64)
    target.assign((value + constant if bn is None else value - constant).astype(target.dtype))
    rescaling.call = CenteredPixels()
    return changed


def rewritten_affine(bn):
    """The `DepthwiseAffine` ``bn`` runs as within `int8_rewrites`, or None."""
    call = bn.__dict__.get("call")
    return call if isinstance(call, DepthwiseAffine) else None


@contextlib.contextmanager
def int8_rewrites(model):
    """Within the block, ``model`` computes the same function in int8-friendly form.

    Yields:
        The names of the BatchNormalization layers rewritten.
    """
    if not isinstance(model, keras.Model) or keras.backend.backend() != "tensorflow":
        yield []
        return
    from kronecker_zoo.layers import KroneckerConv2D, LowRankConv2D

    saved, patched, centered = [], [], []
    consumers = graph.consumers(model)
    try:
        found = _pixel_rescaling_into_conv(model, consumers)
        if found is not None:  # first: a BatchNormalization rewritten below reads its mean
            saved.append(_center_pixels(*found))
            centered.append(found[0])
        for layer in model.layers:
            if isinstance(layer, LowRankConv2D):
                saved.append([(v, np.array(v)) for v in (layer.vertical, layer.horizontal)])
                _balance_rank_channels(layer)
        for bn, producer in unfoldable_batchnorms(model):
            scale, shift, sigma = _affine(bn)
            equalizable = consumers[producer.name] == [bn] and linear_activation(producer)
            if isinstance(producer, KroneckerConv2D) and equalizable:
                variables = list(producer.factor_weights) + (
                    [producer.bias] if producer.use_bias else [])
                saved.append([(v, np.array(v)) for v in variables])
                scale = scale * _equalize(producer, sigma)
            elif isinstance(producer, LowRankConv2D) and equalizable:
                # its output channels are those of the second convolution: divide them
                # (and the bias) by sigma_c, multiply the depthwise scale by it
                variables = [producer.horizontal] + ([producer.bias] if producer.use_bias
                                                     else [])
                saved.append([(v, np.array(v)) for v in variables])
                for v in variables:
                    v.assign((np.asarray(v) / sigma).astype(v.dtype))
                scale = scale * sigma
            bn.call = DepthwiseAffine(scale, shift)
            patched.append(bn)
        yield [bn.name for bn in patched]
    finally:
        for layer in patched + centered:
            layer.__dict__.pop("call", None)
        for pairs in reversed(saved):  # a variable rewritten twice gets its first value
            for variable, value in pairs:
                variable.assign(value)
