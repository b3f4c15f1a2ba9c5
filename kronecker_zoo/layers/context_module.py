"""Yu & Koltun's context module and its identity initialisation."""

import keras
import numpy as np

from kronecker_zoo import kernels as kernel_math
from kronecker_zoo.layers.factor_init import reseeded
from kronecker_zoo.validation import (check_image_input, int_sequence, non_negative_float,
                                      positive_int)

VARIANTS = ("basic", "large")
YU_KOLTUN_DILATIONS = (1, 1, 2, 4, 8, 16, 1)


@keras.saving.register_keras_serializable(package="kronecker_zoo")
class ContextIdentity(keras.initializers.Initializer):
    """Yu & Koltun's identity initialisation for a ``(kh, kw, c_in, c_out)`` kernel.

    ``k[t, a, b] = C / c_out`` if ``t`` is the centre tap and
    ``floor(a * C / c_in) == floor(b * C / c_out)``, else 0, plus Gaussian noise of
    standard deviation ``noise_stddev``. With ``c_in == c_out == C`` this is the
    identity; across widths it maps channel blocks so that a chain of such layers
    (with ReLUs, on non-negative inputs) passes a ``C``-channel input through.

    Args:
        base_channels: int. ``C``, the channels of the module's input and output.
        noise_stddev: float. Defaults to `0.0`.
        seed: int or `None`, for the noise.
    """

    def __init__(self, base_channels, noise_stddev=0.0, seed=None):
        self.base_channels = int(base_channels)
        self.noise_stddev = non_negative_float(noise_stddev, "noise_stddev")
        self.seed = seed

    def __call__(self, shape, dtype=None):
        kernel = kernel_math.block_identity(*(int(v) for v in shape), self.base_channels)
        if self.noise_stddev:
            rng = np.random.default_rng(self.seed)
            kernel += rng.normal(0.0, self.noise_stddev, size=shape)
        return keras.ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"base_channels": self.base_channels, "noise_stddev": self.noise_stddev,
                "seed": self.seed}


def context_widths(channels, variant, num_layers):
    """Output width of each dilated layer: ``C`` (basic) or Yu & Koltun's large widths.

    Large, for the default 7 layers: ``2C, 2C, 4C, 8C, 16C, 32C, 32C``; in general
    ``2C, 2C, 4C, ...`` doubling, the last layer keeping its predecessor's width.
    """
    if variant == "basic":
        return [channels] * num_layers
    multipliers = [2 ** max(1, i) for i in range(num_layers)]
    if num_layers > 1:
        multipliers[-1] = multipliers[-2]
    return [channels * m for m in multipliers]


@keras.saving.register_keras_serializable(package="kronecker_zoo")
class ContextModule(keras.layers.Layer):
    """Yu & Koltun's multi-scale context module (ICLR 2016).

    ``3x3`` convolutions + ReLU at ``dilations`` (default ``1, 1, 2, 4, 8, 16, 1``,
    receptive field 67), then a ``1x1`` convolution back to ``channels`` (no ReLU).
    ``kernel_sizes`` (default all 3) can make a layer ``1x1`` (or another odd size).
    "basic": ``channels`` everywhere; "large": widths ``2C, 2C, 4C, 8C, 16C, 32C,
    32C`` (see `context_widths`). With the default identity initialisation a fresh
    module returns its input unchanged for non-negative inputs with ``channels``
    channels (e.g. score maps after a ReLU or softmax); "large" adds noise of
    ``noise_stddev`` (default ``1e-3``) to break symmetry, "basic" none.

    Args:
        channels: int. ``C``: the input's and the output's channels (checked at build).
        variant: `"basic"` or `"large"`. Defaults to `"basic"`.
        dilations: sequence of int. Defaults to `(1, 1, 2, 4, 8, 16, 1)`.
        kernel_sizes: sequence of odd ints, one per dilation, or `None` (all 3).
        kernel_initializer: `"identity"` (Yu & Koltun) or any Keras initializer.
        noise_stddev: float or `None` (variant default). Noise of the identity init.
        seed: int or `None`. Seed of that noise.

    Input shape: `(batch, height, width, C)`. Output: `(batch, height, width, C)`.
    """

    def __init__(
        self,
        channels,
        variant="basic",
        dilations=YU_KOLTUN_DILATIONS,
        kernel_sizes=None,
        kernel_initializer="identity",
        noise_stddev=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        channels = positive_int(channels, "channels")
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
        dilations = int_sequence(dilations, "dilations")
        kernel_sizes = ((3,) * len(dilations) if kernel_sizes is None
                        else int_sequence(kernel_sizes, "kernel_sizes", odd=True))
        if len(kernel_sizes) != len(dilations):
            raise ValueError(
                "`kernel_sizes` must be odd positive ints, one per dilation "
                f"({len(dilations)}). Received: kernel_sizes={kernel_sizes!r}"
            )
        self.channels = channels
        self.variant = variant
        self.dilations = dilations
        self.kernel_sizes = kernel_sizes
        if noise_stddev is not None:
            noise_stddev = non_negative_float(noise_stddev, "noise_stddev")
        self.noise_stddev = noise_stddev
        self.seed = seed
        self.identity_init = kernel_initializer == "identity"
        self.kernel_initializer = (
            "identity" if self.identity_init else keras.initializers.get(kernel_initializer)
        )
        noise = noise_stddev if noise_stddev is not None else (
            1e-3 if variant == "large" else 0.0)
        widths = context_widths(channels, variant, len(dilations))
        self.convs = []
        for i, (width, rate, size) in enumerate(
                zip(widths + [channels], dilations + (None,), kernel_sizes + (1,))):
            last = rate is None
            if self.identity_init:
                init = ContextIdentity(channels, noise, None if seed is None else seed + i)
            else:
                init = reseeded(self.kernel_initializer, i)
            self.convs.append(
                keras.layers.Conv2D(
                    width,
                    size,
                    dilation_rate=1 if size == 1 else rate,
                    padding="same",
                    activation=None if last else "relu",
                    kernel_initializer=init,
                    dtype=self.dtype_policy,
                    name=f"context_{'out' if last else i}",
                )
            )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def receptive_field(self):
        """Receptive field of the module, in pixels (67 for the default dilations)."""
        return kernel_math.receptive_field(list(self.kernel_sizes) + [1],
                                           list(self.dilations) + [1])

    def build(self, input_shape):
        check_image_input(self, input_shape, known_channels=False)
        if input_shape[-1] is not None and input_shape[-1] != self.channels:
            raise ValueError(
                f"ContextModule({self.channels}) maps {self.channels} channels to "
                f"{self.channels}: its input must have {self.channels} channels, got "
                f"{input_shape[-1]}. Received input_shape={tuple(input_shape)}"
            )
        # Unknown input channels: the module's width is known, `channels`.
        shape = tuple(input_shape[:-1]) + (self.channels,)
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)

    def call(self, inputs):
        x = inputs
        for conv in self.convs:
            x = conv(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self.channels,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
                "variant": self.variant,
                "dilations": list(self.dilations),
                "kernel_sizes": list(self.kernel_sizes),
                "kernel_initializer": (
                    "identity" if self.identity_init
                    else keras.initializers.serialize(self.kernel_initializer)),
                "noise_stddev": self.noise_stddev,
                "seed": self.seed,
            }
        )
        return config
