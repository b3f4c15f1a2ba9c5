"""Tests of kronecker_zoo.kernels: kron, dilate, collapse, receptive_field."""

import itertools

import keras
import numpy as np
import pytest

from kronecker_zoo import kernels
from tests import reference as ref


def rng(seed=0):
    return np.random.default_rng(seed)


def to_numpy(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


# -- kron ---------------------------------------------------------------------


def np_kron_all(factors):
    out = factors[0]
    for f in factors[1:]:
        out = np.kron(out, f)
    return out


@pytest.mark.parametrize("ndim", [2, 4])
@pytest.mark.parametrize("num_factors", [2, 3])
def test_kron_matches_numpy(ndim, num_factors):
    g = rng(ndim * 10 + num_factors)
    shapes = [tuple(int(v) for v in g.integers(1, 4, size=ndim)) for _ in range(num_factors)]
    factors = [g.standard_normal(s) for s in shapes]
    expected = np_kron_all(factors)
    got = kernels.kron(*factors)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float64
    assert got.shape == expected.shape == tuple(np.prod([s[a] for s in shapes]) for a in range(ndim))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)
    # list form kron([A, B, ...]) is the same
    np.testing.assert_allclose(kernels.kron(list(factors)), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("ndim", [2, 4])
@pytest.mark.parametrize("num_factors", [2, 3])
def test_kron_keras_tensors(ndim, num_factors):
    g = rng(100 + ndim * 10 + num_factors)
    shapes = [tuple(int(v) for v in g.integers(1, 4, size=ndim)) for _ in range(num_factors)]
    factors = [g.standard_normal(s).astype("float32") for s in shapes]
    got = kernels.kron(*[keras.ops.convert_to_tensor(f) for f in factors])
    assert not isinstance(got, np.ndarray)  # computed with keras.ops, stays a tensor
    expected = np_kron_all([f.astype(np.float64) for f in factors])
    np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-6, atol=1e-6)


def test_kron_factor_order_matters():
    g = rng(1)
    a, b = g.standard_normal((2, 3)), g.standard_normal((3, 2))
    assert not np.allclose(kernels.kron(a, b), kernels.kron(b, a))
    np.testing.assert_allclose(kernels.kron(a, b), np.kron(a, b), rtol=0, atol=1e-14)


# -- dilate -------------------------------------------------------------------


def hand_dilate(kernel, rh, rw):
    """The seed's K (x) E with E the one-hot (rh, rw) matrix, trimmed."""
    e = np.zeros((rh, rw))
    e[0, 0] = 1.0
    if kernel.ndim == 4:
        e = e[:, :, None, None]
    full = np.kron(kernel, e)
    kh, kw = kernel.shape[:2]
    return full[: (kh - 1) * rh + 1, : (kw - 1) * rw + 1]


RATES = [1, 2, 3, 4, (1, 3), (2, 1), (4, 2), (3, 4)]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("shape", [(3, 3), (2, 4), (1, 3), (3, 2, 2, 3)])
def test_dilate_matches_hand_construction(shape, rate):
    g = rng(7)
    kernel = g.standard_normal(shape)
    rh, rw = ref.as_pair(rate)
    expected = hand_dilate(kernel, rh, rw)
    got = kernels.dilate(kernel, rate)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rate", [2, (3, 2)])
def test_dilate_equals_dilated_conv(rate):
    """Convolving with dilate(K, r) undilated == convolving with K at dilation r."""
    g = rng(8)
    kernel = g.standard_normal((3, 2, 2, 3))
    x = g.standard_normal((2, 13, 11, 2))
    expected = ref.conv2d(x, kernel, dilation=rate)
    got = ref.conv2d(x, kernels.dilate(kernel, rate))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_dilate_keras_tensor():
    g = rng(9)
    kernel = g.standard_normal((3, 3, 2, 2)).astype("float32")
    got = kernels.dilate(keras.ops.convert_to_tensor(kernel), (2, 3))
    np.testing.assert_allclose(to_numpy(got), hand_dilate(kernel, 2, 3), rtol=0, atol=0)


# -- collapse: the seed identity ------------------------------------------------


SEED_CASES = [(a, n) for a in (2, 3, 4) for n in (2, 3, 4)]  # L = n - 1 = 1..3


