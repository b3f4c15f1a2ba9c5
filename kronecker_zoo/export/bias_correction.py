"""Bias correction of int8 weight rounding for full-integer exports.

The TFLite converter quantizes the kernel of every CONV_2D and FULLY_CONNECTED per
output channel, symmetric, on ``[-127, 127]`` (after folding a following
BatchNormalization into it):

    W_q = round(W / s) * s,    s_c = max |W[..., c]| / 127.

The rounding error ``E = W_q - W`` is fixed, so it does not average out: it shifts each
output channel's mean by ``mean(conv(x, E))`` (on a constant background, the same offset
at every pixel of every image). The convolution is linear, so the mean shift over a
calibration set equals ``mean_{h,w} conv(mean_n x, E)[h, w, c]``: only the
per-pixel mean of the layer's input is needed. Subtracting it from the bias the converter
folds (the layer's own, or the following BatchNormalization's ``beta``) makes the int8
layer's mean output equal the float layer's (Nagel et al. 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction", section 4.2, with the input mean
measured on the calibration data rather than inferred from BatchNormalization).

Factored layers are corrected the same way through the one kernel they equal: a
`KroneckerConv2D` run factored is a cascade of convolutions whose weights are its
factors, each rounded per output channel of its step, so its int8 kernel is
``sum_r F_0q[r] (x) F_1q[r]`` (`_kronecker_kernels`); a `LowRankConv2D` is two rounded
convolutions, a SeparableConv2D a rounded DEPTHWISE_CONV_2D (one scale per channel) and
a rounded 1x1 CONV_2D. A BatchNormalization after them takes the correction in its
``beta`` where the converter folds it (`int8_rewrites.converter_folds_batchnorm`: after a
linear `LowRankConv2D`, or a `KroneckerConv2D` whose last step writes its output
channels), else in the bias of the depthwise convolution `int8_rewrites` runs it as.

The float model changes by that shift (a few thousandths of the channels' spread); the
int8 file usually gets closer to the *original* float model. Not always: where most
pixels are a constant background, that background's *output* rounding is just as
coherent, and moving the bias moves it across rounding boundaries (measured:
`separable_resnet_8` loses 8.6 dB SQNR with the correction, `resnet_8` gains 2.9 dB).
So `to_tflite(..., bias_correction="auto")` converts both ways and keeps the closer file.
`to_tflite` applies it, for "int8" only, to its private copy of the model; the
caller's model is never modified.
"""

import contextlib
import functools

import keras
import numpy as np
import tensorflow as tf

from kronecker_zoo import graph
from kronecker_zoo import ops as kz_ops
from kronecker_zoo.export.int8_rewrites import (
    channels_last_batchnorm,
    converter_folds_batchnorm,
    linear_activation,
    rewritten_affine,
    unfoldable_batchnorms,
)

# Images per forward pass when measuring the layers' input means.
_CHUNK = 16


def _float64(variable):
    """A layer's weight as a float64 NumPy array."""
    return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)


def int8_rounded(kernel, axes=None):
    """``kernel`` after TFLite's symmetric int8 rounding, one scale ``max |w| / 127`` per
    slice: over ``axes`` (default: all but the last, i.e. per output channel)."""
    kernel = np.asarray(kernel, np.float64)
    axes = tuple(range(kernel.ndim - 1)) if axes is None else tuple(axes)
    scale = np.abs(kernel).max(axis=axes, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(kernel / scale), -127, 127) * scale


# -- what the file computes: each layer as one dense kernel (kh, kw, in, out) -----------
def _kronecker_kernels(layer):
    """``(K, K_int8)`` of a `KroneckerConv2D` as exported. Factored, each factor is the
    weight of a convolution of the cascade: the first step's output channels are
    ``(rank, out)`` (one scale per rank term and channel), the last step's input channels
    are ``(rank, in)`` (one scale per output channel over every rank term); a middle step
    (three or more factors) is taken per rank term. Materialised, the product kernel is
    one convolution's weight."""
    factors = [_float64(f) for f in layer.factor_weights]  # (rank, kh, kw, in, out)
    rank = factors[0].shape[0]

    def product(fs):
        return sum(functools.reduce(np.kron, [f[r] for f in fs]) for r in range(rank))

    kernel = product(factors)
    if layer.resolved_execution != "factored":
        return kernel, int8_rounded(kernel)
    lowering = layer.resolved_lowering or "batch"
    last = kz_ops.step_order(layer.factors, layer.strides, "auto", lowering, layer.rank)[-1]
    rounded = [int8_rounded(f, (0, 1, 2, 3) if k == last else (1, 2, 3))
               for k, f in enumerate(factors)]
    return kernel, product(rounded)


