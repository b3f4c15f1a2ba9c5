"""Segmentation experiments: translation equivariance and border effects (tiny runs).

The helpers are checked against independent references: a stride-1 dilated Conv2D
stack must be exactly shift-equivariant in the interior, a stride-2 pooling network
only for even shifts; border distances and per-distance statistics against loops.
"""

import json
import math

import keras
import numpy as np
import pytest

from experiments import borders, translation_equivariance as te

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _random_images(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 1)).astype(np.uint8)


def _eager(model):
    return lambda x: np.asarray(model(np.asarray(x, np.float32), training=False))


def _check_files(out_dir, name, result):
    with open(out_dir / f"{name}.json") as f:
        on_disk = json.load(f)
    assert on_disk["claim"] and on_disk["finding"]
    assert on_disk["figures"] == result["figures"]
    for fig in result["figures"]:
        assert fig.startswith(name) and fig.endswith(".png")
        assert (out_dir / fig).read_bytes()[:8] == PNG_SIGNATURE


# -- translation equivariance ------------------------------------------------------
def test_stride1_dilated_stack_is_exactly_equivariant_in_the_interior():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((None, None, 1)),
        keras.layers.Conv2D(4, 3, dilation_rate=1, padding="same", activation="relu"),
        keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same", activation="relu"),
        keras.layers.Conv2D(3, 3, dilation_rate=4, padding="same",
                            bias_initializer=keras.initializers.RandomNormal(seed=2)),
    ])  # receptive field 1 + 2 + 4 + 8 = 15: radius 7
    assert te.total_stride(model) == 1
    images = _random_images(2, 12, 12)
    masks = (images[..., 0] > 128).astype(np.uint8)
    out = te.shift_consistency(_eager(model), images, masks, shifts=(1, 2, 3), margin=8)
    for direction in te.DIRECTIONS:
        row = out[direction]
        assert row["pixel_fraction"] == [1.0] * 3
        assert row["scene_fraction"] == [1.0] * 3
        assert row["agreement_miou"] == [1.0] * 3
        assert max(row["max_rel_logit_diff"]) < 1e-6
        assert row["accuracy_shifted"] == [out["accuracy_original"]] * 3


def test_stride2_pooling_is_equivariant_only_for_even_shifts():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((None, None, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.UpSampling2D(2),
        keras.layers.Conv2D(3, 1, bias_initializer=keras.initializers.RandomNormal(seed=4)),
    ])
    assert te.total_stride(model) == 2
    images = _random_images(2, 12, 12, seed=5)
    out = te.shift_consistency(_eager(model), images, shifts=(1, 2, 3, 4), margin=8)
    for direction in te.DIRECTIONS:
        fraction = out[direction]["pixel_fraction"]
        assert fraction[1] == fraction[3] == 1.0
        assert fraction[0] < 1.0 and fraction[2] < 1.0
        assert out[direction]["max_rel_logit_diff"][0] > 1e-3


def test_embed_and_margin():
    images = _random_images(1, 3, 2)
    canvas = te.embed(images, (6, 7), (2, 4))
    assert canvas.shape == (1, 6, 7, 1) and canvas.sum() == images.sum()
    np.testing.assert_array_equal(canvas[0, 2:5, 4:6], images[0])
    # radius + 2, rounded up to a multiple of 4: 69 -> 34 + 2 = 36; 143 -> 71 + 2 -> 76
    assert [te.margin_for(rf) for rf in (69, 52, 143, 1)] == [36, 28, 76, 4]


def test_translation_tiny_run(tmp_path):
    result = te.run(str(tmp_path), tiny=True)
    _check_files(tmp_path, te.NAME, result)
    shifts = result["config"]["shifts"]
    assert shifts == list(te.TINY_SHIFTS)
    fcn, pool = result["models"]["dilated_fcn_small"], result["models"]["pool_segnet_small"]
    assert fcn["total_stride"] == 1 and pool["total_stride"] == 4
    for direction in te.DIRECTIONS:
        # published weights: no pooling -> every shift moves the prediction exactly
        assert fcn[direction]["pixel_fraction"] == [1.0] * len(shifts)
        assert max(fcn[direction]["max_rel_logit_diff"]) < 1e-5
        # two 2x2 poolings: exact for s = 4, not for s = 1
        assert pool[direction]["pixel_fraction"][shifts.index(4)] == 1.0
        assert pool[direction]["pixel_fraction"][0] < 1.0
        assert pool[direction]["foreground_fraction"][0] < pool[direction]["pixel_fraction"][0]