@pytest.mark.parametrize("a,num_kernels", SEED_CASES)
def test_seed_identity_collapse_equals_kron(a, num_kernels):
    """a x a kernels K_0..K_L at dilations 1, a, a^2, ...: collapse == kron(K_L, ..., K_0)."""
    g = rng(a * 10 + num_kernels)
    ks = [g.standard_normal((a, a)) for _ in range(num_kernels)]
    rates = [a ** i for i in range(num_kernels)]
    got = kernels.collapse(ks, rates)
    expected = np_kron_all(ks[::-1])
    assert got.shape == (a ** num_kernels, a ** num_kernels)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # the package's own kron, same order
    np.testing.assert_allclose(got, kernels.kron(*ks[::-1]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("a,num_kernels", SEED_CASES)
def test_seed_identity_by_running_the_cascade(a, num_kernels):
    """Actually run the dilated cascade vs one conv with the kron kernel (valid)."""
    g = rng(1000 + a * 10 + num_kernels)
    ks = [g.standard_normal((a, a)) for _ in range(num_kernels)]
    rates = [a ** i for i in range(num_kernels)]
    size = a ** num_kernels + 5
    x = g.standard_normal((2, size, size + 2, 1))
    cascade = ref.cascade(x, [k[:, :, None, None] for k in ks], rates)
    one = ref.conv2d(x, np_kron_all(ks[::-1])[:, :, None, None])
    assert cascade.shape == one.shape == (2, 6, 8, 1)
    np.testing.assert_allclose(cascade, one, rtol=0, atol=1e-10 * max(1, np.abs(one).max()))


COLLAPSE_CASES = [
    # (kernel shapes, dilation rates)
    ([(3, 3, 2, 3), (2, 2, 3, 4)], [1, 3]),
    ([(3, 1, 1, 2), (1, 3, 2, 2), (3, 3, 2, 3)], [1, (2, 1), (2, 3)]),
    ([(2, 3, 3, 1), (3, 2, 1, 2), (1, 1, 2, 3), (3, 3, 3, 2)], [2, 1, 4, (1, 2)]),
    ([(3, 3, 2, 2), (3, 3, 2, 2), (3, 3, 2, 2)], [1, 2, 4]),  # overlapping taps
]


@pytest.mark.parametrize("shapes,rates", COLLAPSE_CASES)
def test_collapse_multichannel_matches_cascade(shapes, rates):
    g = rng(len(shapes))
    ks = [g.standard_normal(s) for s in shapes]
    w = kernels.collapse(ks, rates)
    pairs = [ref.as_pair(r) for r in rates]
    eh = 1 + sum((s[0] - 1) * p[0] for s, p in zip(shapes, pairs))
    ew = 1 + sum((s[1] - 1) * p[1] for s, p in zip(shapes, pairs))
    assert w.shape == (eh, ew, shapes[0][2], shapes[-1][3])
    x = g.standard_normal((2, eh + 4, ew + 3, shapes[0][2]))
    expected = ref.cascade(x, ks, rates)
    got = ref.conv2d(x, w)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * max(1, np.abs(expected).max()))


def test_collapse_default_rates_and_single_kernel():
    g = rng(3)
    ks = [g.standard_normal((2, 3, 1, 2)), g.standard_normal((3, 2, 2, 2))]
    np.testing.assert_allclose(kernels.collapse(ks), kernels.collapse(ks, [1, 1]), atol=0)
    x = g.standard_normal((1, 9, 9, 1))
    np.testing.assert_allclose(ref.conv2d(x, kernels.collapse(ks)), ref.cascade(x, ks), atol=1e-12)
    single = g.standard_normal((3, 3, 2, 2))
    np.testing.assert_array_equal(kernels.collapse([single], [2]), hand_dilate(single, 2, 2))


def test_collapse_keras_tensors_match_numpy():
    g = rng(4)
    ks = [g.standard_normal((3, 3, 2, 3)).astype("float32"),
          g.standard_normal((2, 2, 3, 2)).astype("float32")]
    got = kernels.collapse([keras.ops.convert_to_tensor(k) for k in ks], [1, 3])
    assert not isinstance(got, np.ndarray)
    np.testing.assert_allclose(to_numpy(got), kernels.collapse(ks, [1, 3]), rtol=1e-5, atol=1e-5)


def test_collapse_keeps_dtype():
    g = rng(5)
    ks = [g.standard_normal((3, 3)).astype("float32") for _ in range(2)]
    assert kernels.collapse(ks, [1, 3]).dtype == np.float32


def test_identity_fails_when_rates_are_not_powers_of_the_size():
    """3x3 kernels at dilations 1, 2, 4: the taps overlap and collapse != kron."""
    g = rng(6)
    ks = [g.standard_normal((3, 3)) for _ in range(3)]
    collapsed = kernels.collapse(ks, [1, 2, 4])
    kron = np_kron_all(ks[::-1])
    assert collapsed.shape == (15, 15)  # 1 + 2 * (1 + 2 + 4)
    assert kron.shape == (27, 27)
    # Not merely a different layout: overlapping taps sum products, so even the
    # Frobenius norms differ (kron's norm is the product of the factors' norms).
    assert not np.isclose(np.linalg.norm(collapsed), np.linalg.norm(kron), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(kron), np.prod([np.linalg.norm(k) for k in ks]))
    # ... and the collapsed kernel is still the right one for that cascade.
    x = g.standard_normal((1, 20, 20, 1))
    np.testing.assert_allclose(
        ref.conv2d(x, collapsed[:, :, None, None]),
        ref.cascade(x, [k[:, :, None, None] for k in ks], [1, 2, 4]),
        atol=1e-10,
    )
    # with rates 1, 3, 9 the identity holds again
    np.testing.assert_allclose(kernels.collapse(ks, [1, 3, 9]), kron, atol=1e-12)


# -- receptive_field -------------------------------------------------------------

YU_KOLTUN_KERNELS = [3] * 7 + [1]
YU_KOLTUN_RATES = [1, 1, 2, 4, 8, 16, 1, 1]
YU_KOLTUN_RF = [3, 5, 9, 17, 33, 65, 67, 67]  # Yu & Koltun (2016), Table 1


def test_receptive_field_context_module():
    for depth in range(1, 9):
        rf = kernels.receptive_field(YU_KOLTUN_KERNELS[:depth], YU_KOLTUN_RATES[:depth])
        assert rf == YU_KOLTUN_RF[depth - 1]
        assert isinstance(rf, int)


def test_receptive_field_context_module_equals_collapsed_extent():
    """The collapsed (all-linear) context module's kernel is rf x rf."""
    g = rng(11)
    ks = [g.standard_normal((k, k, 1, 1)) for k in YU_KOLTUN_KERNELS]
    w = kernels.collapse(ks, YU_KOLTUN_RATES)
    assert w.shape[:2] == (67, 67)
    assert w.shape[0] == kernels.receptive_field(YU_KOLTUN_KERNELS, YU_KOLTUN_RATES)


def _empirical_rf_check(ks, ds, ss, rf):
    """A valid cascade maps an rf x rf input to exactly one pixel that depends on both
    far corners, and cannot run on an (rf - 1) x (rf - 1) input."""
    g = rng(12)
    kern = [g.standard_normal((ref.as_pair(k)[0], ref.as_pair(k)[1], 1, 1)) + 3 for k in ks]
    rh, rw = ref.as_pair(rf)
    x = g.standard_normal((1, rh, rw, 1))
    y = ref.cascade(x, kern, ds, ss)
    assert y.shape == (1, 1, 1, 1)
    for corner in [(0, 0), (rh - 1, rw - 1), (0, rw - 1), (rh - 1, 0)]:
        x2 = x.copy()
        x2[0, corner[0], corner[1], 0] += 1.0
        assert not np.isclose(ref.cascade(x2, kern, ds, ss)[0, 0, 0, 0], y[0, 0, 0, 0])
    with pytest.raises(ValueError):
        ref.cascade(x[:, : rh - 1, : rw - 1], kern, ds, ss)


@pytest.mark.parametrize(
    "ks,ds,ss,expected",
    [
        ([3, 3, 3], [1, 1, 1], [2, 2, 1], 1 + 2 + 2 * 2 + 2 * 4),
        ([3, 3], [1, 1], [2, 1], 7),
        ([5, 3, 3], [1, 2, 1], [1, 2, 2], 1 + 4 + 2 * 2 + 2 * 2),
        ([2, 2, 2], [1, 1, 1], [2, 2, 2], 1 + 1 + 2 + 4),
    ],
)
def test_receptive_field_with_strides(ks, ds, ss, expected):
    assert kernels.receptive_field(ks, ds, ss) == expected
    _empirical_rf_check(ks, ds, ss, expected)


def test_receptive_field_pairs():
    ks = [(3, 1), (1, 3), 3]
    ds = [(1, 1), 2, (2, 3)]
    ss = [(2, 1), 1, 1]
    rf = kernels.receptive_field(ks, ds, ss)
    assert isinstance(rf, tuple)
    # h: 1 + 2*1 + 0 + 2*2*2 = 11; w: 1 + 0 + 2*2 + 2*3 = 11
    assert rf == (11, 11)
    ks2 = [(3, 5), (3, 3)]
    rf2 = kernels.receptive_field(ks2, [1, (1, 2)])
    assert rf2 == (5, 9)
    _empirical_rf_check(ks, ds, ss, rf)
    _empirical_rf_check(ks2, [1, (1, 2)], [1, 1], rf2)


def test_receptive_field_defaults():
    assert kernels.receptive_field([3, 3, 3]) == 7
    assert kernels.receptive_field([]) == 1


# -- errors ------------------------------------------------------------------


def test_collapse_channel_mismatch():
    ks = [np.zeros((3, 3, 2, 3)), np.zeros((3, 3, 4, 1))]
    with pytest.raises(ValueError, match=r"kernels\[1\] takes 4 input channels"):
        kernels.collapse(ks)


def test_collapse_errors():
    with pytest.raises(ValueError, match="one dilation rate per kernel"):
        kernels.collapse([np.zeros((3, 3)), np.zeros((3, 3))], [1])
    with pytest.raises(ValueError, match="must all be 2-D or all 4-D"):
        kernels.collapse([np.zeros((3, 3)), np.zeros((3, 3, 1, 1))])
    with pytest.raises(ValueError, match="2-D .* or 4-D"):
        kernels.collapse([np.zeros((3, 3, 1))])
    with pytest.raises(ValueError, match="at least one kernel"):
        kernels.collapse([])
    with pytest.raises(ValueError, match=r"dilation_rates\[1\]"):
        kernels.collapse([np.zeros((3, 3)), np.zeros((3, 3))], [1, 0])
    with pytest.raises(ValueError, match=r"dilation_rates\[0\]"):  # the first too, by name
        kernels.collapse([np.zeros((3, 3)), np.zeros((3, 3))], [0, 1])


def test_kron_errors():
    with pytest.raises(ValueError, match="at least two factors"):
        kernels.kron(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"2-D \(kh, kw\) or all 4-D"):
        kernels.kron(np.zeros((2, 2)), np.zeros((2, 2, 1, 1)))
    with pytest.raises(ValueError, match=r"2-D \(kh, kw\) or all 4-D"):
        kernels.kron(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))


