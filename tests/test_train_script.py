"""training/train.py leaves nothing that blocks a retry when a run fails, and never
touches what is already in ``--out``. Runs in-process on a few random images."""

import json
import os
import types

import keras
import numpy as np
import pytest

from kronecker_zoo import models

from training import train as train_script

RUN_FILES = ["config.json", "log.csv", "resnet_8.weights.h5", "result.json"]
RECIPE = {"model": "resnet_8", "epochs": 1, "batch_size": 8}


class Forced(Exception):
    pass


def _tiny_data(dataset, subset, test_subset=None):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 28, 28, 1)).astype("uint8")
    y = rng.integers(0, 10, 16)
    return (x, y), (x[:8], y[:8])


def _fail(*args, **kwargs):
    raise Forced("forced failure")


@pytest.mark.parametrize("error", [Forced, KeyboardInterrupt])
@pytest.mark.parametrize("pre_existing", [False, True])
def test_early_failure_leaves_nothing(tmp_path, monkeypatch, error, pre_existing):
    def fail(*args):
        raise error("forced failure")

    monkeypatch.setattr(train_script, "load_data", fail)
    out = tmp_path / "runs" / "r1"
    if pre_existing:
        out.mkdir(parents=True)  # the user's empty directory stays
    with pytest.raises(error):
        train_script.train(RECIPE, str(out), verbose=0)
    assert os.listdir(out.parent) == (["r1"] if pre_existing else [])
    if pre_existing:
        assert os.listdir(out) == []


def test_failure_after_an_epoch_keeps_the_checkpoint_and_resume_finishes(tmp_path, monkeypatch):
    monkeypatch.setattr(train_script, "load_data", _tiny_data)
    monkeypatch.setattr(train_script, "report", types.SimpleNamespace(parameter_report=_fail))
    out = tmp_path / "r1"
    with pytest.raises(Forced):  # after fit: the checkpoint of the last epoch exists
        train_script.train(RECIPE, str(out), verbose=0)
    work = tmp_path / "r1.partial"
    assert os.listdir(tmp_path) == ["r1.partial"]
    assert "checkpoint" in os.listdir(work)
    monkeypatch.undo()
    monkeypatch.setattr(train_script, "load_data", _tiny_data)
    with pytest.raises(FileExistsError, match="--resume"):  # never silently restarted
        train_script.train(RECIPE, str(out), verbose=0)
    with pytest.raises(ValueError, match=r"differs .*\['epochs'\]"):
        train_script.train({**RECIPE, "epochs": 3}, str(out), verbose=0, resume=True)
    result = train_script.train(None, str(out), verbose=0, resume=True)
    assert sorted(os.listdir(out)) == RUN_FILES
    assert os.listdir(tmp_path) == ["r1"]
    assert result["model"] == "resnet_8" and result["params"] > 0
    with open(out / "log.csv") as f:
        assert len(f.read().splitlines()) == 2  # header + the one epoch, not retrained
    # A finished run is never overwritten.
    with pytest.raises(FileExistsError, match="not an empty directory"):
        train_script.train(RECIPE, str(out), verbose=0)
    assert sorted(os.listdir(out)) == RUN_FILES


def _interrupted_after_epoch_2(recipe, out, monkeypatch):
    """Run ``recipe`` into ``out`` and cut it (KeyboardInterrupt) when epoch 2 ends."""

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    fit = keras.Model.fit

    def interrupted_fit(self, *args, callbacks=(), **kwargs):
        return fit(self, *args, callbacks=[*callbacks, Interrupt()], **kwargs)

    monkeypatch.setattr(keras.Model, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        train_script.train(recipe, str(out), verbose=0)
    monkeypatch.setattr(keras.Model, "fit", fit)


def _assert_same_run(whole, resumed, whole_dir, resumed_dir):
    """The resumed run ended as the uninterrupted one: test loss and every weight."""
    assert resumed["test_loss"] == pytest.approx(whole["test_loss"], rel=1e-5)
    a = models.get("resnet_8")
    a.load_weights(whole_dir / "resnet_8.weights.h5")
    b = models.get("resnet_8")
    b.load_weights(resumed_dir / "resnet_8.weights.h5")
    for u, v in zip(a.weights, b.weights):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)


