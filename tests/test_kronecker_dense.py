"""Tests of KroneckerDense: a dense layer whose matrix is a sum of Kronecker products.

Every expected value is computed independently of the package: the matrix with
``np.kron`` of the factors read back through ``get_weights()``, the output with a
float64 NumPy matmul, gradients with a plain ``keras.layers.Dense`` and the chain
rule of the Kronecker product written out by hand.
"""

import functools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from kronecker_zoo.layers import KroneckerDense
from tests.layer_checks import check_config_round_trip, check_fit_step, check_saving_round_trip


def assert_close(got, ref, scale_tol=1e-4):
    """float32 check against a float64 reference.

    The layer computes in float32 (unit round-off ~6e-8); sums of a few hundred
    products of O(1) numbers stay well inside 1e-4 of the largest magnitude, while
    any indexing / ordering mistake gives O(1) errors.
    """
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    atol = scale_tol * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


def np_kernel(factor_arrays):
    """sum_r np.kron(F_0[r], ..., F_{m-1}[r]) in float64, from (rank, in, out) arrays."""
    rank = factor_arrays[0].shape[0]
    total = 0.0
    for r in range(rank):
        total = total + functools.reduce(
            np.kron, [np.asarray(f[r], dtype=np.float64) for f in factor_arrays])
    return total


def randomise(layer, rng):
    """Give every weight (factors and bias) random standard-normal values."""
    layer.set_weights([rng.standard_normal(w.shape).astype("float32")
                       for w in layer.get_weights()])


def make_layer(factors, rank=1, lead=(3,), rng=None, **kwargs):
    units = math.prod(o for _, o in factors)
    in_features = math.prod(i for i, _ in factors)
    layer = KroneckerDense(units, factors=factors, rank=rank, **kwargs)
    layer.build(tuple(lead) + (in_features,))
    if rng is not None:
        randomise(layer, rng)
    return layer


# ---------------------------------------------------------------------------
# forward pass vs the materialised matrix
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize(
    "factors",
    [
        [(2, 3), (4, 5)],
        [(3, 2), (1, 4)],
        [(2, 3), (3, 1), (2, 2)],
        [(1, 2), (3, 3), (2, 4)],
    ],
    ids=lambda f: "x".join(f"{i}-{o}" for i, o in f),
)
@pytest.mark.parametrize("lead", [(5,), (2, 3)], ids=["B", "BT"])
def test_output_equals_kron_matmul(factors, rank, lead):
    rng = np.random.default_rng(hash((tuple(factors), rank, lead)) % 2**32)
    layer = make_layer(factors, rank, lead, rng)
    weights = layer.get_weights()
    m = len(factors)
    assert len(weights) == m + 1
    for w, (fin, fout) in zip(weights[:m], factors):
        assert w.shape == (rank, fin, fout)
    kernel = np_kernel(weights[:m])
    bias = weights[m].astype(np.float64)

    x = rng.standard_normal(tuple(lead) + (kernel.shape[0],)).astype("float32")
    got = keras.ops.convert_to_numpy(layer(x))
    assert got.shape == tuple(lead) + (kernel.shape[1],)
    assert_close(got, x.astype(np.float64) @ kernel + bias)


@settings(deadline=None)
@given(
    factors=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=2, max_size=3),
    rank=st.integers(1, 3),
    use_bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_output_equals_kron_matmul_hypothesis(factors, rank, use_bias, seed):
    rng = np.random.default_rng(seed)
    layer = make_layer(factors, rank, (2, 3), rng, use_bias=use_bias)
    weights = layer.get_weights()
    m = len(factors)
    assert len(weights) == m + (1 if use_bias else 0)
    kernel = np_kernel(weights[:m])
    x = rng.standard_normal((2, 3, kernel.shape[0])).astype("float32")
    ref = x.astype(np.float64) @ kernel
    if use_bias:
        ref = ref + weights[m]
    assert_close(layer(x), ref)
    # The kernel property materialises exactly that matrix.
    assert_close(layer.kernel, kernel)


