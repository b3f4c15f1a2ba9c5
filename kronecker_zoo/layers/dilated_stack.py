"""DilatedStack: a cascade of dilated convolutions with any dilation schedule."""

import keras
import numpy as np
from keras import ops

from kronecker_zoo import kernels as kernel_math
from kronecker_zoo import ops as kz_ops
from kronecker_zoo.layers.factor_init import reseeded
from kronecker_zoo.validation import check_image_input, positive_int, positive_pair


def _filters(value, n):
    """One int for all ``n`` layers, or a list of exactly ``n`` ints (one per rate)."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                "`filters` must be one int or a list with one int per dilation rate: got "
                f"{len(value)} filters for {n} dilation rates. Received: filters={value!r}"
            )
        return [positive_int(v, "filters") for v in value]
    return [positive_int(value, "filters")] * n


def _kernel_sizes(value, n):
    """An int (square, every layer) or exactly ``n`` entries, each an int or ``(kh, kw)``.

    A list is always per layer: ``(3, 5)`` with two rates is 3x3 then 5x5; the same
    non-square kernel on every layer is ``[(3, 5)] * n``.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            hint = ""
            if len(value) == 2 and all(isinstance(v, int) for v in value):
                hint = (f" For a {value[0]}x{value[1]} kernel on every layer write "
                        f"kernel_size=[{tuple(value)!r}] * {n}.")
            raise ValueError(
                "`kernel_size` must be an int (the same square kernel for every layer) or "
                "a list with one int or (kh, kw) per dilation rate: got "
                f"{len(value)} kernel sizes for {n} dilation rates.{hint} "
                f"Received: kernel_size={value!r}"
            )
        return [positive_pair(v, "kernel_size") for v in value]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            "`kernel_size` must be an int or a list with one int or (kh, kw) per "
            f"dilation rate. Received: kernel_size={value!r}"
        )
    return [positive_pair(value, "kernel_size")] * n


