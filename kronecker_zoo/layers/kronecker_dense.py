"""KroneckerDense: a fully connected layer whose matrix is a sum of Kronecker products."""

import math

import keras

from kronecker_zoo import kernels as kernel_math
from kronecker_zoo import ops as kz_ops
from kronecker_zoo.layers.factor_init import factor_initializers
from kronecker_zoo.layers.kronecker_conv import normalize_factors
from kronecker_zoo.layers.weight_args import WeightArgsMixin
from kronecker_zoo.validation import positive_int


@keras.saving.register_keras_serializable(package="kronecker_zoo")
class KroneckerDense(WeightArgsMixin, keras.layers.Layer):
    """Dense layer with ``W = sum_{r < rank} A_r (x) B_r (x) ...`` (Zhou et al., 2015).

    Factor ``k`` has shape ``(in_k, out_k)`` (first factor outermost), so the layer
    maps ``prod in_k`` features to ``units = prod out_k``. It runs factored: the
    input is reshaped to ``(batch, in_0, ..., in_{m-1})`` and each factor is a
    small contraction (see `macs`) instead of one ``in x units`` product;
    ``W`` is formed only when the ``kernel`` property is read.

    Args:
        units: int. Output features; must equal the product of the factors' ``out``.
        factors: list of ``(in, out)`` pairs, two or more, outermost first.
        rank: int. Number of Kronecker products summed. Defaults to `1`.
        use_bias, activation, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, kernel_constraint, bias_constraint:
            as in `keras.layers.Dense`; the kernel initializer describes the full
            matrix (see `KroneckerConv2D`), kernel regularizers/constraints act on
            each factor.

    Input shape: `(..., prod in_k)`. Output shape: `(..., units)`.

    Example:

    >>> layer = KroneckerDense(256, factors=[(16, 16), (48, 16)])
    >>> layer(np.zeros((2, 768), "float32")).shape
    (2, 256)
    """

    def __init__(
        self,
        units,
        factors,
        rank=1,
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
        units = positive_int(units, "units")
        rank = positive_int(rank, "rank")
        self.units = units
        self.factors = normalize_factors(factors, 2)
        if len(self.factors) > kz_ops.MAX_MATMUL_FACTORS:
            raise ValueError(f"KroneckerDense takes at most {kz_ops.MAX_MATMUL_FACTORS} "
                             f"factors. Received: {len(self.factors)}")
        self.rank = rank
        out = math.prod(s[1] for s in self.factors)
        if out != units:
            raise ValueError(
                f"The factors' out multiply to {' x '.join(str(s[1]) for s in self.factors)}"
                f" = {out}, but units is {units}. Received: factors={self.factors}, "
                f"units={units}"
            )
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
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        in_features = input_shape[-1]
        want = math.prod(s[0] for s in self.factors)
        if in_features != want:
            raise ValueError(
                f"The factors' in multiply to {' x '.join(str(s[0]) for s in self.factors)}"
                f" = {want}, but the input has {in_features} features. Received: "
                f"factors={self.factors}, input_shape={tuple(input_shape)}"
            )
        shapes = [(self.rank,) + s for s in self.factors]
        inits = factor_initializers(self.kernel_initializer, (want, self.units), shapes,
                                    self.rank)
        self.factor_weights = [
            self.add_kernel_weight(f"factor_{k}", shape, init)
            for k, (shape, init) in enumerate(zip(shapes, inits))
        ]
        self.bias = self.add_bias(self.units)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: in_features})

    @property
    def kernel(self):
        """The materialised matrix ``(in, units)``."""
        total = None
        for r in range(self.rank):
            term = kernel_math.kron(*[f[r] for f in self.factor_weights])
            total = term if total is None else total + term
        return total

    def call(self, inputs):
        outputs = kz_ops.kronecker_matmul(inputs, self.factor_weights)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def dense_equivalent_params(self):
        """Parameters of a plain Dense layer of the same size."""
        want = math.prod(s[0] for s in self.factors)
        return want * self.units + (self.units if self.use_bias else 0)

    def macs(self, input_hw=None):
        """Multiply-accumulates per input vector of the factored execution.

        Each step contracts one factor's ``in_k -> out_k`` for every combination of
        the other axes, in the cheapest order (`kronecker_zoo.ops.kronecker_matmul_order`),
        e.g. innermost first: ``rank * sum_k prod_{l<k} in_l * prod_{l>k} out_l * in_k *
        out_k``.
        """
        return kz_ops.kronecker_matmul_macs(self.factors, self.rank)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "factors": [list(s) for s in self.factors],
                "rank": self.rank,
            }
        )
        config.update(self.weight_args_config())
        return config

