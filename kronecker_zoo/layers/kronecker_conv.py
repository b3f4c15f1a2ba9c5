"""KroneckerConv2D: a convolution whose kernel is a sum of Kronecker products."""

import math

import keras
from keras import ops

from kronecker_zoo import kernels as kernel_math
from kronecker_zoo import ops as kz_ops
from kronecker_zoo.validation import check_image_input, int_sequence, positive_int, positive_pair
from kronecker_zoo.layers.factor_init import factor_initializers
from kronecker_zoo.layers.weight_args import WeightArgsMixin

EXECUTIONS = ("auto", "factored", "materialized")
LOWERINGS = ("auto",) + kz_ops.LOWERINGS
# Spatial size assumed by execution="auto" when the input size is unknown at build.
NOMINAL_INPUT_SIZE = 64


def normalize_factors(factors, ndim, name="factors"):
    """Validate a list of >= 2 factor shapes of ``ndim`` positive ints each."""
    what = "(kh, kw, in, out)" if ndim == 4 else "(in, out)"
    try:  # Python, NumPy or backend integers, kept as Python ints (a JSON config)
        shapes = [int_sequence(f, name) for f in factors]
    except (TypeError, ValueError):
        shapes = None
    if shapes is None or len(shapes) < 2 or any(len(s) != ndim for s in shapes):
        raise ValueError(
            f"`{name}` must be a list of two or more {what} tuples of positive ints, "
            f"outermost factor first. Received: {name}={factors!r}"
        )
    return shapes


def check_valid_extent(layer, input_shape, extent):
    """Raise if a "valid" convolution of ``extent`` does not fit the input, or if
    mirrored "same" padding would need more rows than the input has."""
    mode = getattr(layer, "padding_mode", "zeros")
    if layer.padding == "same" and mode != "zeros":
        for axis, name in ((1, "height"), (2, "width")):
            size = input_shape[axis]
            if size is None:
                continue
            pad = max(kz_ops.same_padding_amounts(size, extent[axis - 1],
                                                  layer.strides[axis - 1]))
            limit = size - 1 if mode == "reflect" else size
            if pad > limit:
                raise ValueError(
                    f"{layer.__class__.__name__} with padding_mode={mode!r} pads the "
                    f"{name} by {pad}, which needs an input {name} of at least "
                    f"{pad + (1 if mode == 'reflect' else 0)}. "
                    f"Received input_shape={tuple(input_shape)}"
                )
        return
    if layer.padding != "valid":
        return
    for axis, name in ((1, "height"), (2, "width")):
        size = input_shape[axis]
        if size is not None and size < extent[axis - 1]:
            raise ValueError(
                f"{layer.__class__.__name__} with padding='valid' needs an input {name} of "
                f"at least {extent[axis - 1]} (the kernel extent). "
                f"Received input_shape={tuple(input_shape)}"
            )


def _product_string(values):
    return " x ".join(str(v) for v in values)


