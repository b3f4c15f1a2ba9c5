"""Fashion-MNIST, offline first: Debian package, then Keras cache, then download.

Sources, in order:
1. the Debian package ``dataset-fashion-mnist``
   (``/usr/share/datasets/fashion-mnist/*-ubyte.gz``, IDX format);
2. the Keras cache (``~/.keras/datasets/fashion-mnist/``, same file names);
3. ``keras.datasets.fashion_mnist.load_data()``, which downloads.
Whatever the source, the decoded arrays are checked against SHA-256 digests, so
every user trains and evaluates on the same bytes (the Debian .gz files are
re-compressed, hence hashing the decoded content, not the files).
"""

import gzip
import hashlib
import os

import numpy as np

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
_FILES = {"train": "train", "test": "t10k"}
# SHA-256 of the decoded uint8 pixel and label arrays.
_SHA256 = {
    "train": ("2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
              "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7"),
    "test": ("c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
             "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9"),
}
INSTALL_HINT = (
    "Fashion-MNIST is not available offline and could not be downloaded. Install it "
    "with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, as root), or run "
    "`python -c \"import keras; keras.datasets.fashion_mnist.load_data()\"` once on a "
    "machine with internet access to fill the Keras cache (~/.keras/datasets)."
)


def _read_idx(path, header):
    with gzip.open(path, "rb") as f:
        # A copy: frombuffer over bytes is read-only, and users shuffle or edit in place.
        return np.frombuffer(f.read(), np.uint8, offset=header).copy()


def _from_directory(directory, split):
    prefix = _FILES[split]
    images = os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz")
    labels = os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz")
    if not (os.path.exists(images) and os.path.exists(labels)):
        return None
    x = _read_idx(images, 16).reshape(-1, 28, 28, 1)
    y = _read_idx(labels, 8)
    return x, y


def _keras_cache_dir():
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(base, "datasets", "fashion-mnist")


def _download(split):
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as error:  # no network, proxy, ...
        raise FileNotFoundError(f"{INSTALL_HINT} (download failed: {error})") from error
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    return x.reshape(-1, 28, 28, 1), y


def _verify(x, y, split, source):
    digests = (hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(),
               hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest())
    if digests != _SHA256[split]:
        raise ValueError(
            f"Fashion-MNIST {split} split from {source} does not match the published "
            "data (SHA-256 of the decoded arrays differs): the files are corrupt or not "
            "Fashion-MNIST. Delete them and reinstall."
        )


def fashion_mnist(split="train", source=None):
    """Load a Fashion-MNIST split as NumPy arrays.

    Args:
        split: `"train"` (60,000 images) or `"test"` (10,000 images).
        source: `None` (first available), `"debian"`, `"keras_cache"` or
            `"download"`.

    Returns:
        ``(images, labels)``: uint8 ``(N, 28, 28, 1)`` in 0-255 and uint8 ``(N,)``
        class ids 0-9 (see ``CLASS_NAMES``).
    """
    if split not in _FILES:
        raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
    loaders = {
        "debian": lambda: _from_directory(DEBIAN_DIR, split),
        "keras_cache": lambda: _from_directory(_keras_cache_dir(), split),
        "download": lambda: _download(split),
    }
    if source is not None and source not in loaders:
        raise ValueError(
            f"`source` must be one of {sorted(loaders)} or None. Received: source={source!r}")
    for name in [source] if source else list(loaders):
        loaded = loaders[name]()
        if loaded is not None:
            x, y = loaded
            _verify(x, y, split, name)
            return x, y
    if source in ("debian", "keras_cache"):
        where = DEBIAN_DIR if source == "debian" else _keras_cache_dir()
        raise FileNotFoundError(f"Fashion-MNIST ({split}) is not in {where} (source="
                                f"{source!r}). " + INSTALL_HINT.split(". ", 1)[1])
    raise FileNotFoundError(INSTALL_HINT)
