"""Loading weights into registry models: the head rule, errors that name the file and the
model, expected hashes of user files, and downloads of manifest entries with a ``url``."""

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import warnings

import keras
import numpy as np
import pytest

from kronecker_zoo import models, weights

NAME, TAG = "resnet_8", "fashion_mnist"


def _published_file(name=NAME, tag=TAG):
    return weights.file_path(weights.published(name)[tag]["file"])


def _head(model):
    return model.get_layer("predictions").get_weights()


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _backbone(model):
    return [w for layer in model.layers if layer.name != "predictions"
            for w in layer.get_weights()]


@pytest.fixture(scope="module")
def published():
    return models.get(NAME, weights=TAG)


# -- the head -----------------------------------------------------------------------------


@pytest.mark.parametrize("input_shape", [None, (28, 28, 3)])
def test_head_is_copied_unless_fresh_head(published, input_shape):
    kept = models.get(NAME, weights=TAG, num_classes=10, input_shape=input_shape)
    _assert_same(_head(kept), _head(published))
    keras.utils.set_random_seed(7)
    scratch = models.get(NAME, input_shape=input_shape)
    keras.utils.set_random_seed(7)
    fresh = models.get(NAME, weights=TAG, num_classes=10, input_shape=input_shape,
                       fresh_head=True)
    _assert_same(_head(fresh), _head(scratch))  # the initialisation, untouched
    assert not np.array_equal(_head(fresh)[0], _head(published)[0])
    assert np.array_equal(fresh.get_layer("stage3_block1_conv2").get_weights()[0],
                          published.get_layer("stage3_block1_conv2").get_weights()[0])
    if input_shape is None:
        _assert_same(_backbone(fresh), _backbone(published))
    with pytest.raises(ValueError, match="fresh_head"):
        models.get(NAME, weights=TAG, fresh_head="yes")


def _fine_tuned_five_class_file(tmp_path, seed):
    """``(model, path)``: a 5-class model with perturbed weights, saved as a user's file."""
    five = models.get(NAME, num_classes=5)
    rng = np.random.default_rng(seed)
    five.set_weights([w + rng.normal(0, 0.1, w.shape).astype("float32")
                      for w in five.get_weights()])
    path = str(tmp_path / "five.weights.h5")
    five.save_weights(path)
    return five, path


def test_fresh_head_with_a_fine_tuned_file_of_the_same_configuration(tmp_path):
    five, path = _fine_tuned_five_class_file(tmp_path, seed=0)
    _assert_same(models.get(NAME, weights=path, num_classes=5).get_weights(),
                 five.get_weights())
    keras.utils.set_random_seed(3)
    scratch = models.get(NAME, num_classes=5)
    keras.utils.set_random_seed(3)
    fresh = models.get(NAME, weights=path, num_classes=5, fresh_head=True)
    _assert_same(_head(fresh), _head(scratch))
    _assert_same(_backbone(fresh), _backbone(five))


# -- weights that do not fit -------------------------------------------------------------


