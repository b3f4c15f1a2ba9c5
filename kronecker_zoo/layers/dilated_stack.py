"""DilatedStack: a cascade of dilated convolutions with any dilation schedule."""

import keras
from keras import ops

from kronecker_zoo import kernels as kernel_math
from kronecker_zoo import ops as kz_ops
from kronecker_zoo.kernels import _pair
from kronecker_zoo.layers.weight_args import positive_int


def _per_layer(value, n, name, normalize):
    """Broadcast one value to ``n`` layers, or validate a list of ``n`` values."""
    try:
        if isinstance(value, (list, tuple)) and len(value) == n:
            return [normalize(v) for v in value]
        return [normalize(value)] * n
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be one value or a list of {n} values (one per dilation "
            f"rate). Received: {name}={value!r}"
        ) from None


def _kernel_sizes(value, n):
    """An int or ``(kh, kw)`` pair for all layers, or one entry per layer.

    A two-int tuple is a pair (for every layer) unless ``n != 2``; to give two
    layers different square sizes write ``[(3, 3), (5, 5)]``.
    """
    per_layer = isinstance(value, (list, tuple)) and len(value) == n and (
        n != 2 or any(isinstance(v, (list, tuple)) for v in value))
    if per_layer:
        return [_pair(v, "kernel_size") for v in value]
    return [_pair(value, "kernel_size")] * n


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
        filters: int, or one int per layer.
        kernel_size: int or pair, or one per layer. Defaults to `3`.
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
            rates = [_pair(d, "dilation_rates") for d in dilation_rates]
        except TypeError:
            rates = []
        if not rates:
            raise ValueError(
                "`dilation_rates` must be a non-empty list of positive ints or pairs. "
                f"Received: dilation_rates={dilation_rates!r}"
            )
        n = len(rates)
        self.dilation_rates = rates
        self.filters = _per_layer(filters, n, "filters", lambda v: positive_int(v, "filters"))
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
                kernel_initializer=kernel_initializer,
                bias_initializer=bias_initializer,
                kernel_regularizer=kernel_regularizer,
                bias_regularizer=bias_regularizer,
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
        if len(input_shape) != 4:
            raise ValueError(
                "DilatedStack expects a 4-D input (batch, height, width, channels). "
                f"Received input_shape={tuple(input_shape)}"
            )
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
