"""Calibration images for full-integer ("int8") export, and a check of their range.

Calibration data are always passed explicitly (``representative_data``): they must
be the images the model will see, which a model's name cannot tell (a fine-tuned
zoo model keeps its name). `pretraining_calibration_data` gives the pretraining
images of published weights; `calibration_images` those of a zoo data set.

`check_calibration_range` refuses data whose range cannot be the model's: a zoo
model (one with the zoo's pixel normalisation), or any model whose first layer is a
``Rescaling`` of 8-bit pixels (see `model_input_range`), takes raw pixels in [0, 255],
so data scaled to [0, 1] or [-1, 1] would calibrate it wrongly.
"""

import functools

import numpy as np

from kronecker_zoo.models.pixel_range import model_input_range, pixel_range_problem  # noqa: F401
from kronecker_zoo.validation import positive_int

DEFAULT_CALIBRATION_EXAMPLES = 256
# How much of the user's representative_data int8 export reads by default.
MAX_CALIBRATION_EXAMPLES = 1024
CALIBRATION_SEED = 0
DATASETS = ("fashion_mnist", "fashion_scenes")


SPLITS = ("train", "test")


@functools.lru_cache(maxsize=4)
def _split_images(dataset, split, count, seed):
    from kronecker_zoo import data

    images = getattr(data, dataset)(split)[0]
    if count > len(images):
        raise ValueError(f"The {split} split of {dataset} has {len(images)} images; "
                         f"asked for {count}")
    order = np.random.default_rng(seed).permutation(len(images))[:count]
    return images[np.sort(order)]


def calibration_images(dataset, count=DEFAULT_CALIBRATION_EXAMPLES, seed=CALIBRATION_SEED,
                       split="train"):
    """``count`` seeded-random images of the ``split`` (``"train"`` or ``"test"``) of
    ``dataset`` (see `DATASETS`).

    Returns raw uint8 pixels (0..255), ``(count, H, W, 1)``: the input format of
    the zoo models.
    """
    if dataset not in DATASETS:
        raise ValueError(f"Unknown calibration dataset {dataset!r}. Valid: "
                         f"{', '.join(repr(d) for d in DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}. Valid: {', '.join(map(repr, SPLITS))}")
    count = positive_int(count, "count")
    return _split_images(dataset, split, count, seed).copy()


def pretraining_calibration_data(name, tag=None, count=DEFAULT_CALIBRATION_EXAMPLES,
                                 seed=CALIBRATION_SEED, split="train"):
    """``count`` images of the ``split`` (train by default) of the data set the published
    ``tag`` weights of ``name`` were trained on (the manifest's ``dataset``), as
    `calibration_images` returns them.

    ``tag`` defaults to the model's only published tag. Use it for a model loaded
    with those weights and not fine-tuned on other data.
    """
    from kronecker_zoo import models, weights

    models.spec(name)  # unknown names list the valid ones
    tags = weights.published(name)
    if tag is None:
        if len(tags) != 1:
            raise ValueError(f"Pass `tag`: {name!r} has published weights "
                             f"{', '.join(map(repr, tags)) or '(none)'}.")
        tag = next(iter(tags))
    if tag not in tags:
        raise ValueError(f"No published {tag!r} weights for {name!r}; published: "
                         f"{', '.join(map(repr, tags)) or '(none)'}.")
    dataset = tags[tag]["dataset"]
    if dataset not in DATASETS:
        raise ValueError(f"The {tag!r} weights of {name!r} were trained on {dataset!r}, for "
                         "which no calibration images are available; pass your own.")
    return calibration_images(dataset, count, seed, split=split)


def check_calibration_range(model, batches):
    """ValueError when the values of ``batches`` cannot be inputs of ``model``
    (`kronecker_zoo.models.pixel_range.pixel_range_problem`: outside its known raw pixel range,
    or all in [-1, 1] while that range reaches 255)."""
    problem = pixel_range_problem(model, batches)
    if problem is None:
        return
    raise ValueError(
        f"representative_data cannot be what the model sees: {problem}. Pass the images "
        "exactly as you feed the model (e.g. unscaled uint8 pixels; "
        "kronecker_zoo.export.pretraining_calibration_data(name, tag) gives those of "
        "published weights).")
