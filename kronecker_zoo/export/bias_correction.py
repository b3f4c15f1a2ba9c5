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

import keras
import numpy as np
import tensorflow as tf

from kronecker_zoo import graph

# Images per forward pass when measuring the layers' input means.
_CHUNK = 16


def int8_rounded(kernel):
    """``kernel`` after TFLite's per-output-channel symmetric int8 rounding (last axis =
    output channels; scale ``max |w| / 127`` per channel)."""
    kernel = np.asarray(kernel, np.float64)
    scale = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(kernel / scale), -127, 127) * scale


def _single_consumer_batchnorm(layer, consumers):
    """The BatchNormalization the converter folds into ``layer``, or None."""
    after = consumers.get(layer.name, [])
    if len(after) != 1 or not isinstance(after[0], keras.layers.BatchNormalization):
        return None
    bn = after[0]
    if layer.activation is not keras.activations.linear or bn.beta is None:
        return None
    if len(graph.inbound_layers(bn)) != 1:  # a shared BatchNormalization: not folded
        return None
    if bn.axis not in (-1, len(bn.input.shape) - 1):
        return None
    return bn


def _targets(model):
    """``[(layer, bn or None)]``: Conv2D (ungrouped, channels last) and Dense (2-D input)
    layers, called once, whose folded bias can absorb a correction."""
    consumers = graph.consumers(model)
    found = []
    for layer in model.layers:
        if type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
            continue
        if getattr(layer, "groups", 1) != 1 or len(graph.inbound_layers(layer)) != 1:
            continue
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            continue
        # a Dense on (N, ..., C) becomes a BATCH_MATMUL (per-tensor weights): not modelled
        if isinstance(layer, keras.layers.Dense) and len(layer.input.shape) != 2:
            continue
        bn = _single_consumer_batchnorm(layer, consumers)
        if bn is None and not layer.use_bias:
            continue
        found.append((layer, bn))
    return found


def has_bias_correction_targets(model):
    """Whether `int8_bias_correction` would change anything in ``model``."""
    return isinstance(model, keras.Model) and bool(_targets(model))


def _input_means(model, layers, batches):
    """Per layer, the mean of its input over the calibration images (over the batch axis
    only: ``(H, W, C)`` for a convolution's input, ``(C,)`` for a Dense layer's)."""
    probe = keras.Model(model.inputs, [layer.input for layer in layers])
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


def _folded_kernel(layer, bn):
    kernel = np.asarray(layer.kernel, np.float64)
    if bn is None:
        return kernel
    gamma = 1.0 if bn.gamma is None else np.asarray(bn.gamma, np.float64)
    return kernel * gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)


def rounding_shift(layer, kernel, mean_input):
    """Per output channel, the mean output shift that int8 rounding of ``kernel`` (the
    folded kernel of ``layer``) causes on inputs whose mean is ``mean_input``."""
    error = int8_rounded(kernel) - kernel
    if isinstance(layer, keras.layers.Dense):
        return mean_input @ error
    shifted = tf.nn.conv2d(mean_input[None], error, strides=layer.strides,
                           padding=layer.padding.upper(), dilations=layer.dilation_rate)
    return np.asarray(shifted, np.float64).mean(axis=(0, 1, 2))


@contextlib.contextmanager
def int8_bias_correction(model, batches):
    """Within the block, the biases of ``model``'s Conv2D / Dense layers (or of the
    BatchNormalizations folded into them) cancel the mean shift of their int8 weights.

    Args:
        model: a Keras 3 functional model (anything else is left as it is).
        batches: the calibration images, a list of ``(N, H, W, C)`` float arrays.

    Yields:
        The names of the corrected layers. Every variable is restored on exit.
    """
    if not isinstance(model, keras.Model) or not batches:
        yield []
        return
    targets = _targets(model)
    if not targets:
        yield []
        return
    means = _input_means(model, [layer for layer, _ in targets], batches)
    saved = []
    try:
        for (layer, bn), mean_input in zip(targets, means):
            shift = rounding_shift(layer, _folded_kernel(layer, bn), mean_input)
            variable = layer.bias if bn is None else bn.beta
            saved.append((variable, np.array(variable)))
            variable.assign((np.asarray(variable, np.float64) - shift).astype(variable.dtype))
        yield [layer.name for layer, _ in targets]
    finally:
        for variable, value in reversed(saved):
            variable.assign(value)