def test_dilate_errors():
    with pytest.raises(ValueError, match="2-D .* or 4-D"):
        kernels.dilate(np.zeros((3, 3, 3)), 2)
    for bad in (0, (1, 2, 3), (2, 0), -1, True, 1.5, (1.5, 2), "22"):
        with pytest.raises(ValueError, match="`rate` must be a positive int"):
            kernels.dilate(np.zeros((3, 3)), bad)
    # a non-numeric string is still rejected with ValueError (message is int()'s own)
    with pytest.raises(ValueError):
        kernels.dilate(np.zeros((3, 3)), "x")


def test_receptive_field_errors():
    with pytest.raises(ValueError, match="as many dilation rates and strides"):
        kernels.receptive_field([3, 3], [1])
    with pytest.raises(ValueError, match="as many dilation rates and strides"):
        kernels.receptive_field([3, 3], [1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="kernel_size"):
        kernels.receptive_field([3, 0])


def test_kronecker_kernel_shape():
    shapes = [(3, 1, 2, 4), (2, 3, 5, 1), (1, 2, 3, 3)]
    expected = np_kron_all([np.zeros(s) for s in shapes]).shape
    assert kernels.kronecker_kernel_shape(shapes) == expected


def test_kron_product_index_convention():
    """Along each axis i = i_0 * n_1 + i_1, checked entry by entry for 4-D factors."""
    g = rng(13)
    a, b = g.standard_normal((2, 3, 2, 2)), g.standard_normal((3, 2, 2, 3))
    k = kernels.kron(a, b)
    for idx_a in itertools.product(*[range(n) for n in a.shape]):
        for idx_b in [(0, 0, 0, 0), (2, 1, 1, 2), (1, 0, 1, 1)]:
            idx = tuple(i * n + j for i, n, j in zip(idx_a, b.shape, idx_b))
            assert k[idx] == a[idx_a] * b[idx_b]


@pytest.mark.parametrize("kh, kw, c_in, c_out, groups", [
    (3, 3, 4, 4, 4), (3, 1, 2, 6, 2), (1, 1, 6, 3, 3), (5, 3, 4, 8, 2), (3, 3, 3, 5, 1)])
def test_block_identity_against_a_loop(kh, kw, c_in, c_out, groups):
    expected = np.zeros((kh, kw, c_in, c_out))
    for a in range(c_in):
        for b in range(c_out):
            if (a * groups) // c_in == (b * groups) // c_out:
                expected[kh // 2, kw // 2, a, b] = groups / c_out
    np.testing.assert_array_equal(kernels.block_identity(kh, kw, c_in, c_out, groups), expected)
    if c_in == c_out == groups:  # the identity convolution
        x = np.random.default_rng(0).normal(size=(1, 7, 7, c_in))
        np.testing.assert_allclose(ref.conv2d(x, expected, padding="same"), x, atol=1e-12)
