"""Tests of experiments/figures.py: the pure helpers against independent references
(np.kron, np.linalg.matrix_rank, closed-form receptive fields) and the PNG output."""

import os
import sys

import numpy as np
import pytest

from experiments import figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def np_kron_all(factors):
    out = factors[0]
    for f in factors[1:]:
        out = np.kron(out, f)
    return out


def is_kron_of(matrix, m, n):
    """True iff ``matrix`` is ``A (x) B`` with ``A`` of shape ``(m, n)`` (Van Loan-
    Pitsianis: the rearrangement with one row per block of ``B`` has rank 1)."""
    p, q = matrix.shape[0] // m, matrix.shape[1] // n
    blocks = matrix.reshape(m, p, n, q).transpose(0, 2, 1, 3).reshape(m * n, p * q)
    return np.linalg.matrix_rank(blocks) == 1


# -- gallery_kernels -------------------------------------------------------------


def test_gallery_rows_sizes_and_parameter_counts():
    rows = figures.gallery_kernels(seed=0)
    assert set(rows) == {"kronecker", "fractal", "rank1"}
    shapes = {r: [k.shape for _, k, _ in panels] for r, panels in rows.items()}
    counts = {r: [n for _, _, n in panels] for r, panels in rows.items()}
    assert shapes == {"kronecker": [(27, 27)] * 3, "fractal": [(27, 27)] * 3,
                      "rank1": [(27, 27), (9, 9), (9, 9)]}
    assert counts == {"kronecker": [27] * 3, "fractal": [9] * 3, "rank1": [54, 18, 18]}
    for panels in rows.values():
        for title, kernel, n in panels:
            assert isinstance(title, str) and title
            assert np.all(np.isfinite(kernel))


def test_random_kronecker_kernels_equal_np_kron_of_their_factors():
    f = figures.gallery_factors(seed=3)
    rows = figures.gallery_kernels(seed=3)
    for factors, (_, kernel, n) in zip(f["kronecker"], rows["kronecker"]):
        assert [a.shape for a in factors] == [(3, 3)] * 3
        assert n == sum(a.size for a in factors)
        np.testing.assert_allclose(kernel, np_kron_all(factors), rtol=1e-12)
        # Kronecker structure at both levels, without using the factors,
        # and rank(A (x) B (x) C) = 3 * 3 * 3 for generic full-rank factors.
        assert is_kron_of(kernel, 3, 3) and is_kron_of(kernel, 9, 9)
        assert np.linalg.matrix_rank(kernel) == 27
    _, k9, n9 = rows["rank1"][1]
    np.testing.assert_allclose(k9, np.kron(*f["kronecker_9"]), rtol=1e-12)
    assert n9 == 18 and is_kron_of(k9, 3, 3) and np.linalg.matrix_rank(k9) == 9


def test_rank1_kernels_have_matrix_rank_one():
    f = figures.gallery_factors(seed=0)
    rows = figures.gallery_kernels(seed=0)
    (_, k27, n27), _, (_, k9, n9) = rows["rank1"]
    for kernel, (u, v), n in [(k27, f["rank1_27"], n27), (k9, f["rank1_9"], n9)]:
        assert np.linalg.matrix_rank(kernel) == 1
        assert n == u.size + v.size
        np.testing.assert_allclose(kernel, np.outer(u, v), rtol=1e-12)


def test_fractals_are_binary_self_products():
    rows = figures.gallery_kernels()
    patterns = list(figures.PATTERNS.values())
    assert len(patterns) == len(rows["fractal"]) == 3
    for p, (_, kernel, _) in zip(patterns, rows["fractal"]):
        assert set(np.unique(p)) <= {0.0, 1.0}
        np.testing.assert_array_equal(kernel, np.kron(np.kron(p, p), p))
        assert set(np.unique(kernel)) == {0.0, 1.0}
        # Self-similarity: the 9x9 block (i, j) is P[i, j] times the 9x9 fractal.
        sub = np.kron(p, p)
        for i in range(3):
            for j in range(3):
                np.testing.assert_array_equal(
                    kernel[9 * i:9 * i + 9, 9 * j:9 * j + 9], p[i, j] * sub)
    carpet = rows["fractal"][0][1]
    assert carpet[9:18, 9:18].sum() == 0 and carpet.sum() == 8**3


