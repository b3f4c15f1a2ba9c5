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
        # "channels": a grouped convolution (TF: XLA gradient) and F (x) I ...
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
