"""Argument checks shared across the package: errors that name the argument."""

import numbers

import numpy as np

__all__ = ["positive_int", "positive_pair"]


def positive_int(value, name):
    """``int(value)`` if it is a positive integer (Python or NumPy), else raise a
    ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


def positive_pair(value, name):
    """``(h, w)``: an int ``n`` as ``(n, n)``, or a pair of ints; each must be positive,
    else a ValueError naming ``name``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a positive int or a pair of positive ints. "
            f"Received: {name}={value!r}"
        ) from None
    if len(pair) != 2 or min(pair) < 1 or any(
        isinstance(v, bool) or int(v) != v for v in value
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a pair of positive ints. "
            f"Received: {name}={value!r}"
        )
    return pair
