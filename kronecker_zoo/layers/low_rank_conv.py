"""LowRankConv2D: the rank-r separable baseline (Jaderberg et al., 2014)."""

import keras
from keras import ops

from kronecker_zoo import ops as kz_ops
from kronecker_zoo.validation import check_image_input, positive_int, positive_pair
from kronecker_zoo.layers.factor_init import factor_initializers
from kronecker_zoo.layers.kronecker_conv import check_valid_extent
from kronecker_zoo.layers.weight_args import WeightArgsMixin


@keras.saving.register_keras_serializable(package="kronecker_zoo")
class LowRankConv2D(WeightArgsMixin, keras.layers.Layer):
    """Convolution with a rank-``r`` spatially separable kernel.

    ``W[i, j, c, o] = sum_{r < rank} V[i, 0, c, r] * H[0, j, r, o]``: a
    ``kh x 1`` convolution from ``in`` to ``rank`` channels, then a ``1 x kw``
    convolution from ``rank`` to ``filters`` channels (no bias or activation in
    between), which equals one convolution with ``W`` everywhere, borders
    included. Parameters: ``rank * (kh * in + kw * filters)``, linear in the
    kernel extent (a Kronecker kernel's are logarithmic).

    Args:
        filters: int. Output channels.
        kernel_size: int or pair ``(kh, kw)``.
        rank: int. Number of separable terms (intermediate channels).
        strides: int or pair. Defaults to `1`.
        padding: `"same"` or `"valid"`. Defaults to `"same"`.
        use_bias, activation, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, kernel_constraint, bias_constraint:
            as in `keras.layers.Conv2D`; the kernel initializer describes the full
            kernel ``W`` (see `KroneckerConv2D`).

    Input shape: `(batch, height, width, in)`.
    Output shape: `(batch, new_height, new_width, filters)`.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        rank,
        strides=1,
        padding="same",
        use_bias=True,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        filters = positive_int(filters, "filters")
        rank = positive_int(rank, "rank")
        self.filters = filters
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.rank = rank
        self.strides = positive_pair(strides, "strides")
        self.padding, _ = kz_ops.normalize_padding(padding)
        self.set_weight_args(
            use_bias,
            activation=activation,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        check_image_input(self, input_shape)
        check_valid_extent(self, input_shape, self.kernel_size)
        in_channels = input_shape[-1]
        kh, kw = self.kernel_size
        shapes = [(kh, 1, in_channels, self.rank), (1, kw, self.rank, self.filters)]
        full_shape = (kh, kw, in_channels, self.filters)
        # The rank sum is carried by the contraction over the middle channels.
        inits = factor_initializers(self.kernel_initializer, full_shape, shapes, self.rank)
        self.vertical, self.horizontal = [
            self.add_kernel_weight(name, shape, init)
            for name, shape, init in zip(("vertical", "horizontal"), shapes, inits)
        ]
        self.bias = self.add_bias(self.filters)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})

    @property
    def kernel(self):
        """The materialised kernel ``(kh, kw, in, filters)``."""
        return ops.einsum("hcr,wro->hwco", self.vertical[:, 0], self.horizontal[0])

    def call(self, inputs):
        sh, sw = self.strides
        x = kz_ops.conv2d(inputs, self.vertical, (sh, 1), self.padding)
        x = kz_ops.conv2d(x, self.horizontal, (1, sw), self.padding)
        if self.use_bias:
            x = x + self.bias
        return self.activation(x)

    def compute_output_shape(self, input_shape):
        h = kz_ops.conv_output_length(input_shape[1], self.kernel_size[0],
                                      self.strides[0], self.padding)
        w = kz_ops.conv_output_length(input_shape[2], self.kernel_size[1],
                                      self.strides[1], self.padding)
        return (input_shape[0], h, w, self.filters)

    def dense_equivalent_params(self):
        """Parameters of a plain Conv2D with the same kernel extent and channels."""
        kh, kw = self.kernel_size
        cin = int(self.vertical.shape[2])
        return kh * kw * cin * self.filters + (self.filters if self.use_bias else 0)

    def macs(self, input_hw):
        """Multiply-accumulates per example at spatial input size ``(H, W)``."""
        kh, kw = self.kernel_size
        cin = int(self.vertical.shape[2])
        mid_h = kz_ops.conv_output_length(input_hw[0], kh, self.strides[0], self.padding)
        out_w = kz_ops.conv_output_length(input_hw[1], kw, self.strides[1], self.padding)
        return mid_h * input_hw[1] * kh * cin * self.rank + mid_h * out_w * kw * self.rank * (
            self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "rank": self.rank,
                "strides": self.strides,
                "padding": self.padding,
            }
        )
        config.update(self.weight_args_config())
        return config