def test_resume_continues_from_the_interrupted_epoch_with_the_optimizer_state(tmp_path,
                                                                             monkeypatch):
    """A run killed after epoch 2 of 3 and resumed ends with the weights of the run that
    was never interrupted (same seed; batch order equal because nothing is shuffled
    between sessions here: one batch per epoch)."""
    monkeypatch.setattr(train_script, "load_data", _tiny_data)
    recipe = {**RECIPE, "epochs": 3, "batch_size": 16, "optimizer": "sgd",
              "learning_rate": 0.05}
    whole = train_script.train(recipe, str(tmp_path / "whole"), verbose=0)

    _interrupted_after_epoch_2(recipe, tmp_path / "cut", monkeypatch)
    resumed = train_script.train(None, str(tmp_path / "cut"), verbose=0, resume=True)
    with open(tmp_path / "cut" / "log.csv") as f:
        assert [row.split(",")[0] for row in f.read().splitlines()] == ["epoch", "0", "1", "2"]
    _assert_same_run(whole, resumed, tmp_path / "whole", tmp_path / "cut")


@pytest.mark.parametrize("steps_per_epoch", [None, 2])
def test_resumed_run_sees_the_batches_of_the_uninterrupted_run(tmp_path, monkeypatch,
                                                               steps_per_epoch):
    """Two shuffled, augmented batches per epoch: the run resumed after epoch 2 trains
    epoch 3 on the same batches (order and crops) as the uninterrupted run, so both end
    with the same weights; without moving the data on it would see epoch 1's."""
    monkeypatch.setattr(train_script, "load_data", _tiny_data)
    recipe = {**RECIPE, "epochs": 3, "batch_size": 8, "optimizer": "sgd",
              "learning_rate": 0.05, "augment": "crop_flip",
              "steps_per_epoch": steps_per_epoch}
    whole = train_script.train(recipe, str(tmp_path / "whole"), verbose=0)
    _interrupted_after_epoch_2(recipe, tmp_path / "cut", monkeypatch)
    resumed = train_script.train(None, str(tmp_path / "cut"), verbose=0, resume=True)
    _assert_same_run(whole, resumed, tmp_path / "whole", tmp_path / "cut")


def test_resume_without_an_interrupted_run_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no interrupted run"):
        train_script.train(None, str(tmp_path / "r1"), verbose=0, resume=True)


def test_resume_refuses_a_run_without_checkpoint_or_finished_and_deletes_nothing(
        tmp_path, monkeypatch):
    """--resume never starts over in (or deletes) a working directory it did not make:
    one whose checkpoint is gone, or whose run finished but was not moved to --out."""
    monkeypatch.setattr(train_script, "load_data", _tiny_data)
    work = tmp_path / "r1.partial"
    work.mkdir()
    (work / "config.json").write_text(json.dumps({**train_script.DEFAULTS, **RECIPE}))
    (work / "resnet_8.weights.h5").write_bytes(b"the finished weights")
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        train_script.train(None, str(tmp_path / "r1"), verbose=0, resume=True)
    (work / "result.json").write_text("{}")
    with pytest.raises(FileExistsError, match="has finished"):
        train_script.train(None, str(tmp_path / "r1"), verbose=0, resume=True)
    assert sorted(os.listdir(work)) == ["config.json", "resnet_8.weights.h5", "result.json"]
    assert (work / "resnet_8.weights.h5").read_bytes() == b"the finished weights"