@keras.saving.register_keras_serializable(package="kronecker_zoo")
class DilatedStack(keras.layers.Layer):
    """A stack of convolutions, layer ``l`` dilated by ``dilation_rates[l]``.

    ``y_{l+1} = act(conv(y_l, K_l, dilation=d_l) + b_l)``. The seed's schedule
    ``d_l = a**l`` with ``a x a`` kernels grows the receptive field exponentially;
    without activations and biases the stack is one convolution with
    ``kernels.collapse([K_0, ..., K_L], dilation_rates)`` (see `collapsed`).

    Borders: with ``padding="same"`` each layer zero-pads its own input (Keras'
    usual behaviour), so near the borders the stack differs from the collapsed
    convolution (and, with even kernel sizes, everywhere: each layer's "same"
    padding puts the extra row after the data, and those offsets add up
    differently from the collapsed kernel's). With ``pad_once=True`` the input is padded once, by the stack's
    receptive field, and every layer runs "valid": the linear stack then equals
    the collapsed convolution with "same" padding everywhere, borders included.

    Args:
        filters: int, or a list with one int per dilation rate.
        kernel_size: int (same square kernel for all layers), or a list with one
            int or ``(kh, kw)`` per dilation rate; a length mismatch raises.
            Defaults to `3`.
        dilation_rates: one int or pair per layer. Defaults to `(1, 2, 4)`.
        activation: applied after every layer, `None` for a linear stack.
        use_bias: bool. Defaults to `True`.
        padding: `"same"` or `"valid"`. Defaults to `"same"`.
        pad_once: bool. With `"same"`, pad the input once instead of per layer.
            Defaults to `False`.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer:
            passed to every `keras.layers.Conv2D`.

    Input shape: `(batch, height, width, channels)`.
    Output shape: `(batch, new_height, new_width, filters[-1])`.
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        dilation_rates=(1, 2, 4),
        activation=None,
        use_bias=True,
        padding="same",
        pad_once=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        try:
            rates = [positive_pair(d, "dilation_rates") for d in dilation_rates]
        except TypeError:
            rates = []
        if not rates:
            raise ValueError(
                "`dilation_rates` must be a non-empty list of positive ints or pairs. "
                f"Received: dilation_rates={dilation_rates!r}"
            )
        n = len(rates)
        self.dilation_rates = rates
        self.filters = _filters(filters, n)
        self.kernel_size = _kernel_sizes(kernel_size, n)
        self.padding, _ = kz_ops.normalize_padding(padding)
        self.pad_once = bool(pad_once)
        self.use_bias = use_bias
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        layer_padding = "valid" if (self.pad_once or self.padding == "valid") else "same"
        self.convs = [
            keras.layers.Conv2D(
                f,
                k,
                dilation_rate=d,
                padding=layer_padding,
                activation=self.activation,
                use_bias=use_bias,
                kernel_initializer=reseeded(self.kernel_initializer, i),
                bias_initializer=reseeded(self.bias_initializer, i),
                kernel_regularizer=kernel_regularizer,
                bias_regularizer=bias_regularizer,
                dtype=self.dtype_policy,
                name=f"conv{i}",
            )
            for i, (f, k, d) in enumerate(zip(self.filters, self.kernel_size, rates))
        ]
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def receptive_field(self):
        """``(h, w)`` receptive field of the stack in input pixels."""
        return kernel_math.receptive_field(self.kernel_size, self.dilation_rates)

    def build(self, input_shape):
        check_image_input(self, input_shape, known_channels=False)
        shape = tuple(input_shape)
        if self.padding == "same" and self.pad_once:
            rf = self.receptive_field
            shape = (shape[0],) + tuple(
                None if s is None else s + r - 1 for s, r in zip(shape[1:3], rf)) + shape[3:]
        for conv in self.convs:
            if conv.padding == "valid":
                for axis in (1, 2):
                    if shape[axis] is not None and shape[axis] < (
                            conv.kernel_size[axis - 1] - 1) * conv.dilation_rate[axis - 1] + 1:
                        raise ValueError(
                            "DilatedStack with padding='valid' needs inputs at least as large "
                            f"as its receptive field {self.receptive_field}. "
                            f"Received input_shape={tuple(input_shape)}"
                        )
            conv.build(shape)
            shape = conv.compute_output_shape(shape)

    def call(self, inputs):
        x = inputs
        if self.padding == "same" and self.pad_once:
            x = kz_ops.pad_input(x, self.receptive_field, (1, 1), "same", "zeros")
        for conv in self.convs:
            x = conv(x)
        return x

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if self.padding == "valid":
            rf = self.receptive_field
            if (h is not None and h < rf[0]) or (w is not None and w < rf[1]):
                raise ValueError(
                    "DilatedStack with padding='valid' needs inputs at least as large as its "
                    f"receptive field {rf}. Received input_shape={tuple(input_shape)}")
            h = None if h is None else h - rf[0] + 1
            w = None if w is None else w - rf[1] + 1
        return (input_shape[0], h, w, self.filters[-1])

    def collapsed(self):
        """``(kernel, bias)`` of the one convolution equal to the linear stack.

        ``kernel = collapse(K_0..K_L, dilation_rates)``; the bias is propagated,
        ``b <- b @ sum_u K_l[u] + b_l``. Exact for a stack without activations
        (everywhere with ``pad_once=True`` or "valid", away from borders otherwise).
        ``bias`` is `None` when the stack has no biases.
        """
        kernel = kernel_math.collapse([c.kernel for c in self.convs], self.dilation_rates)
        if not self.use_bias:
            return kernel, None
        bias = None
        for conv in self.convs:
            summed = ops.sum(conv.kernel, axis=(0, 1))
            bias = conv.bias if bias is None else ops.matmul(bias, summed) + conv.bias
        return kernel, bias

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": [list(k) for k in self.kernel_size],
                "dilation_rates": [list(d) for d in self.dilation_rates],
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "padding": self.padding,
                "pad_once": self.pad_once,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config
