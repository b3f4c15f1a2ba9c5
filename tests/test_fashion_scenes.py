"""fashion_scenes: composed segmentation scenes, checked against a naive reference."""

import numpy as np
import pytest

from kronecker_zoo import data
from kronecker_zoo.data.fashion_scenes import ITEM_SIZE, compose_scenes


def naive_compose(items, labels, num_scenes, canvas, lo, hi, threshold, seed):
    """One scene and one item at a time, with the same random draws."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(lo, hi + 1, size=num_scenes)
    picks = rng.integers(0, len(items), size=(num_scenes, hi))
    offsets = rng.integers(0, canvas - ITEM_SIZE + 1, size=(num_scenes, hi, 2))
    images = np.zeros((num_scenes, canvas, canvas), np.uint8)
    masks = np.zeros((num_scenes, canvas, canvas), np.uint8)
    for n in range(num_scenes):
        for slot in range(counts[n]):
            y, x = offsets[n, slot]
            item = items[picks[n, slot]].reshape(ITEM_SIZE, ITEM_SIZE)
            for i in range(ITEM_SIZE):
                for j in range(ITEM_SIZE):
                    v = item[i, j]
                    if v > threshold:
                        images[n, y + i, x + j] = v
                        masks[n, y + i, x + j] = labels[picks[n, slot]] + 1
                    else:
                        images[n, y + i, x + j] = max(images[n, y + i, x + j], v)
    return images[..., None], masks


@pytest.fixture(scope="module")
def test_items():
    return data.fashion_mnist("test")


def test_compose_matches_naive_reference(test_items):
    items, labels = test_items[0][:50], test_items[1][:50]
    got = compose_scenes(items, labels, 6, canvas_size=40, items_per_scene=(1, 3),
                         threshold=40, seed=3)
    want = naive_compose(items, labels, 6, 40, 1, 3, 40, 3)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_scenes_are_deterministic_and_splits_differ():
    a = data.fashion_scenes("test", num_scenes=20, seed=5)
    b = data.fashion_scenes("test", num_scenes=20, seed=5)
    c = data.fashion_scenes("test", num_scenes=20, seed=6)
    train = data.fashion_scenes("train", num_scenes=20, seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], train[0])


def test_scene_contents(test_items):
    images, masks = data.fashion_scenes("test", num_scenes=200, canvas_size=64)
    assert images.shape == (200, 64, 64, 1) and images.dtype == np.uint8
    assert masks.shape == (200, 64, 64) and masks.dtype == np.uint8
    assert masks.max() <= 10
    # Labelled pixels are above the threshold; background pixels of the mask are not.
    assert (images[..., 0][masks > 0] > 32).all()
    assert (images[..., 0][masks == 0] <= 32).all()
    # Every class appears, and the background is the majority but not everything.
    assert set(np.unique(masks)) == set(range(11))
    assert 0.5 < (masks == 0).mean() < 0.95


def test_test_scenes_only_use_test_items(test_items):
    """A scene with one item and a 28x28 canvas is exactly one test item (no train item)."""
    items, labels = test_items
    images, masks = data.fashion_scenes("test", num_scenes=30, canvas_size=28,
                                        items_per_scene=(1, 1))
    flat = items.reshape(len(items), -1)
    for image, mask in zip(images, masks):
        match = np.nonzero((flat == image.reshape(-1)).all(axis=1))[0]
        assert len(match) >= 1
        assert set(np.unique(mask)) <= {0, labels[match[0]] + 1}


def test_dataset_batches():
    ds = data.fashion_scenes_dataset("test", batch_size=4, num_scenes=10)
    batches = list(ds)
    assert [int(b[0].shape[0]) for b in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype.name == "float32" and y.dtype.name == "int32"
    assert tuple(x.shape) == (4, 64, 64, 1) and tuple(y.shape) == (4, 64, 64)
    ref = data.fashion_scenes("test", num_scenes=10)
    np.testing.assert_array_equal(x.numpy(), ref[0][:4].astype("float32"))


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "val"}, "split"),
    ({"num_scenes": 0}, "num_scenes"),
    ({"canvas_size": 20}, "canvas_size"),
    ({"items_per_scene": (3, 2)}, "items_per_scene"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.fashion_scenes(**{"split": "test", **kwargs})


def test_compose_scenes_refuses_items_and_labels_off_their_scale(test_items):
    items, labels = test_items
    with pytest.raises(ValueError, match=r"items must be raw pixels 0..255 .*float.*values in "
                                         r"\[0, 1\] \(scaled to \[0, 1\]\?\)"):
        compose_scenes(items[:20] / 255.0, labels[:20], 2)  # all background before
    with pytest.raises(ValueError, match=r"items must be raw pixels 0..255 .*\[-1, 254\]"):
        compose_scenes(items[:20].astype(np.int64) - 1, labels[:20], 2)
    with pytest.raises(ValueError, match=r"labels must be class ids 0..254 .*\[-1, 8\]"):
        compose_scenes(items[:20], labels[:20].astype(np.int64) - 1, 2)
    with pytest.raises(ValueError, match="labels must be integer class ids; got non-integer"):
        compose_scenes(items[:20], labels[:20] + 0.5, 2)
    reference = compose_scenes(items[:20], labels[:20], 2)
    for same in (compose_scenes(items[:20].astype(np.int64), labels[:20], 2),  # ints, raw
                 compose_scenes(items[:20].astype(np.float32), labels[:20] * 1.0, 2)):
        for a, b in zip(same, reference):
            np.testing.assert_array_equal(a, b)


def test_a_named_local_source_that_is_empty_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"Fashion-MNIST \(test\) is not in .*"
                                                r"datasets.fashion-mnist \(source='keras_cache'\)"
                                                r"\. Install it"):
        data.fashion_mnist("test", source="keras_cache")


def test_the_offline_arrays_are_the_users_to_edit(test_items):
    # Before: the Debian files were read with np.frombuffer, read-only arrays (Keras'
    # download gives writable ones), so an in-place shuffle or edit raised.
    x, y = data.fashion_mnist("test")
    assert x.flags.writeable and y.flags.writeable
    before = y.copy()
    np.random.default_rng(0).shuffle(y)
    x[0, 0, 0, 0] = 255
    assert sorted(y) == sorted(before)
    # Each call reads afresh: an edit does not reach the next caller.
    assert data.fashion_mnist("test")[0][0, 0, 0, 0] == test_items[0][0, 0, 0, 0]