def test_gallery_is_deterministic_in_seed():
    a, b, c = (figures.gallery_kernels(seed=s) for s in (5, 5, 6))
    for (_, ka, _), (_, kb, _), (_, kc, _) in zip(a["kronecker"], b["kronecker"], c["kronecker"]):
        np.testing.assert_array_equal(ka, kb)
        assert not np.allclose(ka, kc)


# -- receptive_field_table -------------------------------------------------------


def test_receptive_field_table_matches_closed_forms():
    t = figures.receptive_field_table(max_depth=8, kernel_size=3)
    L = np.arange(1, 9)
    assert t["depth"] == list(L)
    assert t["plain"] == list(2 * L + 1)
    assert t["dilated"] == list(2 ** (L + 1) - 1)
    assert t["kronecker"] == list(3**L)
    assert t["params"] == list(9 * L)
    for name in ("plain", "dilated", "kronecker"):
        assert t[f"dense_{name}"] == [rf * rf for rf in t[name]]
    assert t["dense_kronecker"][-1] == 3**16


@pytest.mark.parametrize("k", [2, 5])
def test_receptive_field_table_other_kernel_sizes(k):
    t = figures.receptive_field_table(max_depth=5, kernel_size=k)
    L = np.arange(1, 6)
    assert t["plain"] == list(1 + (k - 1) * L)
    assert t["dilated"] == list(1 + (k - 1) * (2**L - 1))
    assert t["kronecker"] == list(k**L)
    assert t["params"] == list(k * k * L)


@pytest.mark.parametrize("kwargs", [{"max_depth": 0}, {"max_depth": 2.5}, {"kernel_size": 1}])
def test_receptive_field_table_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        figures.receptive_field_table(**kwargs)


def test_pure_helpers_work_without_matplotlib_and_drawing_says_how_to_install(
        monkeypatch, tmp_path):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import` raise ImportError
    figures.gallery_kernels()
    figures.receptive_field_table()
    with pytest.raises(ImportError, match="pip install matplotlib"):
        figures.receptive_field_growth(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# -- PNG output ------------------------------------------------------------------


def assert_valid_png(path):
    from matplotlib.image import imread

    data = open(path, "rb").read()
    assert len(data) > 1000 and data[:8] == PNG_SIGNATURE
    image = imread(path)
    h, w = image.shape[:2]
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert 300 <= h <= 3000 and 300 <= w <= 3000
    assert image[..., :3].std() > 0.01  # something was drawn


def test_kronecker_kernel_gallery_writes_png(tmp_path):
    path = tmp_path / "gallery.png"
    assert figures.kronecker_kernel_gallery(path, seed=1) == path
    assert_valid_png(path)


def test_receptive_field_growth_writes_png(tmp_path):
    path = str(tmp_path / "rf.png")
    assert figures.receptive_field_growth(path, max_depth=6) == path
    assert_valid_png(path)


def test_write_all_creates_folder_and_writes_fixed_names(tmp_path):
    directory = tmp_path / "out" / "figs"
    paths = figures.write_all(directory)
    assert directory.is_dir()
    assert [p.rsplit("/", 1)[-1] for p in map(str, paths)] == [
        "kronecker_kernels.png", "receptive_field_growth.png"]
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["kronecker_kernels.png", "receptive_field_growth.png"])
    for p in paths:
        assert_valid_png(p)
    assert figures.write_all(directory) == paths  # rerun overwrites in place


def test_command_line_prints_the_written_paths(capsys, tmp_path):
    assert figures.main([str(tmp_path / "figs")]) == 0
    paths = capsys.readouterr().out.split()
    assert sorted(os.path.basename(p) for p in paths) == sorted(os.listdir(tmp_path / "figs"))
    for path in paths:
        assert_valid_png(path)
