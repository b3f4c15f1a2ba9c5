"""Gradients on the active backend (TF by default, JAX in test_jax_backend.py).

Factored and materialised KroneckerConv2D give the same gradients w.r.t. the input
and every factor; KroneckerDense's input gradient equals that of a plain Dense
holding the materialised matrix.
"""

import keras
import numpy as np
import pytest

import kronecker_zoo as kz
from tests.backend_grads import loss_grads

pytestmark = pytest.mark.training


@pytest.mark.parametrize(
    "factors,rank,strides,padding,lowering",
    [
        ([(3, 3, 2, 2), (3, 3, 2, 3)], 1, 1, "same", "batch"),
        ([(2, 3, 2, 1), (2, 2, 1, 2)], 2, 2, "same", "batch"),
        ([(2, 2, 1, 2), (1, 2, 2, 1), (3, 1, 2, 2)], 1, (2, 3), "valid", "batch"),
        # "channels": a grouped convolution (TF: `_grouped_conv_gradient`) and F (x) I ...
        ([(3, 3, 2, 2), (3, 3, 2, 3)], 2, 1, "same", "channels"),
        # ... a depthwise one (one input channel per group), strided
        ([(1, 1, 3, 2), (3, 3, 1, 2)], 3, 2, "same", "channels"),
        ([(3, 1, 2, 2), (1, 2, 3, 2)], 2, (2, 1), "valid", "channels"),
    ],
)
def test_kronecker_conv_factored_and_materialized_gradients_agree(factors, rank, strides,
                                                                  padding, lowering):
    rng = np.random.default_rng(3)
    kh = int(np.prod([f[0] for f in factors]))
    kw = int(np.prod([f[1] for f in factors]))
    cin = int(np.prod([f[2] for f in factors]))
    cout = int(np.prod([f[3] for f in factors]))
    x = rng.normal(size=(2, kh + 6, kw + 5, cin)).astype("float32")
    layers = {}
    for execution in ("factored", "materialized"):
        layer = kz.KroneckerConv2D(cout, (kh, kw), factors, rank=rank, strides=strides,
                                   padding=padding, execution=execution, lowering=lowering)
        layer.build(x.shape)
        layers[execution] = layer
    layers["materialized"].set_weights(layers["factored"].get_weights())
    out_shape = layers["factored"].compute_output_shape(x.shape)
    weights = rng.normal(size=out_shape).astype("float32")
    gx_f, gv_f = loss_grads(layers["factored"], x, weights)
    gx_m, gv_m = loss_grads(layers["materialized"], x, weights)
    # float32 sums of a few hundred terms: relative round-off well under 1e-4
    scale = max(1.0, float(np.abs(gx_m).max()))
    np.testing.assert_allclose(gx_f, gx_m, atol=1e-4 * scale)
    assert len(gv_f) == len(gv_m) == len(factors) + 1
    for g_f, g_m in zip(gv_f, gv_m):
        np.testing.assert_allclose(g_f, g_m, atol=1e-4 * max(1.0, float(np.abs(g_m).max())))
    assert np.abs(gx_f).max() > 0


class _GroupedConv(keras.layers.Layer):
    """``ops.grouped_conv2d`` (``per_group=False``) or its reference: one ``keras.ops.conv``
    per group on the group's channels, concatenated (``per_group=True``)."""

    def __init__(self, kernel, groups, strides, padding, per_group):
        super().__init__()
        self.kernel = self.add_weight(shape=kernel.shape, initializer="zeros")
        self.kernel.assign(kernel)
        self.groups, self.strides, self.padding, self.per_group = (groups, strides, padding,
                                                                   per_group)

    def call(self, x):
        if not self.per_group:
            return kz.ops.grouped_conv2d(x, self.kernel, self.strides, self.padding)
        xs = keras.ops.split(x, self.groups, axis=-1)
        ks = keras.ops.split(self.kernel, self.groups, axis=-1)
        return keras.ops.concatenate(
            [keras.ops.conv(a, k, strides=self.strides, padding=self.padding)
             for a, k in zip(xs, ks)], axis=-1)


@pytest.mark.parametrize(
    "groups,group_in,group_out,strides,padding",
    [(4, 2, 3, (1, 1), "same"),  # TF: block-diagonal dense kernel (G a <= 64)
     (3, 3, 2, (2, 1), "same"),
     (36, 2, 1, (2, 2), "valid")],  # TF: one convolution per group (G a > 64)
)
def test_grouped_conv_gradients_equal_one_convolution_per_group(groups, group_in, group_out,
                                                                strides, padding):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 9, 8, groups * group_in)).astype("float32")
    kernel = rng.normal(size=(3, 2, group_in, groups * group_out)).astype("float32")
    ours, ref = (_GroupedConv(kernel, groups, strides, padding, per_group)
                 for per_group in (False, True))
    y = np.asarray(ours(x))
    np.testing.assert_allclose(y, np.asarray(ref(x)), atol=1e-4 * np.abs(y).max())
    weights = rng.normal(size=y.shape).astype("float32")
    (gx, (gk,)), (gx_ref, (gk_ref,)) = loss_grads(ours, x, weights), loss_grads(ref, x, weights)
    np.testing.assert_allclose(gx, gx_ref, atol=1e-4 * np.abs(gx_ref).max())
    np.testing.assert_allclose(gk, gk_ref, atol=1e-4 * np.abs(gk_ref).max())
    assert np.abs(gk).max() > 0


def test_kronecker_dense_input_gradient_matches_plain_dense():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 12)).astype("float32")
    layer = kz.KroneckerDense(6, [(3, 2), (4, 3)], rank=2)
    layer.build(x.shape)
    dense = keras.layers.Dense(6)
    dense.build(x.shape)
    dense.set_weights([keras.ops.convert_to_numpy(layer.kernel), layer.get_weights()[-1]])
    weights = rng.normal(size=(3, 6)).astype("float32")
    gx_k, _ = loss_grads(layer, x, weights)
    gx_d, _ = loss_grads(dense, x, weights)
    np.testing.assert_allclose(gx_k, gx_d, atol=1e-5)
