"""CropToMatch against NumPy slicing, and its error for an input smaller than the reference."""

import keras
import numpy as np
import pytest

from kronecker_zoo.layers import CropToMatch


def test_crops_to_the_reference_size_top_left():
    x = np.random.default_rng(0).normal(size=(2, 9, 10, 3)).astype("float32")
    reference = np.zeros((2, 7, 9, 1), "float32")
    got = keras.ops.convert_to_numpy(CropToMatch()([x, reference]))
    np.testing.assert_array_equal(got, x[:, :7, :9])
    inputs = [keras.Input((None, None, 3)), keras.Input((None, None, 1))]
    model = keras.Model(inputs, CropToMatch()(inputs))
    np.testing.assert_array_equal(model.predict([x, reference], verbose=0), x[:, :7, :9])


@pytest.mark.parametrize("x_hw, ref_hw, name", [((5, 9), (7, 9), "height"),
                                                ((7, 6), (7, 9), "width")])
def test_an_input_smaller_than_the_reference_is_an_error(x_hw, ref_hw, name):
    # Before: eager calls and models with unknown sizes returned the input uncropped.
    x = np.zeros((1,) + x_hw + (2,), "float32")
    reference = np.zeros((1,) + ref_hw + (1,), "float32")
    with pytest.raises(ValueError, match=f"can only crop: the input {name}"):
        CropToMatch()([x, reference])
    inputs = [keras.Input((None, None, 2)), keras.Input((None, None, 1))]
    model = keras.Model(inputs, CropToMatch()(inputs))
    with pytest.raises(ValueError, match=f"can only crop: the input {name}"):
        model.predict([x, reference], verbose=0)
    with pytest.raises(ValueError, match=f"can only crop: the input {name}"):
        CropToMatch()([keras.Input(x.shape[1:]), keras.Input(reference.shape[1:])])
