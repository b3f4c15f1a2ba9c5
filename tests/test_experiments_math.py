"""Tests of experiments/cascade_identity.py, kronecker_expressivity.py, parameter_scaling.py:
the math against independent references (scipy correlation, np.kron, SVD tails, built
layers' count_params) and each run(tiny=True)'s JSON and PNG files."""

import json
import os

import numpy as np
import pytest
from scipy.signal import correlate2d

from experiments import cascade_identity as ci
from experiments import kronecker_expressivity as ke
from experiments import parameter_scaling as ps

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_outputs(out_dir, name, result):
    path = os.path.join(out_dir, f"{name}.json")
    with open(path) as f:
        text = f.read()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"  # sorted keys
    assert data["claim"] and data["finding"] and data["tiny"] is True
    assert data["figures"] == result["figures"] and result["figures"]
    for fig in data["figures"]:
        assert fig.startswith(name) and fig.endswith(".png")
        with open(os.path.join(out_dir, fig), "rb") as f:
            blob = f.read()
        assert blob[:8] == PNG_SIGNATURE and len(blob) > 2000
    return data


def dilated(kernel, d):
    """Zero-stuffed kernel, built here independently of kronecker_zoo."""
    kh, kw = kernel.shape
    out = np.zeros(((kh - 1) * d + 1, (kw - 1) * d + 1))
    out[::d, ::d] = kernel
    return out


# -- cascade_identity ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    out = tmp_path_factory.mktemp("cascade")
    return out, ci.run(str(out), tiny=True)


def test_correlate_matches_scipy_with_dilation_batch_and_channels():
    rng = np.random.default_rng(1)
    x, k = rng.standard_normal((20, 17)), rng.standard_normal((3, 4))
    for d in (1, 2, 3):
        ref = correlate2d(x, dilated(k, d), mode="valid")
        np.testing.assert_allclose(ci.correlate(x, k, d), ref, atol=1e-12)
        np.testing.assert_allclose(ci.correlate(np.stack([x, 2 * x]), k, d)[1], 2 * ref,
                                   atol=1e-12)
    xc, kc = rng.standard_normal((12, 11, 2)), rng.standard_normal((3, 3, 2, 3))
    y = ci.correlate(xc, kc, 2)
    for o in range(3):
        ref = sum(correlate2d(xc[..., c], dilated(kc[:, :, c, o], 2), mode="valid")
                  for c in range(2))
        np.testing.assert_allclose(y[..., o], ref, atol=1e-12)
    with pytest.raises(ValueError, match="exceeds"):
        ci.correlate(x, k, 10)
    with pytest.raises(ValueError, match="dilation"):
        ci.correlate(x, k, 0)


def test_seed_identity_independently_with_scipy():
    rng = np.random.default_rng(2)
    for a, n in ((2, 3), (3, 3), (4, 2)):
        ks = [rng.standard_normal((a, a)) for _ in range(n)]
        x = rng.standard_normal((a**n + 9, a**n + 9))
        y = x
        for layer, k in enumerate(ks):  # K_0 first, dilation a**layer
            y = correlate2d(y, dilated(k, a**layer), mode="valid")
        w = ks[-1]
        for k in ks[-2::-1]:  # K_{L-1} (x) ... (x) K_0
            w = np.kron(w, k)
        np.testing.assert_allclose(y, correlate2d(x, w, mode="valid"), atol=1e-10)