def _low_rank_kernels(layer):
    """``(K, K_int8)`` of a `LowRankConv2D`: two convolutions, each rounded per its output
    channels (the rank channels, then the filters)."""
    vertical = _float64(layer.vertical)[:, 0]  # (kh, in, rank)
    horizontal = _float64(layer.horizontal)[0]  # (kw, rank, out)

    def kernel(v, h):
        return np.einsum("hcr,wro->hwco", v, h)

    return (kernel(vertical, horizontal),
            kernel(int8_rounded(vertical), int8_rounded(horizontal)))


def _depthwise_as_dense(depthwise):
    """A depthwise kernel ``(kh, kw, in, mult)`` as the dense ``(kh, kw, in, in * mult)``
    kernel it equals (output channel ``c * mult + m`` reads input channel ``c`` only)."""
    kh, kw, cin, mult = depthwise.shape
    dense = np.zeros((kh, kw, cin, cin, mult))
    dense[:, :, np.arange(cin), np.arange(cin), :] = depthwise
    return dense.reshape(kh, kw, cin, cin * mult)


def _depthwise_kernels(layer):
    """``(K, K_int8)`` of a DepthwiseConv2D: one scale per output channel ``(in, mult)``."""
    depthwise = _float64(layer.kernel)
    return (_depthwise_as_dense(depthwise),
            _depthwise_as_dense(int8_rounded(depthwise, (0, 1))))


def _separable_kernels(layer):
    """``(K, K_int8)`` of a SeparableConv2D: a DEPTHWISE_CONV_2D then a 1x1 CONV_2D, each
    rounded per its output channels."""
    depthwise = _float64(layer.depthwise_kernel)
    pointwise = _float64(layer.pointwise_kernel)[0, 0]  # (in * mult, out)

    def kernel(d, p):
        return np.einsum("hwcd,do->hwco", _depthwise_as_dense(d), p)

    return (kernel(depthwise, pointwise),
            kernel(int8_rounded(depthwise, (0, 1)), int8_rounded(pointwise)))


def _plain_kernels(layer):
    kernel = _float64(layer.kernel)
    return kernel, int8_rounded(kernel)


def _kernel_builders():
    from kronecker_zoo.layers import KroneckerConv2D, LowRankConv2D

    return {keras.layers.Conv2D: _plain_kernels, keras.layers.Dense: _plain_kernels,
            keras.layers.DepthwiseConv2D: _depthwise_kernels,
            keras.layers.SeparableConv2D: _separable_kernels,
            KroneckerConv2D: _kronecker_kernels, LowRankConv2D: _low_rank_kernels}


def _folded_batchnorm(layer, consumers):
    """The BatchNormalization the converter folds into ``layer``'s last weights, or None."""
    after = consumers.get(layer.name, [])
    if len(after) != 1 or not channels_last_batchnorm(after[0]):
        return None
    bn = after[0]
    if bn.beta is None or len(graph.inbound_layers(bn)) != 1:  # shared: not folded
        return None
    return bn if converter_folds_batchnorm(bn, layer, consumers) else None


def _rewritten_batchnorm(layer, consumers, rewritten):
    """The BatchNormalization after ``layer`` that `int8_rewrites` runs as a depthwise
    convolution with a bias (so the correction can go there), or None."""
    after = consumers.get(layer.name, [])
    if len(after) == 1 and after[0].name in rewritten and linear_activation(layer):
        return after[0]
    return None


def _targets(model):
    """``[(layer, bn, where)]``: layers whose int8 weight rounding the file's biases can
    cancel, ``where`` one of "folded" (``bn.beta``, folded by the converter), "bias" (the
    layer's own bias) or "rewritten" (the depthwise bias `int8_rewrites` gives ``bn``).
    Convolutions must be channels-last and ungrouped, a Dense layer's input 2-D (on more
    axes it becomes a BATCH_MATMUL with per-tensor weights, not modelled), each layer
    called once."""
    builders = _kernel_builders()
    consumers = graph.consumers(model)
    rewritten = {bn.name for bn, _ in unfoldable_batchnorms(model)}
    found = []
    for layer in model.layers:
        if type(layer) not in builders or len(graph.inbound_layers(layer)) != 1:
            continue
        if getattr(layer, "groups", 1) != 1:
            continue
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            continue
        if isinstance(layer, keras.layers.Dense) and len(layer.input.shape) != 2:
            continue
        bn = _folded_batchnorm(layer, consumers)
        if bn is not None:
            found.append((layer, bn, "folded"))
        elif getattr(layer, "use_bias", False) and layer.bias is not None:
            found.append((layer, None, "bias"))
        else:
            bn = _rewritten_batchnorm(layer, consumers, rewritten)
            if bn is not None:
                found.append((layer, bn, "rewritten"))
    return found