@pytest.mark.parametrize("rank", [1, 3])
def test_activation_is_applied_after_bias(rank):
    rng = np.random.default_rng(7)
    factors = [(3, 2), (2, 3)]
    layer = make_layer(factors, rank, (4,), rng, activation="relu")
    weights = layer.get_weights()
    x = rng.standard_normal((4, 6)).astype("float32")
    pre = x.astype(np.float64) @ np_kernel(weights[:2]) + weights[2]
    assert (pre < 0).any() and (pre > 0).any()  # the ReLU really matters here
    assert_close(layer(x), np.maximum(pre, 0.0))


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("factors", [[(2, 3), (4, 2)], [(2, 2), (3, 1), (1, 3)]])
def test_kernel_property_matches_np_kron(factors, rank):
    layer = make_layer(factors, rank, (2,), np.random.default_rng(3))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    ref = np_kernel(layer.get_weights()[: len(factors)])
    assert kernel.shape == (math.prod(i for i, _ in factors), math.prod(o for _, o in factors))
    assert_close(kernel, ref)


def test_equals_plain_dense_with_materialised_kernel():
    rng = np.random.default_rng(11)
    factors = [(3, 4), (2, 3), (2, 2)]
    layer = make_layer(factors, 2, (2, 5), rng, activation="tanh")
    weights = layer.get_weights()
    dense = keras.layers.Dense(layer.units, activation="tanh")
    dense.build((2, 5, 12))
    dense.set_weights([np_kernel(weights[:3]).astype("float32"), weights[3]])
    x = rng.standard_normal((2, 5, 12)).astype("float32")
    assert_close(layer(x), dense(x))


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------

def kron_factor_grads(grad_w, factor_arrays):
    """Chain rule of W = sum_r kron(F_0[r], ..., F_{m-1}[r]).

    With W indexed as W[(i_0..i_{m-1}), (o_0..o_{m-1})] = sum_r prod_k F_k[r, i_k, o_k],
    dL/dF_k[r, i_k, o_k] = sum over the other indices of G * prod_{l != k} F_l[r, i_l, o_l].
    """
    m = len(factor_arrays)
    ins = [f.shape[1] for f in factor_arrays]
    outs = [f.shape[2] for f in factor_arrays]
    g = np.asarray(grad_w, np.float64).reshape(ins + outs)
    letters_in = "abcdefgh"[:m]
    letters_out = "stuvwxyz"[:m]
    result = []
    for k in range(m):
        grads_k = []
        for r in range(factor_arrays[0].shape[0]):
            operands = [g]
            subs = [letters_in + letters_out]
            for l in range(m):
                if l != k:
                    operands.append(np.asarray(factor_arrays[l][r], np.float64))
                    subs.append(letters_in[l] + letters_out[l])
            spec = ",".join(subs) + "->" + letters_in[k] + letters_out[k]
            grads_k.append(np.einsum(spec, *operands))
        result.append(np.stack(grads_k))
    return result


@pytest.mark.training
@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="uses tf.GradientTape")
@pytest.mark.parametrize(
    "factors,rank",
    [([(2, 3), (3, 2)], 1), ([(2, 3), (3, 2)], 3), ([(2, 2), (1, 3), (3, 2)], 2)],
)
def test_gradients_match_dense_with_materialised_kernel(factors, rank):
    rng = np.random.default_rng(5 + rank)
    layer = make_layer(factors, rank, (3, 2), rng)
    weights = layer.get_weights()
    m = len(factors)
    in_features = math.prod(i for i, _ in factors)
    kernel = np_kernel(weights[:m]).astype("float32")

    dense = keras.layers.Dense(layer.units)
    dense.build((3, 2, in_features))
    dense.set_weights([kernel, weights[m]])

    x = tf.constant(rng.standard_normal((3, 2, in_features)).astype("float32"))
    upstream = tf.constant(rng.standard_normal((3, 2, layer.units)).astype("float32"))

    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * upstream)
    grads = tape.gradient(loss, [x, *layer.factor_weights, layer.bias])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss_dense = tf.reduce_sum(dense(x) * upstream)
    gx_d, gw_d, gb_d = tape.gradient(loss_dense, [x, dense.kernel, dense.bias])

    assert_close(loss, loss_dense)
    assert_close(grads[0], gx_d)          # d/dx
    assert_close(grads[-1], gb_d)         # d/dbias
    expected = kron_factor_grads(gw_d.numpy(), weights[:m])
    for got, ref in zip(grads[1:-1], expected):
        assert_close(got, ref)
    # Not vacuous: every factor gradient is non-zero.
    for g in grads[1:-1]:
        assert np.abs(g.numpy()).max() > 1e-3