def test_resume_drops_the_log_row_of_an_epoch_the_checkpoint_lacks(tmp_path, monkeypatch):
    """A kill between an epoch's log row and its checkpoint: the epoch is trained again
    and logged once."""
    monkeypatch.setattr(train_script, "load_data", _tiny_data)
    recipe = {**RECIPE, "epochs": 3}

    _interrupted_after_epoch_2(recipe, tmp_path / "cut", monkeypatch)
    log = tmp_path / "cut.partial" / "log.csv"
    with open(tmp_path / "cut.partial" / "checkpoint" / "training_metadata.json") as f:
        assert json.load(f)["epoch"] == 2
    with open(log, "a") as f:
        f.write("2,0.5,1.0,1.0,NA,NA,NA\n")  # epoch 2's row, its checkpoint never written
    train_script.train(None, str(tmp_path / "cut"), verbose=0, resume=True)
    with open(tmp_path / "cut" / "log.csv") as f:
        assert [row.split(",")[0] for row in f.read().splitlines()] == ["epoch", "0", "1", "2"]


def test_recipe_keys_and_values_are_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown recipe keys \\['epoch'\\]"):
        train_script.train({**RECIPE, "epoch": 2}, str(tmp_path / "a"), verbose=0)
    with pytest.raises(ValueError, match="per-pixel labels"):
        train_script.train({"model": "context_net_basic", "augment": "crop_flip"},
                           str(tmp_path / "b"), verbose=0)
    assert os.listdir(tmp_path) == []
    with pytest.raises(SystemExit):
        train_script.main(["--model", "resnet_8", "--out", str(tmp_path / "c"),
                           "--jit-compile", "maybe"])


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_existing_out_is_left_untouched(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(train_script, "load_data", _fail)  # must not even get there
    out = tmp_path / "r1"
    if kind == "directory":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    else:
        out.write_text("mine")
    with pytest.raises(FileExistsError, match="choose a new --out"):
        train_script.train(RECIPE, str(out), verbose=0)
    assert os.listdir(tmp_path) == ["r1"]
    assert (out / "notes.txt" if kind == "directory" else out).read_text() == "mine"


def _tiny_scenes(dataset, subset, test_subset=None):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (8, 16, 16, 1)).astype("uint8")
    y = rng.integers(0, 11, (8, 16, 16))
    return (x, y), (x[:4], y[:4])


def test_init_from_copies_the_shared_front_end_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(train_script, "load_data", _tiny_scenes)
    recipe = {"model": "context_net_frontend", "epochs": 1, "batch_size": 4}
    train_script.train(recipe, str(tmp_path / "front"), verbose=0)
    front = models.get("context_net_frontend", input_shape=(16, 16, 1))
    front.load_weights(tmp_path / "front" / "context_net_frontend.weights.h5")
    # zero epochs of training is not a recipe; a learning rate of 0 keeps the copy as is
    # (AdamW's decoupled weight decay is lr * wd: 0 too)
    result = train_script.train({**recipe, "model": "context_net_basic", "learning_rate": 0.0,
                                 "init_from": str(tmp_path / "front")},
                                str(tmp_path / "basic"), verbose=0)
    expected = [layer.name for layer in front.layers if layer.weights]
    assert result["init_from"]["layers"] == expected
    basic = models.get("context_net_basic", input_shape=(16, 16, 1))
    basic.load_weights(tmp_path / "basic" / "context_net_basic.weights.h5")
    for name in expected:
        pairs = list(zip(front.get_layer(name).get_weights(), basic.get_layer(name).get_weights()))
        if name.endswith("bn"):  # gamma, beta; the moving statistics move in training mode
            pairs = pairs[:2]
        for a, b in pairs:
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="no layer of resnet_8 has a trained namesake"):
        train_script.train({**RECIPE, "init_from": str(tmp_path / "front")},
                           str(tmp_path / "c"), verbose=0)
    # a front end of another width (body layers) or for other classes (the head front_out)
    # is not this model's front end: refused, not silently half-copied
    for overrides, culprit in (({"front_channels": 16}, "front1_conv"),
                               ({"num_classes": 5}, "front_out")):
        with pytest.raises(ValueError, match=culprit):
            train_script.train({**recipe, "model": "context_net_basic", "overrides": overrides,
                                "init_from": str(tmp_path / "front")},
                               str(tmp_path / f"bad{len(overrides)}{culprit}"), verbose=0)