def test_cascade_exact_and_broken_cases(cascade):
    out, r = cascade
    data = check_outputs(str(out), "cascade_identity", r)
    assert {(e["a"], e["layers"]) for e in data["exact"]} == {
        (a, n) for a in (2, 3, 4) for n in (2, 3)}
    for e in data["exact"]:
        assert e["collapse_vs_kron_max_abs"] < 1e-10
        assert e["kron_vs_np_kron_max_abs"] < 1e-10
        assert e["cascade_vs_one_conv_max_rel"] < 1e-10
        assert e["wrong_order_rel_fro"] > 0.1  # the factor order matters
    ov = data["overlap"]
    assert (ov["collapsed_extent"], ov["naive_kron_extent"]) == (15, 27)
    assert ov["cascade_vs_collapse_rel_max"] < 1e-10      # still one convolution
    assert ov["control_dilations_3l_rank1_rel_error_max"] < 1e-10
    for split in ("3x3 (x) 5x5", "5x5 (x) 3x3"):
        assert ov["best_kronecker"][split]["rank1_rel_error_min"] > 1e-3
    assert ov["collapsed_vs_naive_kron_rel_fro_mean"] > 1e-3
    for case in data["relu"]:
        if case["kernels"] == "N(0,1)":
            assert case["relu_vs_linear_rel_fro"] > 1e-3
        else:  # non-negative kernels on non-negative images: ReLU never fires
            assert case["relu_vs_linear_rel_fro"] < 1e-10
    dense, factored = data["channels"]["dense"], data["channels"]["factored"]
    assert dense["collapse_vs_path_sum_max_abs"] < 1e-10
    assert dense["cascade_vs_one_conv_rel_max"] < 1e-10
    assert dense["best_4d_kronecker_rank1_rel_error"] > 1e-3
    assert factored["collapse_vs_kron_max_abs"] < 1e-10
    assert factored["cascade_vs_one_conv_rel_max"] < 1e-10


# -- kronecker_expressivity ----------------------------------------------------------


def test_rearrangement_maps_kron_to_outer_product():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((4, 5))
    np.testing.assert_allclose(ke.kron_rearrange(np.kron(a, b), a.shape, b.shape),
                               np.outer(a.ravel(), b.ravel()), atol=1e-14)
    a4, b4 = rng.standard_normal((3, 3, 2, 2)), rng.standard_normal((1, 1, 4, 2))
    np.testing.assert_allclose(ke.kron_rearrange(np.kron(a4, b4), a4.shape, b4.shape),
                               np.outer(a4.ravel(), b4.ravel()), atol=1e-14)
    c = rng.standard_normal((3, 3))
    t = ke.kron_rearrange(np.kron(np.kron(a, b), c), a.shape, b.shape, c.shape)
    np.testing.assert_allclose(t, np.einsum("i,j,k->ijk", a.ravel(), b.ravel(), c.ravel()),
                               atol=1e-14)
    with pytest.raises(ValueError, match="multiply"):
        ke.kron_rearrange(np.zeros((9, 9)), (3, 3), (2, 3))


def test_rank1_kronecker_recovers_exact_products():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 3)), rng.standard_normal((5, 5))
    x = np.kron(a, b)
    (a1,), (b1,), approx = ke.nearest_kronecker(x, (3, 3), (5, 5), rank=1)
    np.testing.assert_allclose(approx, x, atol=1e-12)
    np.testing.assert_allclose(np.kron(a1, b1), x, atol=1e-12)
    assert ke.kronecker_errors(x, (3, 3), (5, 5))[1] < 1e-12
    c = rng.standard_normal((3, 3))
    x3 = np.kron(np.kron(a, c), rng.standard_normal((3, 3)))
    _, approx3, err = ke.kronecker3_cp(x3, [(3, 3), (3, 3), (3, 3)], rank=1)
    assert err < 1e-10
    np.testing.assert_allclose(approx3, x3, atol=1e-10)


def test_kronecker_and_low_rank_errors_equal_svd_tails():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 9))
    # the rearrangement, written out here: rows = 3x3 block (i0, j0), columns = (i1, j1)
    rx = x.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)
    s = np.linalg.svd(rx, compute_uv=False)
    sl = np.linalg.svd(x, compute_uv=False)
    errs, lerrs = ke.kronecker_errors(x, (3, 3), (3, 3)), ke.low_rank_errors(x)
    for r in range(1, 9):
        tail = np.sqrt(np.sum(s[r:] ** 2) / np.sum(s**2))
        approx = ke.nearest_kronecker(x, (3, 3), (3, 3), rank=r)[2]
        actual = np.linalg.norm(x - approx) / np.linalg.norm(x)
        assert actual == pytest.approx(tail, abs=1e-12)
        assert errs[r] == pytest.approx(tail, abs=1e-12)
        low = np.linalg.norm(x - ke.best_low_rank(x, r)) / np.linalg.norm(x)
        assert lerrs[r] == pytest.approx(low, abs=1e-12)
        assert low == pytest.approx(np.sqrt(np.sum(sl[r:] ** 2) / np.sum(sl**2)), abs=1e-12)
    assert errs[0] == 1.0 and errs[-1] < 1e-12
    with pytest.raises(ValueError, match="rank"):
        ke.nearest_kronecker(x, (3, 3), (3, 3), rank=10)