# ---------------------------------------------------------------------------
# counts
# ---------------------------------------------------------------------------

def test_macs_two_factor_hand_count():
    # factors (in, out): A = (4, 3) outer, B = (5, 2) inner; rank 2.
    # Input viewed as (4, 5). Step 1 contracts the inner axis 5 -> 2 for each of
    # the 4 outer rows: 4 * 5 * 2 = 40 MACs. Step 2 contracts the outer axis
    # 4 -> 3 for each of the 2 inner outputs: 2 * 4 * 3 = 24 MACs.
    # Per rank term 64, two terms: 128. (The dense 20 x 6 product would be 120.)
    layer = KroneckerDense(6, factors=[(4, 3), (5, 2)], rank=2)
    layer.build((None, 20))
    assert layer.macs() == 128
    assert layer.dense_equivalent_params() == 20 * 6 + 6


@pytest.mark.parametrize("factors, rank, per_rank", [
    ([(36, 1), (1, 10)], 2, 36 + 10),             # a rank-r product U V: outermost first
    ([(3, 4), (2, 5), (4, 1)], 1, 3 * 2 * 4 * 1 + 2 * 1 * 3 * 4 + 4 * 1 * 2 * 5),  # 2, 0, 1
    ([(1, 8), (6, 1), (5, 5)], 3, 1 * 5 * 6 * 1 + 1 * 1 * 5 * 5 + 1 * 5 * 1 * 8),  # 1, 2, 0
])
def test_factors_run_in_the_cheapest_order(factors, rank, per_rank):
    """The contraction order of least MACs (hand counts in the comments: the order and
    each step's MACs) computes the same matrix product (np.kron reference)."""
    rng = np.random.default_rng(0)
    layer = make_layer(factors, rank=rank, lead=(4,), rng=rng)
    assert layer.macs() == rank * per_rank
    # no order is cheaper: brute force over every order, counted independently
    ins, outs = [f[0] for f in factors], [f[1] for f in factors]
    import itertools
    costs = []
    for order in itertools.permutations(range(len(factors))):
        sizes, cost = list(ins), 0
        for k in order:
            cost += math.prod(sizes) // sizes[k] * ins[k] * outs[k]
            sizes[k] = outs[k]
        costs.append(cost)
    assert per_rank == min(costs)
    x = rng.standard_normal((4, math.prod(ins))).astype("float32")
    weights = layer.get_weights()
    ref = x.astype(np.float64) @ np_kernel(weights[:-1]) + weights[-1]
    assert_close(layer(x), ref)


