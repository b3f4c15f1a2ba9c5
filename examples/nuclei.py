"""One real fluorescence-microscopy image of nuclei with its labels (from stardist).

PyPI `stardist` ships ``data/images/img2d.tif`` (512x512 uint16) and
``mask2d.tif`` (labelled nuclei); ``pip install --no-deps stardist tifffile`` is
enough (the package is not imported, only its files are read).
"""

import importlib.util
import os

import numpy as np

INSTALL_HINT = "The nucleus image needs: pip install --no-deps stardist tifffile"


def _stardist_file(name):
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(INSTALL_HINT)
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "images", name)
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing. {INSTALL_HINT}")
    return path


def nuclei_image():
    """``(image uint16 (512, 512), labels int32 (512, 512))``, 0 = background."""
    try:
        import tifffile
    except ImportError as error:
        raise RuntimeError(INSTALL_HINT) from error
    image = tifffile.imread(_stardist_file("img2d.tif"))
    labels = tifffile.imread(_stardist_file("mask2d.tif"))
    return np.asarray(image), np.asarray(labels).astype(np.int32)


def nuclei_tiles(split="train", tile=64, test_columns=0.25):
    """Non-overlapping tiles for binary segmentation (foreground = any nucleus).

    The image's right ``test_columns`` share of columns gives the "test" tiles, the
    rest the "train" tiles, so no pixel is in both. Intensities are scaled to raw
    pixel values 0..255 by the whole image's 1st and 99.8th percentiles.

    Returns:
        ``(images uint8 (N, tile, tile, 1), masks uint8 (N, tile, tile))`` in {0, 1}.
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
    image, labels = nuclei_image()
    lo, hi = np.percentile(image, [1.0, 99.8])
    pixels = np.clip((image.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255
    width = image.shape[1]
    cut = int(round(width * (1 - test_columns) / tile)) * tile
    columns = slice(0, cut) if split == "train" else slice(cut, width)
    pixels, mask = pixels[:, columns], (labels[:, columns] > 0)
    rows, cols = pixels.shape[0] // tile, pixels.shape[1] // tile
    if rows == 0 or cols == 0:
        raise ValueError(f"tile={tile} is larger than the {split} part {pixels.shape}")

    def tiles(a):
        a = a[: rows * tile, : cols * tile]
        return a.reshape(rows, tile, cols, tile).transpose(0, 2, 1, 3).reshape(-1, tile, tile)

    return tiles(pixels).round().astype(np.uint8)[..., None], tiles(mask).astype(np.uint8)
