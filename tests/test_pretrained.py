"""Published weights: verified loading, accuracy on the real test set, fine-tuning."""

import hashlib
import importlib.util
import os
import shutil

import numpy as np
import pytest

from kronecker_zoo import data, models, weights

PUBLISHED = [(name, tag) for name, tags in weights.published().items() for tag in tags]


def _finetune_module():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "finetune_mnist5k", os.path.join(root, "training", "finetune_mnist5k.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_entries_are_complete_and_hashes_match():
    assert PUBLISHED, "no published weights"
    for name, tag in PUBLISHED:
        entry = weights.published(name)[tag]
        path = weights.file_path(entry["file"])
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"]
        for key in ("dataset", "recipe", "epochs", "params", "macs", "test_accuracy"):
            assert key in entry, (name, key)
        assert entry["params"] == models.get(name).count_params()
        assert name in models.list_models(pretrained=True)


@pytest.mark.parametrize("name, tag", PUBLISHED, ids=[f"{n}-{t}" for n, t in PUBLISHED])
def test_published_accuracy_reproduces_on_the_test_set(name, tag):
    model = models.get(name, weights=tag)
    if tag != "fashion_mnist":
        pytest.skip("segmentation weights are evaluated by training/evaluate.py")
    x, y = data.fashion_mnist("test")
    pred = np.argmax(model.predict(x.astype("float32"), batch_size=500, verbose=0), -1)
    accuracy = (pred == y).mean()
    assert accuracy == pytest.approx(weights.published(name)[tag]["test_accuracy"], abs=2e-3)
    assert accuracy > 0.85


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
    module = _finetune_module()
    pretrained = module.fine_tune("resnet_8", pretrained=True)
    scratch = module.fine_tune("resnet_8", pretrained=False)
    assert pretrained > scratch + 0.05, (pretrained, scratch)
    assert pretrained > 0.75