def test_context_module_lr_probe_measures_from_the_shared_front_end():
    """A learning rate too small to move any weight leaves the start's scores; the start is
    the committed front end with a fresh (identity) module."""
    from training import context_module_lr as probe
    from kronecker_zoo import data
    from kronecker_zoo.metrics import confusion_matrix, mean_iou_from_confusion

    (row,) = probe.probe(["context_net_basic"], [("sgd", 1e-12)], steps=1, examples=8)
    name, optimizer, start, after = row
    assert (name, optimizer) == ("context_net_basic", "sgd 1e-12")
    # the weights stay; one step in training mode moves the BN moving statistics by 1%
    np.testing.assert_allclose(after, start, atol=2e-3)
    front = models.get("context_net_frontend", weights=os.path.join(
        probe.FRONT_END_RUN, "context_net_frontend.weights.h5"))
    fresh = models.get("context_net_basic")
    models.transfer_weights(front, fresh, missing="keep")
    x, y = data.fashion_scenes("test")
    predicted = fresh.predict(x[:8].astype("float32"), verbose=0).argmax(-1)
    assert start[1] == pytest.approx(float((predicted == y[:8]).mean()), abs=1e-6)
    assert start[0] == pytest.approx(
        mean_iou_from_confusion(confusion_matrix(y[:8], predicted, 11)), abs=1e-6)
    with pytest.raises(SystemExit):
        probe.main(["context_net_basic", "--optimizers", "adam:2e-3"])


def test_context_ablation_table_reads_the_runs(tmp_path, monkeypatch):
    from training import context_ablation_table as ablation

    def run(name, miou, lr=2e-3, front="training/runs/context_front_end", epochs=4, model=None,
            seed=0, recipe_model=None):
        os.makedirs(tmp_path / name)
        result = {"epochs": epochs, "params": 1000, "macs": 2e6, "test_accuracy": 0.9,
                  "test_miou": miou, "init_from": {"run": front, "layers": []}}
        if model:
            result["model"] = model
        config = {"learning_rate": lr, "seed": seed}
        if recipe_model:
            config["model"] = recipe_model
        (tmp_path / name / "result.json").write_text(json.dumps(result))
        (tmp_path / name / "config.json").write_text(json.dumps(config))

    def rows_of(extra):
        return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
                for line in ablation.table(extra).splitlines() if line.startswith("| `")}

    monkeypatch.setattr(ablation, "RUNS", str(tmp_path))
    run("context_front_end", 0.3)
    run("context_net_frontend", 0.35)
    run("context_net_basic", 0.5525)
    run("study_basic", 0.54, lr=2e-4)
    os.makedirs(tmp_path / "context_net_large.partial")
    rows = rows_of(["study_basic"])
    assert rows["`context_net_basic`"][-1] == "+20.25"
    assert rows["`study_basic`"][3:] == ["0.0002", "90.00%", "54.00%", "+19.00"]
    assert rows["`context_net_large`"][-1] == "training (resumable)"
    assert rows["`kron_context_net_basic`"][-1] == "not run"
    # each row against the front end trained as long (12 joint epochs here), else "-"
    run("study_frontend_e12", 0.37, epochs=12, model="context_net_frontend")
    run("study_basic_e12", 0.58, epochs=12)
    run("study_basic_e8", 0.57, epochs=8)
    rows = rows_of(["study_frontend_e12", "study_basic_e12", "study_basic_e8", "study_basic"])
    assert rows["`study_basic_e12`"][-1] == "+21.00"
    assert rows["`study_frontend_e12`"][-1] == "-"
    assert rows["`study_basic_e8`"][-1] == "-"
    assert rows["`study_basic`"][-1] == "+19.00"
    # a front end named by its recipe only; of the same seed where one is listed
    run("study_frontend_e12_seed1", 0.38, epochs=12, seed=1, recipe_model="context_net_frontend")
    run("study_basic_e12_seed1", 0.60, epochs=12, seed=1)
    run("study_basic_e12_seed2", 0.59, epochs=12, seed=2)
    rows = rows_of(["study_frontend_e12", "study_frontend_e12_seed1", "study_basic_e12",
                    "study_basic_e12_seed1", "study_basic_e12_seed2"])
    assert rows["`study_frontend_e12_seed1`"][-1] == "-"
    assert rows["`study_basic_e12`"][-1] == "+21.00"
    assert rows["`study_basic_e12_seed1`"][-1] == "+22.00"
    assert rows["`study_basic_e12_seed2`"][-1] == "+22.00"
    run("kron_context_net_basic", 0.5, front="training/runs/elsewhere")
    with pytest.raises(ValueError, match="not an ablation row"):
        ablation.table()
    os.remove(tmp_path / "kron_context_net_basic" / "result.json")
    with pytest.raises(ValueError, match="no run 'study_typo'"):
        ablation.table(["study_typo"])
    (tmp_path / "study_basic" / "config.json").unlink()
    with pytest.raises(ValueError, match="study_basic has a result.json but no config.json"):
        ablation.table(["study_basic"])