def _raises_quietly(call):
    """The ValueError of ``call()``, asserting Keras' partial-loading warnings stay hidden."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError) as info:
            call()
    assert not [w for w in caught if "Skipping nested container" in str(w.message)]
    return str(info.value)


def test_published_weights_with_shape_changing_overrides():
    message = _raises_quietly(
        lambda: models.get("kron_resnet_8", weights="fashion_mnist", rank=2))
    for part in ("published 'fashion_mnist' weights of 'kron_resnet_8'",
                 "kron_resnet_8-fashion_mnist.weights.h5",
                 "trained on 'kron_resnet_8' with execution='materialized'",
                 "built with rank=2", "variable.shape=(2, 3, 3, 4, 4)",
                 "value.shape=(4, 3, 3, 4, 4)", "stage1_block1_conv1"):
        assert part in message, message
    assert "value=[" not in message  # no dump of the variable's values
    # a shape-neutral override loads the same weights
    _assert_same(models.get("kron_resnet_8", weights="fashion_mnist",
                            execution="materialized").get_weights(),
                 models.get("kron_resnet_8", weights="fashion_mnist").get_weights())


def test_a_file_of_another_model_names_the_file_and_the_model(tmp_path):
    path = _published_file("resnet_8")
    for kwargs in ({}, {"num_classes": 5}):
        message = _raises_quietly(lambda: models.get("kron_resnet_8", weights=path, **kwargs))
        assert f"The weights file {path!r} does not match the architecture of " \
               "'kron_resnet_8'" in message, message
        assert "expected 2 variables, but received 0" in message
        assert ("It is the published 'fashion_mnist' weights file of 'resnet_8': load it with "
                "models.get('resnet_8', weights='fashion_mnist')") in message
    assert "built with num_classes=5" in message
    own = str(tmp_path / "mine.weights.h5")
    models.get("resnet_8").save_weights(own)
    message = _raises_quietly(lambda: models.get("kron_resnet_8", weights=own))
    assert repr(own) in message and "Was it saved from another model" in message


def test_a_fine_tuned_file_with_its_own_head_loads_headless_or_into_another_head(tmp_path):
    """A file saved after fine-tuning with num_classes=5 gives its backbone to a model
    built without a head, or with 3 classes (the file's head found from its shapes)."""
    five, path = _fine_tuned_five_class_file(tmp_path, seed=1)
    headless = models.get(NAME, weights=path, include_top=False)
    _assert_same(headless.get_weights(), _backbone(five))
    three = models.get(NAME, weights=path, num_classes=3)
    _assert_same(_backbone(three), _backbone(five))
    assert _head(three)[0].shape == (64, 3)


def _checkpoint_after_fit(tmp_path, **kwargs):
    """``(model, path)``: a model fine-tuned one step with ``fit`` (Adam), saved by
    ModelCheckpoint with its optimizer state, as a user's training run leaves it."""
    model = models.get(NAME, weights=TAG, **kwargs)
    channels = model.input_shape[-1]
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).integers(0, 256, (8, 28, 28, channels)).astype("float32")
    path = str(tmp_path / "checkpoint.weights.h5")
    model.fit(x, np.arange(8) % model.output_shape[-1], batch_size=8, epochs=1, verbose=0,
              callbacks=[keras.callbacks.ModelCheckpoint(path, save_weights_only=True)])
    return model, path


@pytest.mark.parametrize("kwargs", [{"num_classes": 5}, {"input_shape": (28, 28, 3)},
                                    {"num_classes": 4, "input_shape": (28, 28, 3)}])
def test_a_checkpoint_saved_by_fit_reloads_into_its_configuration(tmp_path, kwargs):
    """The file also holds the optimizer's state (``optimizer/vars``): only the model's
    variables decide which architecture it was saved from."""
    trained, path = _checkpoint_after_fit(tmp_path, **kwargs)
    _assert_same(models.get(NAME, weights=path, **kwargs).get_weights(),
                 trained.get_weights())


def test_a_fine_tuned_three_channel_file_gives_its_backbone_to_other_heads(tmp_path):
    """A file fine-tuned on RGB with 5 classes (its input channels and head found from its
    shapes): into the same RGB backbone without a head or with 7 classes, and into the
    default grey input (its first convolution adapted, as for published weights)."""
    trained, path = _checkpoint_after_fit(tmp_path, num_classes=5, input_shape=(28, 28, 3))
    rgb = models.get(NAME, weights=path, input_shape=(28, 28, 3), num_classes=7)
    _assert_same(_backbone(rgb), _backbone(trained))
    assert _head(rgb)[0].shape == (64, 7)
    headless = models.get(NAME, weights=path, input_shape=(28, 28, 3), include_top=False)
    _assert_same(headless.get_weights(), _backbone(trained))
    grey = models.get(NAME, weights=path, include_top=False)
    stem = trained.get_layer("stem_conv").get_weights()[0]
    np.testing.assert_allclose(grey.get_layer("stem_conv").get_weights()[0],
                               stem.sum(axis=2, keepdims=True), rtol=1e-6)
    deeper = "stage3_block1_conv2"
    _assert_same(grey.get_layer(deeper).get_weights(), trained.get_layer(deeper).get_weights())