def test_expressivity_tiny_run(tmp_path):
    r = ke.run(str(tmp_path), tiny=True)
    data = check_outputs(str(tmp_path), "kronecker_expressivity", r)
    p9 = data["patches"]["patches_9x9"]
    for curve in (p9["kronecker_3x3(x)3x3"], p9["low_rank"]):
        assert curve["error"][0] == 1.0 and curve["error"][-1] < 1e-4
        assert all(b <= a + 1e-9 for a, b in zip(curve["error"], curve["error"][1:]))
        assert curve["params"][1] == 18
    cp = data["patches"]["patches_27x27"]["kronecker_3x3(x)3x3(x)3x3_als"]
    assert cp["params"][:3] == [0, 27, 54] and 0 < cp["error"][1] < 1
    drn = data["trained"]["drn_8"]
    assert drn["kernel_shape"] == [3, 3, 64, 64] and len(drn["layers"]) == 3
    assert drn["kronecker_split"] == [[3, 3, 8, 8], [1, 1, 8, 8]]
    k = drn["trained"]["kronecker"]
    assert k["params"][1] == 9 * 64 + 64 and len(k["error"]) == 65 and k["error"][-1] < 1e-4
    assert drn["trained"]["low_rank"]["params"][1] == 3 * 64 + 3 * 64
    for pair in data["equal_params"].values():
        assert 0 < pair["kronecker"] < 1 and 0 < pair["low_rank"] < 1


# -- parameter_scaling ---------------------------------------------------------------


def test_parameter_formulas_against_independent_counts():
    f = ps.formulas(243)
    assert f["dense"] == 64 * 64 * 243 * 243 + 64
    assert f["kronecker_r1"] == (2 * 9 * 8 * 8 + 9 * 3) + 64
    assert f["kronecker_r4"] == 4 * (2 * 9 * 8 * 8 + 9 * 3) + 64
    assert f["low_rank_R64"] == 2 * 243 * 64 * 64 + 64
    assert ps.formulas(3)["kronecker_r1"] == 9 * 8 * 8 + 8 * 8 + 64
    assert [ps.kronecker_depth(k) for k in (1, 3, 4, 9, 10, 27, 243)] == [1, 1, 2, 2, 3, 3, 5]
    import keras

    from kronecker_zoo.layers import KroneckerConv2D

    layer = KroneckerConv2D(64, 27, [(3, 3, 8, 8), (3, 3, 1, 1), (3, 3, 8, 8)], rank=4)
    layer.build((None, 32, 32, 64))
    assert layer.count_params() == ps.formulas(27)["kronecker_r4"]
    conv = keras.layers.Conv2D(64, 5)
    conv.build((None, None, None, 64))
    assert conv.count_params() == ps.formulas(5)["dense"]
    with pytest.raises(ValueError, match="positive int"):
        ps.formulas(0)


def test_parameter_scaling_tiny_run(tmp_path):
    r = ps.run(str(tmp_path), tiny=True)
    data = check_outputs(str(tmp_path), "parameter_scaling", r)
    built = data["built_count_params"]
    assert {"kronecker_r1", "kronecker_r4"} <= set(built["3"]) and "kronecker_r1" in built["27"]
    assert "kronecker_r1" not in built["5"]  # not a power of 3: formula only
    n = 0
    for k, counts in built.items():
        for name, count in counts.items():
            assert count == data["params"][k][name]
            n += 1
    assert n >= 15
    slopes = data["loglog_slope"]["slopes"]
    assert slopes["dense"] == pytest.approx(2.0, abs=0.01)
    assert slopes["low_rank_R64"] == pytest.approx(1.0, abs=0.02)
    assert slopes["kronecker_r1"] < 0.3
    assert data["loglog_slope"]["growth"]["kronecker_r1"].startswith("logarithmic")