def test_published_weights_carry_no_optimizer_state(tmp_path):
    import h5py
    from training.publish import weights_only

    model = models.get("resnet_8")
    model.compile(keras.optimizers.AdamW(1e-3), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    model.fit(x, np.arange(4), epochs=1, verbose=0)
    model.save_weights(tmp_path / "run.weights.h5")
    with h5py.File(tmp_path / "run.weights.h5") as f:
        assert "optimizer" in f  # what a compiled model's save_weights writes
    weights_only("resnet_8", {}, tmp_path / "run.weights.h5", tmp_path / "pub.weights.h5")
    with h5py.File(tmp_path / "pub.weights.h5") as f:
        assert "optimizer" not in f
    again = models.get("resnet_8", weights=str(tmp_path / "pub.weights.h5"))
    for a, b in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert (os.path.getsize(tmp_path / "pub.weights.h5")
            < 0.5 * os.path.getsize(tmp_path / "run.weights.h5"))


def test_publish_refuses_shortened_and_unfinished_runs(tmp_path):
    from training.publish import check_publishable

    for key, value in (("subset", 2000), ("test_subset", 1000), ("steps_per_epoch", 5)):
        with pytest.raises(ValueError, match=f"not a full run .*'{key}'"):
            check_publishable(str(tmp_path / "run"), {key: value})
    with pytest.raises(ValueError, match="unfinished run"):
        check_publishable(str(tmp_path / "run.partial"), {})
    check_publishable(str(tmp_path / "run"), {"subset": None, "test_subset": None})


@pytest.mark.parametrize("content, why", [(None, "No such file"), ("{not json", "Expecting"),
                                          ("[1, 2]", "holds a JSON array, not an object")])
def test_a_config_that_cannot_be_used_is_a_usage_error(tmp_path, capsys, content, why):
    """train.py and distill.py: exit status 2 and one line naming the file, no traceback."""
    from training import distill as distill_script

    config = tmp_path / "recipe.json"
    if content is not None:
        config.write_text(content)
    for script in (train_script, distill_script):
        with pytest.raises(SystemExit) as exit_info:
            script.main(["--config", str(config), "--out", str(tmp_path / "run")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"cannot use --config {str(config)!r}: " in err and why in err
        assert not (tmp_path / "run").exists()


def test_data_of_unknown_length_needs_steps_per_epoch(tmp_path):
    import tensorflow as tf

    x, y = _tiny_data(None, None)[0]
    batches = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y)).filter(
        lambda image, label: label >= 0).batch(8)
    model = models.get("resnet_8")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="set steps_per_epoch"):
        train_script.fit_with_checkpoints(model, batches, {"epochs": 1, "steps_per_epoch": None},
                                          str(tmp_path), 0)