def test_get_arguments_are_checked_like_keras_applications(tmp_path):
    two = [models.get(NAME, name=n) for n in ("teacher", "student")]
    assert [m.name for m in two] == ["teacher", "student"]  # both fit in one model
    inputs = keras.Input((28, 28, 1))
    keras.Model(inputs, [m(inputs) for m in two])
    assert models.get(NAME, weights=TAG, name="mine").name == "mine"
    assert models.get(NAME).name == NAME
    with pytest.raises(ValueError, match="`name` .* must be a non-empty str"):
        models.get(NAME, name=3)
    with pytest.raises(ValueError, match="`include_top` must be True or False"):
        models.get(NAME, include_top="no")  # built a model with a head before
    shape = models.get(NAME, input_shape=np.array([32, 32, 3])).input_shape
    assert shape == (None, 32, 32, 3) and all(type(d) is int for d in shape[1:])
    for bad in ((32, 32.0, 3), (32, 32, np.True_), 5):
        with pytest.raises(ValueError, match="`input_shape` must be"):
            models.get(NAME, input_shape=bad)
    with pytest.raises(ValueError, match=r"Unknown weights \['fashion_mnist'\] for "
                                         r"'resnet_8'\. Valid: None"):
        models.get(NAME, weights=["fashion_mnist"])  # was TypeError: unhashable type
    saved = str(tmp_path / "mine.keras")
    models.get(NAME).save(saved)
    with pytest.raises(ValueError, match=r"whole saved model \(\.keras\).*"
                                         r"keras\.saving\.load_model"):
        models.get(NAME, weights=saved)


@pytest.mark.parametrize("damage", ["truncated", "not_hdf5", "damaged_header",
                                    "damaged_message"])
def test_an_unreadable_file_given_by_path_is_named(tmp_path, damage):
    content = open(_published_file(), "rb").read()
    path = tmp_path / f"{damage}.weights.h5"
    if damage == "damaged_header":  # h5py raises RuntimeError, not OSError, on this one
        content = bytearray(content)
        content[800:864] = bytes(b ^ 0xFF for b in content[800:864])
        path.write_bytes(bytes(content))
    elif damage == "damaged_message":  # and KeyError ("bad version number") on this one
        content = bytearray(content)
        content[len(content) - 5000] ^= 0xFF
        path.write_bytes(bytes(content))
    else:
        path.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"hello")
    message = _raises_quietly(lambda: models.get(NAME, weights=str(path)))
    assert f"Cannot read the weights file {str(path)!r} for 'resnet_8'" in message
    assert "truncated, corrupted or not a Keras .weights.h5 file" in message


def test_expected_sha256_of_a_user_file(tmp_path, published):
    path = tmp_path / "copy.weights.h5"
    shutil.copy(_published_file(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = models.get(NAME, weights=str(path), weights_sha256=digest.upper())
    _assert_same(loaded.get_weights(), published.get_weights())
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=f"failed its SHA-256 check \\(expected {digest}"):
        models.get(NAME, weights=str(path), weights_sha256=digest)
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        models.get(NAME, weights=str(path), weights_sha256="abc")
    with pytest.raises(ValueError, match="weights=None"):
        models.get(NAME, weights_sha256=digest)
    with pytest.raises(ValueError, match="not the SHA-256 of the published 'fashion_mnist'"):
        models.get(NAME, weights=TAG, weights_sha256="0" * 64)
    entry_sha = weights.published(NAME)[TAG]["sha256"]
    _assert_same(models.get(NAME, weights=TAG, weights_sha256=entry_sha).get_weights(),
                 published.get_weights())


# -- downloads -----------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A folder served over HTTP on 127.0.0.1, and a one-entry manifest (no packaged
    file yet) whose ``url`` points there; downloads are cached under tmp_path."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    entry = dict(weights.published(NAME)[TAG])
    original = _published_file()
    shutil.copy(original, root / entry["file"])
    entry["url"] = f"http://127.0.0.1:{server.server_address[1]}/{entry['file']}"
    package = tmp_path / "package"
    package.mkdir()
    (package / "manifest.json").write_text(json.dumps({NAME: {TAG: entry}}))
    monkeypatch.setattr(weights, "MANIFEST", str(package / "manifest.json"))
    monkeypatch.setattr(weights, "CACHE_DIR", str(tmp_path / "cache"))
    try:
        yield {"root": root, "package": package, "entry": entry, "original": original}
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_missing_file_is_downloaded_verified_and_cached(served, published):
    entry = served["entry"]
    assert not (served["package"] / entry["file"]).exists()
    model = models.get(NAME, weights=TAG)
    _assert_same(model.get_weights(), published.get_weights())
    cached = os.path.join(weights.cache_folder(), entry["file"])
    assert cached.startswith(str(served["package"].parent / "cache"))
    assert weights.sha256_of(cached) == entry["sha256"]
    assert not (served["package"] / entry["file"]).exists()  # the package is not written
    os.remove(served["root"] / entry["file"])  # the server no longer has it: the cache does
    _assert_same(models.get(NAME, weights=TAG).get_weights(), published.get_weights())


