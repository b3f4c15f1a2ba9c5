"""Initialising the factors of a product kernel so the product has the right scale.

A kernel ``W = sum_{r < R} F_0[r] (x) ... (x) F_{m-1}[r]`` of independent, zero-mean
factors has ``Var(W) = R * prod_k Var(F_k)``. For a variance-scaling initializer
(glorot, he, lecun, ...) we compute the variance it would give the *full* kernel
(with the full kernel's fans) and give every factor ``Var(F_k) = (Var(W) / R)**(1/m)``.
Any other initializer is applied to each factor as it is.
"""

import math

import keras


def _fans(shape):
    """Keras' fan computation for a conv or dense kernel shape."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def factor_initializers(initializer, full_shape, factor_shapes, num_terms=1):
    """One initializer per factor variable, for a sum of products of factors.

    Args:
        initializer: a Keras initializer (object, name or config).
        full_shape: shape of the kernel the factors multiply into.
        factor_shapes: the shapes of the factor variables (one per factor).
        num_terms: how many such products are summed (the rank).

    Returns:
        A list of initializers, one per entry of ``factor_shapes``.
    """
    num_factors = len(factor_shapes)
    initializer = keras.initializers.get(initializer)
    if not isinstance(initializer, keras.initializers.VarianceScaling):
        return [reseeded(initializer, 7919 * (k + 1)) for k in range(num_factors)]
    # Subclasses (GlorotUniform, HeNormal, ...) keep scale/mode/distribution as
    # attributes but leave them out of get_config(); the seed is the user's.
    seed = initializer.get_config().get("seed")
    fan_in, fan_out = _fans(full_shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out,
           "fan_avg": (fan_in + fan_out) / 2.0}[initializer.mode]
    variance = initializer.scale / max(1.0, fan)
    per_factor = (variance / num_terms) ** (1.0 / num_factors)
    result = []
    for k, shape in enumerate(factor_shapes):
        # "fan_in" with scale = variance * fan_in gives exactly that variance.
        result.append(
            keras.initializers.VarianceScaling(
                scale=per_factor * max(1.0, _fans(tuple(shape))[0]),
                mode="fan_in",
                distribution=initializer.distribution,
                seed=None if seed is None else seed + 7919 * (k + 1),
            )
        )
    return result


def reseeded(initializer, offset):
    """``initializer`` with its integer seed moved by ``offset``; itself when unseeded.

    A seeded Keras initializer draws the same values at every call, so the sublayers (or
    factors) of one layer that shared it would start equal; each gets ``seed + offset``.
    """
    initializer = keras.initializers.get(initializer)
    config = initializer.get_config()
    seed = config.get("seed")
    if offset == 0 or isinstance(seed, bool) or not isinstance(seed, int):
        return initializer
    return type(initializer).from_config({**config, "seed": seed + offset})
