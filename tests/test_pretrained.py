"""Published weights: verified loading, accuracy on the real test set, fine-tuning."""

import hashlib
import os
import shutil

import pytest

from examples import finetune as finetune_examples
from kronecker_zoo import data, evaluation, models, weights
from training.evaluate import evaluate_published
from training.publish import MIOU_MARGIN

PUBLISHED = [(name, tag) for name, tags in weights.published().items() for tag in tags]


def test_manifest_entries_are_complete_and_hashes_match():
    assert PUBLISHED, "no published weights"
    for name, tag in PUBLISHED:
        entry = weights.published(name)[tag]
        path = weights.file_path(entry["file"])
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"]
        for key in ("dataset", "recipe", "epochs", "params", "macs", "test_accuracy", "check"):
            assert key in entry, (name, key)
        # the check's examples are a real share of the test split, and its metric agrees
        # with the whole split's to within sampling error (3 points)
        assert entry["check"]["test_examples"] >= 200
        assert abs(entry["check"]["test_accuracy"] - entry["test_accuracy"]) < 0.03
        if models.spec(name).task == "segmentation":
            assert 0 < entry["test_miou"] <= 1, name
        assert entry["params"] == models.get(name).count_params()
        assert name in models.list_models(pretrained=True)


# The whole test split for one model per task (the same function as the checks below;
# `python training/evaluate.py` re-measures every published entry on its whole split).
WHOLE_SPLIT = [("resnet_8", "fashion_mnist"), ("context_net_basic", "fashion_scenes")]


def _assert_task_and_quality(name, tag, result):
    if models.spec(name).task == "segmentation":
        assert tag == "fashion_scenes"
        # clearly better than predictions that learn nothing (training/publish.py's rule)
        images, masks = data.fashion_scenes("test")
        trivial = evaluation.trivial_segmentation_baselines(images, masks, 11)
        assert result["miou"] >= max(trivial.values()) + MIOU_MARGIN, (name, trivial)
    else:
        assert tag == "fashion_mnist"
        assert result["accuracy"] > 0.85


@pytest.mark.parametrize("name, tag", PUBLISHED, ids=[f"{n}-{t}" for n, t in PUBLISHED])
def test_published_weights_reproduce_their_check_on_the_test_set(name, tag):
    """Every published file gives, on the first test examples, the metrics recorded when
    it was published (training/publish.py), to within two examples (classification) or
    two pixels in a thousand (segmentation): the weights, the model code and the data
    are those the published numbers were measured with."""
    check = weights.published(name)[tag]["check"]
    count = check["test_examples"]
    result = evaluate_published(name, tag, num_examples=count)
    slack = 2 / count if models.spec(name).task == "classification" else 2e-3
    assert result["accuracy"] == pytest.approx(check["test_accuracy"], abs=slack)
    if "test_miou" in check:
        assert result["miou"] == pytest.approx(check["test_miou"], abs=2e-3)
    _assert_task_and_quality(name, tag, result)


@pytest.mark.parametrize("name, tag", WHOLE_SPLIT, ids=[f"{n}-{t}" for n, t in WHOLE_SPLIT])
def test_published_metrics_reproduce_on_the_whole_test_set(name, tag):
    entry = weights.published(name)[tag]
    result = evaluate_published(name, tag)
    assert result["accuracy"] == pytest.approx(entry["test_accuracy"], abs=2e-3)
    if "test_miou" in entry:
        assert result["miou"] == pytest.approx(entry["test_miou"], abs=2e-3)
    _assert_task_and_quality(name, tag, result)


# Registered models without published weights, and why (a model is published only when
# it clearly beats the trivial baselines; see training/publish.py).
UNPUBLISHED = {}


def test_every_registry_model_has_published_weights_or_a_stated_reason():
    published = models.list_models(pretrained=True)
    missing = {name for name in models.list_models() if name not in published}
    assert missing == set(UNPUBLISHED), f"no published weights for {sorted(missing)}"
    for name in models.list_models("segmentation", pretrained=True):
        assert "fashion_scenes" in weights.published(name)
    for name in models.list_models("classification", pretrained=True):
        assert "fashion_mnist" in weights.published(name)


def test_tampered_or_truncated_file_is_refused(tmp_path, monkeypatch):
    name, tag = PUBLISHED[0]
    entry = weights.published(name)[tag]
    folder = os.path.dirname(weights.MANIFEST)
    fake = tmp_path / "weights"
    shutil.copytree(folder, fake)
    monkeypatch.setattr(weights, "MANIFEST", str(fake / "manifest.json"))
    target = fake / entry["file"]
    data_bytes = target.read_bytes()
    target.write_bytes(data_bytes[: len(data_bytes) // 2])
    with pytest.raises(ValueError, match="SHA-256"):
        models.get(name, weights=tag)
    flipped = bytearray(data_bytes)
    flipped[len(flipped) // 2] ^= 0xFF
    target.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="SHA-256"):
        models.get(name, weights=tag)


@pytest.mark.slow
def test_fashion_pretraining_helps_mnist_5k():
    if "resnet_8" not in models.list_models(pretrained=True):
        pytest.fail("resnet_8 Fashion-MNIST weights are not published")
    pretrained = finetune_examples.fine_tune_digits("resnet_8", pretrained=True)["accuracy"]
    scratch = finetune_examples.fine_tune_digits("resnet_8", pretrained=False)["accuracy"]
    assert pretrained > scratch + 0.05, (pretrained, scratch)
    assert pretrained > 0.75


@pytest.mark.slow
@pytest.mark.training
def test_scenes_pretrained_segmenter_fine_tunes_on_nuclei():
    name = "kron_context_net_basic"
    if name not in models.list_models(pretrained=True):
        pytest.fail(f"{name} fashion_scenes weights are not published")
    result = finetune_examples.fine_tune_nuclei(name, steps=100)
    assert result["pretrained"] and result["test_tiles"] == 16
    assert result["foreground_iou"] > 0.75, result
    assert result["pixel_accuracy"] > 0.9, result
