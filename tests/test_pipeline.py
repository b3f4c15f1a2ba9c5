"""data.pixel_dataset's augmentation, checked against a NumPy enumeration of every
window of the zero-padded image and its mirror image."""

import numpy as np
import pytest

from kronecker_zoo import data


def _windows(image, padding):
    """Every crop of the zero-padded ``image`` (H, W, C) and its left-right mirror."""
    h, w = image.shape[:2]
    padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)])
    crops = [padded[i:i + h, j:j + w] for i in range(2 * padding + 1)
             for j in range(2 * padding + 1)]
    return crops + [c[:, ::-1] for c in crops]


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_crop_flip_gives_a_padded_window_or_its_mirror(channels):
    rng = np.random.default_rng(0)
    shape = (64, 6, 7) + ((channels,) if channels else ())
    images = rng.integers(1, 256, shape).astype("uint8")  # no zeros: padding is visible
    labels = np.arange(64) % 10
    ds = data.pixel_dataset(images, labels, 16, augment="crop_flip", crop_padding=2, seed=3)
    seen_offsets, flipped = set(), 0
    out_images = np.concatenate([x.numpy() for x, _ in ds])
    out_labels = np.concatenate([y.numpy() for _, y in ds])
    assert out_images.shape == images.shape and out_images.dtype == np.float32
    np.testing.assert_array_equal(out_labels, labels)  # order kept: no shuffle asked
    for image, result in zip(images, out_images):
        image3 = image if channels else image[..., None]
        result3 = result if channels else result[..., None]
        matches = [k for k, w in enumerate(_windows(image3.astype(np.float32), 2))
                   if np.array_equal(w, result3)]
        assert matches, "output is no window of the padded image nor its mirror"
        seen_offsets.add(matches[0] % 25)
        flipped += matches[0] >= 25
    assert len(seen_offsets) > 10 and 10 < flipped < 54  # random, not a fixed window


def test_no_augmentation_passes_pixels_through_and_crop_padding_zero_only_flips():
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    labels = np.array([1, 2])
    x, _ = next(iter(data.pixel_dataset(images, labels, 2)))
    np.testing.assert_array_equal(x.numpy(), images)
    x, _ = next(iter(data.pixel_dataset(images, labels, 2, augment="crop_flip",
                                        crop_padding=0)))
    for a, b in zip(x.numpy(), images):
        assert np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])


def test_bad_augmentation_arguments_name_the_problem():
    images = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="augment must be one of"):
        data.pixel_dataset(images, np.zeros(2), 2, augment="mixup")
    for labels in (np.zeros((2, 4, 4)), np.eye(2)):  # masks, one-hot rows
        with pytest.raises(ValueError, match=r"one class id per image, labels \(N,\) or "
                                             r"\(N, 1\); got labels of shape"):
            data.pixel_dataset(images, labels, 2, augment="crop_flip")
    with pytest.raises(ValueError, match="labels must be integer class ids"):
        data.pixel_dataset(images, np.array([0.1, 0.9]), 2)  # soft labels: cast to 0, 0
    (_, y), = data.pixel_dataset(images, np.array([[True], [False]]), 2)  # bool masks: 1 / 0
    assert y.numpy().tolist() == [[1], [0]]
    for padding in (-1, 1.5, True):
        with pytest.raises(ValueError, match="crop_padding"):
            data.pixel_dataset(images, np.zeros(2), 2, augment="crop_flip", crop_padding=padding)


def test_crop_padding_may_be_a_numpy_int():
    # As every other int argument of the package (was refused).
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    got = [x.numpy() for x, _ in data.pixel_dataset(images, np.zeros(2), 2, seed=1,
                                                    augment="crop_flip",
                                                    crop_padding=np.int64(2))]
    want = [x.numpy() for x, _ in data.pixel_dataset(images, np.zeros(2), 2, seed=1,
                                                     augment="crop_flip", crop_padding=2)]
    np.testing.assert_array_equal(got[0], want[0])


def test_shuffle_and_augmentation_are_the_same_on_every_run_with_the_seed():
    """Two datasets built alike give the same epochs, each epoch a new order and new crops
    (the augmentation's draws come one element after another, not in thread order); another
    seed gives others."""
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (256, 10, 10)).astype("uint8")
    labels = np.arange(256) % 10

    def epochs(seed):
        ds = data.pixel_dataset(images, labels, 32, shuffle=True, seed=seed,
                                augment="crop_flip", crop_padding=2)
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(3)]

    first, second, other = epochs(1), epochs(1), epochs(2)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], other[0])


def test_column_labels_as_keras_datasets_give_them_are_augmented():
    """``(N, 1)`` labels (keras.datasets.cifar10's) go through crop_flip as ``(N,)``."""
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    labels = np.array([[2], [0], [1]])
    (x, y), = data.pixel_dataset(images, labels, 3, augment="crop_flip", crop_padding=1)
    assert y.numpy().tolist() == [2, 0, 1] and x.shape == (3, 4, 4)
