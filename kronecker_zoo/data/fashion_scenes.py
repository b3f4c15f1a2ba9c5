"""Fashion scenes: a segmentation set composed from real Fashion-MNIST items.

Each scene is a ``canvas x canvas`` grey image holding ``items`` Fashion-MNIST
items (28x28) at random positions; the mask labels every pixel with ``class + 1``
where the item's pixel is above ``threshold``, else keeps what was there (0 =
background). Later items overwrite earlier ones where they are above the
threshold (image and mask alike); below it the brighter pixel wins in the image.
Train scenes use the train split's items, test scenes the test split's, so no item
is shared. Deterministic from ``seed``: the same arguments give the same arrays.

Telling a shirt from a pullover pixel by pixel needs context from the whole item,
which is what dilated context modules are for.
"""

import numpy as np

from kronecker_zoo.data.fashion_mnist import fashion_mnist
from kronecker_zoo.data.pipeline import pixel_dataset
from kronecker_zoo.validation import check_class_ids, looks_scaled_to_unit

ITEM_SIZE = 28
NUM_CLASSES = 11  # background + 10 Fashion-MNIST classes
DEFAULT_SCENES = {"train": 10000, "test": 2000}
_SPLIT_SEEDS = {"train": 0, "test": 1}


def _check(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"`{name}` must be an int >= {low}. Received: {name}={value!r}")


def compose_scenes(items, labels, num_scenes, canvas_size=64, items_per_scene=(2, 4),
                   threshold=32, seed=0):
    """Composes scenes from ``items`` (uint8 (N, 28, 28[, 1])) and ``labels`` (N,).

    Returns ``(images uint8 (num_scenes, canvas, canvas, 1), masks uint8
    (num_scenes, canvas, canvas))``.
    """
    _check("num_scenes", num_scenes, 1)
    _check("canvas_size", canvas_size, ITEM_SIZE)
    lo, hi = items_per_scene
    _check("items_per_scene[0]", lo, 1)
    _check("items_per_scene[1]", hi, lo)
    items = np.asarray(items)
    if looks_scaled_to_unit(items) or items.size and (items.min() < 0 or items.max() > 255):
        raise ValueError("items must be raw pixels 0..255 (uint8), as `threshold` is; got "
                         f"dtype {items.dtype}, values in [{items.min():g}, "
                         f"{items.max():g}]" + (" (scaled to [0, 1]?)" if items.max() <= 1
                                                 else ""))
    if not np.issubdtype(items.dtype, np.integer):
        items = np.round(items)
    items = items.astype(np.uint8).reshape(-1, ITEM_SIZE, ITEM_SIZE)
    labels = np.asarray(labels).reshape(-1)
    if len(items) != len(labels) or len(items) == 0:
        raise ValueError(f"Need as many labels as items (and at least one). Received "
                         f"{len(items)} items and {len(labels)} labels")
    check_class_ids(labels, "labels")
    if labels.min() < 0 or labels.max() > 254:
        raise ValueError("labels must be class ids 0..254 (mask ids are label + 1); got "
                         f"values in [{labels.min():g}, {labels.max():g}]")
    labels = labels.astype(np.int64)
    rng = np.random.default_rng(seed)
    counts = rng.integers(lo, hi + 1, size=num_scenes)
    picks = rng.integers(0, len(items), size=(num_scenes, hi))
    offsets = rng.integers(0, canvas_size - ITEM_SIZE + 1, size=(num_scenes, hi, 2))
    images = np.zeros((num_scenes, canvas_size, canvas_size), np.uint8)
    masks = np.zeros((num_scenes, canvas_size, canvas_size), np.uint8)
    span = np.arange(ITEM_SIZE)
    for slot in range(hi):
        scenes = np.nonzero(counts > slot)[0]
        item = items[picks[scenes, slot]]
        rows = offsets[scenes, slot, 0][:, None, None] + span[None, :, None]
        cols = offsets[scenes, slot, 1][:, None, None] + span[None, None, :]
        index = (scenes[:, None, None], rows, cols)
        foreground = item > threshold
        images[index] = np.where(foreground, item, np.maximum(images[index], item))
        label = (labels[picks[scenes, slot]] + 1).astype(np.uint8)[:, None, None]
        masks[index] = np.where(foreground, label, masks[index])
    return images[..., None], masks


def fashion_scenes(split="train", num_scenes=None, canvas_size=64, items_per_scene=(2, 4),
                   threshold=32, seed=0, source=None):
    """Composed segmentation scenes from Fashion-MNIST ``split`` ("train" or "test").

    Args:
        split: `"train"` (items of the train split) or `"test"`.
        num_scenes: int. Defaults to 10,000 (train) / 2,000 (test).
        canvas_size: int >= 28. Scene height and width. Defaults to `64`.
        items_per_scene: `(min, max)` items per scene. Defaults to `(2, 4)`.
        threshold: item pixels above it are foreground. Defaults to `32`.
        seed: int. Scenes are a deterministic function of all arguments.
        source: passed to `fashion_mnist` (where to read the items from).

    Returns:
        ``(images, masks)``: uint8 `(N, canvas, canvas, 1)` raw pixels and uint8
        `(N, canvas, canvas)` labels in ``0..10`` (0 = background, else class + 1).
    """
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
    items, labels = fashion_mnist(split, source=source)
    n = DEFAULT_SCENES[split] if num_scenes is None else num_scenes
    return compose_scenes(items, labels, n, canvas_size, items_per_scene, threshold,
                          seed=[seed, _SPLIT_SEEDS[split]])


def fashion_scenes_dataset(split="train", batch_size=32, shuffle=None, **kwargs):
    """`tf.data.Dataset` of ``(float32 images 0..255, int32 masks)`` batches.

    ``shuffle`` defaults to True for "train"; ``kwargs`` go to `fashion_scenes`.
    """
    images, masks = fashion_scenes(split, **kwargs)
    return pixel_dataset(images, masks, batch_size,
                         shuffle if shuffle is not None else split == "train",
                         kwargs.get("seed", 0))
