"""The shared argument checks: accepted values come back normalised, anything else is a
ValueError that names the argument."""

import numpy as np
import pytest

from kronecker_zoo.validation import int_sequence, positive_int, positive_pair


def test_positive_int():
    assert positive_int(3, "rank") == 3
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=r"`rank` must be a positive int\. Received: rank="):
            positive_int(bad, "rank")


def test_positive_pair():
    assert positive_pair(3, "strides") == (3, 3)
    assert positive_pair(np.int64(2), "strides") == (2, 2)
    assert positive_pair((1, 4), "strides") == (1, 4)
    assert positive_pair([2, 5], "strides") == (2, 5)
    assert all(type(v) is int for v in positive_pair(np.array([2, 3]), "strides"))
    import keras

    assert positive_pair(keras.ops.convert_to_tensor([2, 3]), "strides") == (2, 3)  # backend
    assert positive_pair(np.array(4), "strides") == (4, 4)
    for bad in (0, (0, 1), (1, 2, 3), (1.5, 2), (True, 1), "ab", None, (2,), (2.0, 3),
                (np.True_, 2), np.True_, 2.0, (2, None)):
        with pytest.raises(ValueError, match=r"`strides` must be a positive int or a pair"):
            positive_pair(bad, "strides")


def test_int_sequence():
    assert int_sequence([1, 2, 4], "dilations") == (1, 2, 4)
    assert int_sequence((0, 3), "layer_factors", minimum=0) == (0, 3)
    assert int_sequence([3, 1, 5], "kernel_sizes", odd=True) == (3, 1, 5)
    import keras

    for integers in (np.array([1, 2, 8]), [np.int64(1), np.int32(2), 8],
                     keras.ops.convert_to_tensor([1, 2, 8])):  # NumPy and backend integers
        values = int_sequence(integers, "dilations")
        assert values == (1, 2, 8) and all(type(v) is int for v in values)
    for bad, kwargs, kind in [((), {}, "positive"), ((1, 0), {}, "positive"),
                              ((1, 2.0), {}, "positive"), ((True,), {}, "positive"),
                              ((0, -1), {"minimum": 0}, "non-negative"),
                              ((3, 2), {"odd": True}, "odd positive"),
                              ((2, 1), {"minimum": 2}, ">= 2"), (4, {}, "positive"),
                              (np.int64(4), {}, "positive"), ("124", {}, "positive"),
                              (None, {}, "positive"), (np.array([1.0, 2.0]), {}, "positive"),
                              ((np.True_, 1), {}, "positive")]:
        with pytest.raises(ValueError, match=rf"`xs` must be a non-empty sequence of {kind} "
                                             r"ints\. Received: xs="):
            int_sequence(bad, "xs", **kwargs)