def has_bias_correction_targets(model):
    """Whether `int8_bias_correction` would change anything in ``model``."""
    return isinstance(model, keras.Model) and bool(_targets(model))


def _input_means(model, layers, batches):
    """Per layer, the mean of its input over the calibration images (over the batch axis
    only: ``(H, W, C)`` for a convolution's input, ``(C,)`` for a Dense layer's)."""
    probe = keras.Model(model.inputs[0], [layer.input for layer in layers])  # one input
    sums, count = None, 0
    for batch in batches:
        for start in range(0, len(batch), _CHUNK):
            chunk = batch[start:start + _CHUNK]
            outputs = probe(chunk, training=False)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            total = [np.asarray(o, np.float64).sum(axis=0) for o in outputs]
            sums = total if sums is None else [s + t for s, t in zip(sums, total)]
            count += len(chunk)
    return [s / count for s in sums]


def rounding_shift(layer, mean_input):
    """Per output channel, the mean shift of ``layer``'s output (before bias and
    activation) that int8 rounding of its weights, as the file stores them, causes on
    inputs whose mean is ``mean_input``: ``mean_{h,w} conv(mean_input, K_int8 - K)``
    (``mean_input @ (K_int8 - K)`` for a Dense layer)."""
    kernel, rounded = _kernel_builders()[type(layer)](layer)
    error = rounded - kernel
    if isinstance(layer, keras.layers.Dense):
        return mean_input @ error
    strides = tuple(layer.strides)
    dilation = tuple(getattr(layer, "dilation_rate", (1, 1)))
    extent = tuple((k - 1) * d + 1 for k, d in zip(error.shape[:2], dilation))
    padded = kz_ops.pad_input(tf.constant(mean_input[None]), extent, strides,
                              layer.padding, getattr(layer, "padding_mode", "zeros"))
    shifted = tf.nn.conv2d(padded, error, strides=strides, padding="VALID",
                           dilations=dilation)
    return np.asarray(shifted, np.float64).mean(axis=(0, 1, 2))


def _cancel(layer, bn, where, shift):
    """Cancel ``shift`` (per channel, at ``layer``'s output) in the bias the file folds;
    returns the callable that restores the previous value."""
    if where == "rewritten":
        affine = rewritten_affine(bn)
        previous = affine.shift
        affine.shift = previous - shift * affine.scale
        return functools.partial(setattr, affine, "shift", previous)
    if where == "bias":
        variable, scaled = layer.bias, shift
    else:  # "folded": the BatchNormalization's scale multiplies the layer's output
        gamma = 1.0 if bn.gamma is None else np.asarray(bn.gamma, np.float64)
        sigma = np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
        variable, scaled = bn.beta, shift * gamma / sigma
    previous = np.array(variable)
    variable.assign((np.asarray(variable, np.float64) - scaled).astype(variable.dtype))
    return functools.partial(variable.assign, previous)


@contextlib.contextmanager
def int8_bias_correction(model, batches):
    """Within the block, the biases the int8 file folds (a layer's own, the beta of a
    BatchNormalization folded into it, or the bias `int8_rewrites` gives a
    BatchNormalization it cannot fold) cancel the mean shift that int8 rounding of the
    layer's weights causes: Conv2D, Dense, DepthwiseConv2D, SeparableConv2D,
    `KroneckerConv2D` (each factor rounded as the exported cascade stores it) and
    `LowRankConv2D`. Enter it inside `int8_rewrites` and `forced_execution`: it corrects
    the weights and the execution the file is traced with.

    Args:
        model: a Keras 3 functional model (anything else is left as it is).
        batches: the calibration images, a list of ``(N, H, W, C)`` float arrays.

    Yields:
        The names of the corrected layers. Every value is restored on exit.
    """
    if not isinstance(model, keras.Model) or not batches:
        yield []
        return
    targets = _targets(model)
    if not targets:
        yield []
        return
    means = _input_means(model, [layer for layer, _, _ in targets], batches)
    restore = []
    try:
        for (layer, bn, where), mean_input in zip(targets, means):
            restore.append(_cancel(layer, bn, where, rounding_shift(layer, mean_input)))
        yield [layer.name for layer, _, _ in targets]
    finally:
        for undo in reversed(restore):
            undo()