def test_damaged_packaged_file_is_left_alone_and_a_download_is_used(served, published):
    entry = served["entry"]
    packaged = served["package"] / entry["file"]
    damaged = open(served["original"], "rb").read()[:1000]
    packaged.write_bytes(damaged)
    _assert_same(models.get(NAME, weights=TAG).get_weights(), published.get_weights())
    assert packaged.read_bytes() == damaged  # never overwritten in place
    assert weights.sha256_of(os.path.join(weights.cache_folder(), entry["file"])) == (
        entry["sha256"])


def test_a_download_with_the_wrong_hash_is_refused_and_deleted(served):
    entry = served["entry"]
    content = bytearray(open(served["original"], "rb").read())
    content[len(content) // 2] ^= 0xFF
    (served["root"] / entry["file"]).write_bytes(bytes(content))
    with pytest.raises(ValueError, match=f"downloaded from {entry['url']} failed its SHA-256 "
                                         f"check \\(expected {entry['sha256']}\\)"):
        models.get(NAME, weights=TAG)
    assert not os.path.exists(os.path.join(weights.cache_folder(), entry["file"]))


def test_unreachable_url_and_missing_url_are_reported(served):
    entry = served["entry"]
    os.remove(served["root"] / entry["file"])  # the server answers 404
    with pytest.raises(OSError, match=f"Could not download weight file .* from {entry['url']}"):
        models.get(NAME, weights=TAG)
    del entry["url"]
    (served["package"] / "manifest.json").write_text(json.dumps({NAME: {TAG: entry}}))
    with pytest.raises(FileNotFoundError, match="has no `url`"):
        models.get(NAME, weights=TAG)


# -- .keras files ---------------------------------------------------------------------------


def test_keras_files_of_zoo_models_load_after_importing_kronecker_zoo(tmp_path):
    """Documented in `models.get`: Keras finds the zoo layers once kronecker_zoo is imported."""
    model = models.get("kron_resnet_8")
    path = str(tmp_path / "kr8.keras")
    model.save(path)
    x = np.random.default_rng(0).uniform(0, 255, (2, 28, 28, 1)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(x, training=False)))
    script = (
        "import sys, keras, numpy as np\n"
        f"path = {path!r}\n"
        "try:\n"
        "    keras.saving.load_model(path)\n"
        "    print('LOADED-WITHOUT-IMPORT')\n"
        "except Exception as error:\n"
        "    print('REFUSED-WITHOUT-IMPORT', 'KroneckerConv2D' in str(error))\n"
        "assert 'kronecker_zoo' not in sys.modules\n"
        "import kronecker_zoo\n"
        "loaded = keras.saving.load_model(path)\n"
        f"x, y = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})\n"
        "print('SAME', bool(np.allclose(np.asarray(loaded(x, training=False)), y, atol=1e-4)))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    result = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env,
                            capture_output=True, text=True, timeout=600)
    lines = result.stdout.splitlines()
    assert "REFUSED-WITHOUT-IMPORT True" in lines, result.stdout + result.stderr[-3000:]
    assert "SAME True" in lines, result.stdout + result.stderr[-3000:]