def test_order_search_is_the_brute_force_optimum_and_fast_for_many_factors():
    """`kronecker_matmul_order` (a search over subsets) returns the first of the cheapest
    orders of a brute force over every permutation (innermost first first), and handles
    nine and more factors without the factorial time of the brute force."""
    import itertools
    import time

    from kronecker_zoo import ops as kz_ops

    def brute(ins, outs):
        best = None
        for order in itertools.permutations(reversed(range(len(ins)))):
            sizes, cost = list(ins), 0
            for k in order:
                cost += math.prod(sizes) // sizes[k] * ins[k] * outs[k]
                sizes[k] = outs[k]
            if best is None or cost < best[1]:
                best = (order, cost)
        return best

    rng = np.random.default_rng(3)
    for _ in range(300):
        m = int(rng.integers(1, 7))
        ins = [int(v) for v in rng.choice([1, 2, 3, 4, 8], m)]
        outs = [int(v) for v in rng.choice([1, 2, 3, 5, 8], m)]
        assert kz_ops.kronecker_matmul_order(ins, outs) == brute(ins, outs), (ins, outs)
    start = time.perf_counter()
    order, cost = kz_ops.kronecker_matmul_order([2] * 12, [2] * 11 + [3])
    assert time.perf_counter() - start < 5.0
    assert sorted(order) == list(range(12)) and cost > 0
    layer = KroneckerDense(2 ** 9, factors=[(2, 2)] * 9)
    x = rng.standard_normal((2, 2 ** 9)).astype("float32")
    start = time.perf_counter()
    out = layer(x)
    ref = x.astype(np.float64) @ np_kernel(layer.get_weights()[:-1]) + layer.get_weights()[-1]
    assert_close(out, ref)
    assert layer.macs() == 9 * 2 ** 9 * 2
    with pytest.raises(ValueError, match="at most 16 factors"):
        KroneckerDense(2 ** 17, factors=[(2, 2)] * 17)


def test_param_count():
    layer = KroneckerDense(24, factors=[(4, 3), (5, 2), (2, 4)], rank=3)
    layer.build((None, 40))
    assert layer.count_params() == 3 * (4 * 3 + 5 * 2 + 2 * 4) + 24
    layer = KroneckerDense(24, factors=[(4, 3), (5, 2), (2, 4)], rank=1, use_bias=False)
    layer.build((None, 40))
    assert layer.count_params() == 4 * 3 + 5 * 2 + 2 * 4
    assert layer.bias is None


def test_compute_output_shape():
    layer = KroneckerDense(6, factors=[(2, 3), (3, 2)])
    assert tuple(layer.compute_output_shape((None, 4, 6))) == (None, 4, 6)
    y = layer(np.zeros((2, 7, 6), "float32"))
    assert tuple(y.shape) == (2, 7, 6)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

def test_units_mismatch_raises():
    with pytest.raises(ValueError, match=r"out multiply to .* = 6, but units is 8"):
        KroneckerDense(8, factors=[(2, 3), (3, 2)])


def test_input_features_mismatch_raises():
    layer = KroneckerDense(6, factors=[(2, 3), (3, 2)])
    with pytest.raises(ValueError, match=r"in multiply to .* = 6, but the input has 7 features"):
        layer(np.zeros((2, 7), "float32"))


@pytest.mark.parametrize("factors", [[(2, 3)], [], [(2, 3, 1), (3, 2, 1)], [(2, 0), (3, 2)],
                                     [(2, 3.0), (3, 2)], 5])
def test_bad_factors_raise(factors):
    with pytest.raises(ValueError, match="two or more"):
        KroneckerDense(6, factors=factors)


@pytest.mark.parametrize("kwargs,match", [
    ({"units": 0}, "units"),
    ({"units": True}, "units"),
    ({"rank": 0}, "rank"),
    ({"rank": 1.5}, "rank"),
])
def test_bad_scalars_raise(kwargs, match):
    args = {"units": 6, "factors": [(2, 3), (3, 2)], **kwargs}
    with pytest.raises(ValueError, match=match):
        KroneckerDense(**args)


# ---------------------------------------------------------------------------
# serialisation and training
# ---------------------------------------------------------------------------

def test_config_round_trip():
    check_config_round_trip(
        KroneckerDense,
        {"units": 6, "factors": [(2, 3), (3, 2)], "rank": 2, "activation": "relu",
         "use_bias": False},
        (2, 6),
    )


def test_saving_round_trip(tmp_path):
    check_saving_round_trip(
        lambda: KroneckerDense(12, factors=[(2, 2), (3, 3), (1, 2)], rank=2, activation="tanh"),
        (3, 6), tmp_path)


@pytest.mark.training
def test_fit_step():
    check_fit_step(lambda: KroneckerDense(6, factors=[(2, 3), (4, 2)], rank=2), (4, 8))