@keras.saving.register_keras_serializable(package="kronecker_zoo")
class KroneckerConv2D(WeightArgsMixin, keras.layers.Layer):
    """2-D convolution with a Kronecker-factored kernel (Zhou et al., 2015).

    The kernel is ``W = sum_{r < rank} F_0[r] (x) F_1[r] (x) ... (x) F_{m-1}[r]``,
    each factor a 4-D tensor ``(kh_k, kw_k, in_k, out_k)``, so both the spatial
    and the channel dimensions are factored:
    ``kernel_size = (prod kh_k, prod kw_k)``, ``in = prod in_k``,
    ``filters = prod out_k``. ``F_0`` is the outermost (coarsest) factor.

    Executions (identical outputs and gradients up to float round-off):
    - ``"factored"``: a cascade of small convolutions, one per factor, each outer
      factor dilated by the product of the inner factors' sizes, in the cheapest exact
      order (`kronecker_zoo.ops.factored_conv_plan`); borders match the full kernel's.
      The full kernel is never formed. ``lowering`` says how a step reaches its channel
      axis: ``"batch"`` folds the other axes into the batch (transposes around the
      steps), ``"channels"`` (two factors) moves no data: one grouped (or depthwise)
      convolution and one convolution with ``F_0 (x) I``; ``"auto"`` the one the cost
      model (`kronecker_zoo.ops.factored_conv_cost`: MACs plus measured transpose
      cost) finds cheaper at the build-time input size.
    - ``"materialized"``: forms ``W`` and runs one convolution.
    - ``"auto"``: the one with fewer multiply-accumulates at the input size seen
      at build time (``NOMINAL_INPUT_SIZE`` when it is unknown).

    Args:
        filters: int. Output channels; must equal the product of the factors' ``out``.
        kernel_size: int or pair. Must equal the product of the factors' spatial sizes.
        factors: list of ``(kh, kw, in, out)`` tuples, two or more, outermost first.
        rank: int. Number of Kronecker products summed. Defaults to `1`.
        strides: int or pair. Defaults to `1`.
        padding: `"same"` or `"valid"` (Keras semantics for the full kernel).
        padding_mode: `"zeros"`, `"reflect"` or `"symmetric"`: the values used by
            `"same"` padding. Defaults to `"zeros"`.
        execution: `"auto"`, `"factored"` or `"materialized"`. Defaults to `"auto"`.
        lowering: `"auto"`, `"batch"` or `"channels"` (two factors only): how the
            factored execution runs. Defaults to `"auto"`.
        use_bias: bool. Defaults to `True`.
        activation: activation applied to the output. Defaults to `None`.
        kernel_initializer: initializer of the *full* kernel's distribution.
            Variance-scaling initializers (glorot, he, lecun) are honoured by
            scaling every factor so that ``Var(W)`` is what they would give ``W``;
            other initializers are applied to each factor as they are.
            Defaults to `"glorot_uniform"`.
        bias_initializer, kernel_regularizer, bias_regularizer, kernel_constraint,
        bias_constraint: as in `keras.layers.Conv2D`; kernel ones act on each factor.

    Input shape: `(batch, height, width, in)` (channels last).
    Output shape: `(batch, new_height, new_width, filters)`.

    Example:

    >>> layer = KroneckerConv2D(64, 9, factors=[(3, 3, 8, 8), (3, 3, 8, 8)])
    >>> layer(np.zeros((1, 32, 32, 64), "float32")).shape
    (1, 32, 32, 64)
    >>> layer.count_params()  # 2 * 3*3*8*8 + 64 bias, vs 9*9*64*64 + 64 dense
    1216
    """

    def __init__(
        self,
        filters,
        kernel_size,
        factors,
        rank=1,
        strides=1,
        padding="same",
        padding_mode="zeros",
        execution="auto",
        lowering="auto",
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
        if execution not in EXECUTIONS:
            raise ValueError(
                f"`execution` must be one of {EXECUTIONS}. Received: execution={execution!r}"
            )
        self.filters = filters
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.factors = normalize_factors(factors, 4)
        self.rank = rank
        self.strides = positive_pair(strides, "strides")
        self.padding, self.padding_mode = kz_ops.normalize_padding(padding, padding_mode)
        self.execution = execution
        if lowering not in LOWERINGS:
            raise ValueError(
                f"`lowering` must be one of {LOWERINGS}. Received: lowering={lowering!r}"
            )
        if lowering == "channels" and len(normalize_factors(factors, 4)) != 2:
            raise ValueError(
                f'lowering="channels" runs two factors; got {len(factors)}. Use "batch" '
                f'or "auto".'
            )
        self.lowering = lowering
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

        kh, kw, _, out = kernel_math.kronecker_kernel_shape(self.factors)
        for axis, (got, want, what) in enumerate(
            [(kh, self.kernel_size[0], "kernel_size[0] (height)"),
             (kw, self.kernel_size[1], "kernel_size[1] (width)"),
             (out, self.filters, "filters")]
        ):
            if got != want:
                values = [s[(0, 1, 3)[axis]] for s in self.factors]
                raise ValueError(
                    f"The factors' {('kh', 'kw', 'out')[axis]} multiply to "
                    f"{_product_string(values)} = {got}, but {what} is {want}. "
                    f"Received: factors={self.factors}, kernel_size={self.kernel_size}, "
                    f"filters={self.filters}"
                )
        self.input_spec = keras.layers.InputSpec(ndim=4)
        self.resolved_execution = None
        self.resolved_lowering = None
        self.built_input_hw = (None, None)

    # -- weights -----------------------------------------------------------------
    def build(self, input_shape):
        check_image_input(self, input_shape)
        in_channels = input_shape[-1]
        want = math.prod(s[2] for s in self.factors)
        if in_channels != want:
            raise ValueError(
                f"The factors' `in` multiply to "
                f"{_product_string([s[2] for s in self.factors])} = {want}, but the input "
                f"has {in_channels} channels. Received: factors={self.factors}, "
                f"input_shape={tuple(input_shape)}"
            )
        check_valid_extent(self, input_shape, self.kernel_size)
        shapes = [(self.rank,) + s for s in self.factors]
        full_shape = self.kernel_size + (want, self.filters)
        inits = factor_initializers(self.kernel_initializer, full_shape, shapes, self.rank)
        self.factor_weights = [
            self.add_kernel_weight(f"factor_{k}", shape, init)
            for k, (shape, init) in enumerate(zip(shapes, inits))
        ]
        self.bias = self.add_bias(self.filters)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})
        self.built_input_hw = tuple(input_shape[1:3])
        self.resolved_lowering = self._resolve_lowering(input_shape[1:3])
        self.resolved_execution = self._resolve_execution(input_shape[1:3])

    def _resolve_execution(self, spatial):
        if self.execution != "auto":
            return self.execution
        hw = tuple(NOMINAL_INPUT_SIZE if d is None else int(d) for d in spatial)
        macs = self.macs(hw, execution=None)
        return "factored" if macs["factored"] < macs["materialized"] else "materialized"

    def _resolve_lowering(self, spatial, runtime=None):
        if self.lowering != "auto":
            return self.lowering
        hw = tuple(NOMINAL_INPUT_SIZE if d is None else int(d) for d in spatial)
        return kz_ops.choose_lowering(hw, self.factors, self.rank, self.strides, self.padding,
                                      runtime)

    def lowering_constants(self, lowering):
        """Weights a frozen export stores for this layer's kernel under ``lowering``."""
        return kz_ops.factored_conv_constants(self.factors, self.rank, self.strides, lowering)

    def lowering_saving(self, runtime):
        """``cost("batch") - cost("channels")`` (`kronecker_zoo.ops.factored_conv_cost`) on
        ``runtime`` at the build-time input size; positive when "channels" is cheaper."""
        if len(self.factors) != 2:
            return 0.0
        hw = tuple(NOMINAL_INPUT_SIZE if d is None else int(d)
                   for d in getattr(self, "built_input_hw", (None, None)))
        costs = kz_ops.lowering_costs(hw, self.factors, self.rank, self.strides, self.padding,
                                      runtime)
        return costs["batch"] - costs["channels"]

    def lowering_for(self, runtime):
        """The lowering ``lowering="auto"`` picks for ``runtime`` ("tensorflow", "jax",
        "litert": `kronecker_zoo.ops.COST_WEIGHTS`) at the build-time input size."""
        return self._resolve_lowering(getattr(self, "built_input_hw", (None, None)), runtime)

    def execution_costs(self, runtime=None):
        """``{"factored": ..., "materialized": ...}``: the planner's cost of each execution
        on ``runtime`` at the build-time input size (`kronecker_zoo.ops.factored_conv_cost`
        with the lowering `lowering_for` picks, `kronecker_zoo.ops.dense_conv_cost`)."""
        hw = tuple(NOMINAL_INPUT_SIZE if d is None else int(d) for d in self.built_input_hw)
        _, _, cin, cout = kernel_math.kronecker_kernel_shape(self.factors)
        return {
            "factored": kz_ops.factored_conv_cost(hw, self.factors, self.rank, self.strides,
                                                  self.padding, self.lowering_for(runtime),
                                                  runtime),
            "materialized": kz_ops.dense_conv_cost(hw, self.kernel_size, cin, cout,
                                                   self.strides, self.padding, runtime),
        }

    def materializing_extra_weights(self):
        """Weights an export stores beyond the layer's own when it runs materialised: its
        full kernel less its factors."""
        kh, kw, cin, cout = kernel_math.kronecker_kernel_shape(self.factors)
        return max(kh * kw * cin * cout - self.lowering_constants("batch"), 0)

    @property
    def kernel(self):
        """The materialised kernel ``(kh, kw, in, filters)`` (for inspection/export)."""
        total = None
        for r in range(self.rank):
            term = kernel_math.kron(*[f[r] for f in self.factor_weights])
            total = term if total is None else total + term
        return total

    # -- computation -------------------------------------------------------------
    def call(self, inputs):
        if self.resolved_execution == "factored":
            outputs = kz_ops.kronecker_conv2d(
                inputs, self.factor_weights, self.strides, self.padding, self.padding_mode,
                lowering=self.resolved_lowering or self._resolve_lowering(inputs.shape[1:3]),
            )
        else:
            kernel = ops.cast(self.kernel, inputs.dtype)
            if self.padding == "same" and self.padding_mode == "zeros":
                outputs = kz_ops.conv2d(inputs, kernel, self.strides, "same")
            else:
                padded = kz_ops.pad_input(inputs, self.kernel_size, self.strides,
                                          self.padding, self.padding_mode)
                outputs = kz_ops.conv2d(padded, kernel, self.strides, "valid")
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        h = kz_ops.conv_output_length(input_shape[1], self.kernel_size[0],
                                      self.strides[0], self.padding)
        w = kz_ops.conv_output_length(input_shape[2], self.kernel_size[1],
                                      self.strides[1], self.padding)
        return (input_shape[0], h, w, self.filters)

    # -- reporting ---------------------------------------------------------------
    def dense_equivalent_params(self):
        """Parameters of a plain Conv2D with the same kernel extent and channels."""
        kh, kw, cin, cout = kernel_math.kronecker_kernel_shape(self.factors)
        return kh * kw * cin * cout + (cout if self.use_bias else 0)

    def macs(self, input_hw, execution="resolved"):
        """Multiply-accumulates per example at spatial input size ``(H, W)``.

        With ``execution=None`` returns ``{"factored": ..., "materialized": ...}``;
        by default the count of the execution this layer runs.
        """
        _, _, cin, cout = kernel_math.kronecker_kernel_shape(self.factors)
        counts = {
            "factored": kz_ops.factored_conv_macs(
                input_hw, self.factors, self.rank, self.strides, self.padding,
                lowering=self.resolved_lowering or self._resolve_lowering(input_hw)),
            "materialized": kz_ops.dense_conv_macs(input_hw, self.kernel_size, cin, cout,
                                                   self.strides, self.padding),
        }
        if execution is None:
            return counts
        if execution == "resolved":
            execution = self.resolved_execution or self._resolve_execution(input_hw)
        return counts[execution]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "factors": [list(s) for s in self.factors],
                "rank": self.rank,
                "strides": self.strides,
                "padding": self.padding,
                "padding_mode": self.padding_mode,
                "execution": self.execution,
                "lowering": self.lowering,
            }
        )
        config.update(self.weight_args_config())
        return config