# -- borders -------------------------------------------------------------------------
@pytest.mark.parametrize("h, w", [(1, 1), (1, 5), (4, 7), (6, 6), (9, 4)])
def test_border_distance_matches_brute_force(h, w):
    expected = np.zeros((h, w), np.int64)
    for i in range(h):
        for j in range(w):
            expected[i, j] = min(i, j, h - 1 - i, w - 1 - j)
    np.testing.assert_array_equal(borders.border_distance(h, w), expected)


def test_distance_stats_match_a_pixel_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, 5, 4)) * 3
    masks = rng.integers(0, 4, (3, 6, 5))
    stats = borders.DistanceStats(6, 5, 4)
    stats.add(logits[:2], masks[:2])
    stats.add(logits[2:], masks[2:])
    got = stats.summary()
    bins = {}
    for n in range(3):
        for i in range(6):
            for j in range(5):
                d = min(i, j, 5 - i, 4 - j)
                z = logits[n, i, j]
                ce = math.log(sum(math.exp(v) for v in z)) - z[masks[n, i, j]]
                bins.setdefault(d, []).append((z.argmax() != masks[n, i, j], ce,
                                               masks[n, i, j] > 0))
    assert len(got["pixel_error"]) == len(bins) == 3
    for d, rows in bins.items():
        err, ce, fg = (np.array(c, float) for c in zip(*rows))
        assert got["pixels"][d] == len(rows)
        assert got["pixel_error"][d] == pytest.approx(err.mean())
        assert got["cross_entropy"][d] == pytest.approx(ce.mean())
        assert got["foreground_fraction"][d] == pytest.approx(fg.mean())
    np.testing.assert_allclose(borders.foreground_by_distance(masks), got["foreground_fraction"])
    assert got["accuracy"] == pytest.approx(float((logits.argmax(-1) == masks).mean()))


def test_with_padding_mode_changes_only_kronecker_layers():
    from kronecker_zoo import models

    model = models.get("kron_context_net_basic", weights="fashion_scenes",
                       input_shape=(32, 32, 1))
    x = _random_images(2, 32, 32, seed=7).astype(np.float32)
    same, changed = borders.with_padding_mode(model, "zeros")
    assert changed == ["context_2", "context_3", "context_4"]
    np.testing.assert_array_equal(_eager(same)(x), _eager(model)(x))
    mirrored, changed = borders.with_padding_mode(model, "reflect")
    assert changed == ["context_2", "context_3", "context_4"]
    assert np.abs(_eager(mirrored)(x) - _eager(model)(x)).max() > 1e-3
    plain = models.get("pool_segnet_small", input_shape=(32, 32, 1))
    assert borders.with_padding_mode(plain, "reflect") == (plain, [])


def test_borders_tiny_run(tmp_path):
    result = borders.run(str(tmp_path), tiny=True)
    _check_files(tmp_path, borders.NAME, result)
    assert result["distance"] == list(range(32))
    assert result["models"]["kron_context_net_basic"]["padding_mode_layers"] == [
        "context_2", "context_3", "context_4"]
    assert result["models"]["pool_segnet_small"]["padding_mode_layers"] == []
    for key, scenario in result["scenarios"].items():
        assert len(scenario["foreground_fraction"]) == 32
        assert sum(scenario["pixels"]) == result["config"]["num_scenes"] * 64 * 64
        pool = scenario["models"]["pool_segnet_small"]
        kron = scenario["models"]["kron_context_net_basic"]
        assert "reflect" not in pool and {"reflect", "symmetric"} <= set(kron)
        assert ("input_background" in kron) == (key == "crops")
        for entry in (*pool.values(), *kron.values()):
            assert all(0.0 <= v <= 1.0 for v in entry["pixel_error"])
            assert all(v >= 0.0 for v in entry["cross_entropy"])
        if key == "scenes":
            # beyond the receptive-field radius (pool_segnet: 26 px) the padding cannot
            # matter: the zero-padded image and the background canvas agree there
            np.testing.assert_allclose(pool["zeros"]["cross_entropy"][28:],
                                       pool["no_border"]["cross_entropy"][28:],
                                       rtol=1e-4, atol=1e-6)
