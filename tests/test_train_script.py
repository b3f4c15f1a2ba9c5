"""training/train.py leaves nothing that blocks a retry when a run fails, and never
touches what is already in ``--out``. Runs in-process on a few random images."""

import os
import types

import numpy as np
import pytest

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


def test_failure_after_training_leaves_nothing_and_the_retry_succeeds(tmp_path, monkeypatch):
    monkeypatch.setattr(train_script, "load_data", _tiny_data)
    monkeypatch.setattr(train_script, "report", types.SimpleNamespace(parameter_report=_fail))
    out = tmp_path / "r1"
    with pytest.raises(Forced):  # after fit: log.csv and the weights were already written
        train_script.train(RECIPE, str(out), verbose=0)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    monkeypatch.setattr(train_script, "load_data", _tiny_data)
    result = train_script.train(RECIPE, str(out), verbose=0)
    assert sorted(os.listdir(out)) == RUN_FILES
    assert os.listdir(tmp_path) == ["r1"]
    assert result["model"] == "resnet_8" and result["params"] > 0
    # A finished run is never overwritten.
    with pytest.raises(FileExistsError, match="not an empty directory"):
        train_script.train(RECIPE, str(out), verbose=0)
    assert sorted(os.listdir(out)) == RUN_FILES


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
