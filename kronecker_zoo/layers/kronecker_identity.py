"""Identity initialisation for the factors of a Kronecker-factored kernel."""

import math

import keras
import numpy as np

from kronecker_zoo import kernels as kernel_math
from kronecker_zoo.validation import non_negative_float


@keras.saving.register_keras_serializable(package="kronecker_zoo")
class KroneckerIdentity(keras.initializers.Initializer):
    """Yu & Koltun's identity initialisation, one Kronecker factor at a time.

    For a factor of shape ``(rank, kh, kw, in, out)`` (or ``(kh, kw, in, out)``)
    the first rank term is ``delta_centre (x) B`` with the block matrix
    ``B[a, b] = g / out`` if ``floor(a g / in) == floor(b g / out)``, else 0,
    ``g = gcd(in, out)``; other rank terms are 0. Plus Gaussian noise of
    ``noise_stddev``. Because the Kronecker product of centre deltas of odd sizes
    is the centre delta, and ``eye(C) (x) B`` maps channel ``i`` of ``C`` to the
    contiguous block ``i`` of the wider layer, a cascade of such layers (with
    ReLUs, on non-negative inputs) ending in a layer back to ``C`` channels is the
    identity: the same function as `ContextIdentity` gives a dense context module.

    Args:
        noise_stddev: float. Defaults to `0.0`.
        seed: int or `None`, for the noise.
    """

    def __init__(self, noise_stddev=0.0, seed=None):
        self.noise_stddev = non_negative_float(noise_stddev, "noise_stddev")
        self.seed = seed

    def __call__(self, shape, dtype=None):
        shape = tuple(int(v) for v in shape)
        if len(shape) not in (4, 5):
            raise ValueError(
                "KroneckerIdentity initialises (rank, kh, kw, in, out) or (kh, kw, in, out) "
                f"factors. Received shape={shape}"
            )
        kh, kw, c_in, c_out = shape[-4:]
        kernel = np.zeros(shape, "float64")
        first = kernel[0] if len(shape) == 5 else kernel
        first[...] = kernel_math.block_identity(kh, kw, c_in, c_out, math.gcd(c_in, c_out))
        if self.noise_stddev:
            rng = np.random.default_rng(self.seed)
            kernel += rng.normal(0.0, self.noise_stddev, size=shape)
        return keras.ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"noise_stddev": self.noise_stddev, "seed": self.seed}
