"""Tests of the `kronecker-zoo` command line (kronecker_zoo.cli), run in-process
with `main(argv)` and once as ``python -m kronecker_zoo`` in a subprocess."""

import json
import os
import subprocess
import sys

import pytest

from kronecker_zoo import models
from kronecker_zoo.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(capsys, *argv):
    """``(return code, stdout, stderr)`` of ``main(argv)``."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listed_names(out):
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_list_prints_every_registered_model(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert listed_names(out) == models.list_models()
    for line in out.splitlines():
        name = line.split()[0]
        assert models.spec(name).task in line and "weights:" in line


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_list_task_prints_only_that_task(capsys, task):
    code, out, _ = run(capsys, "list", "--task", task)
    assert code == 0
    names = listed_names(out)
    assert names == models.list_models(task) and names
    assert all(models.spec(n).task == task for n in names)
    assert set(names) < set(models.list_models())


def test_list_rejects_an_unknown_task(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["list", "--task", "detection"])
    assert exc.value.code == 2
    assert "segmentation" in capsys.readouterr().err


def test_info_prints_the_table_with_a_total(capsys):
    code, out, _ = run(capsys, "info", "kron_resnet_8")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("kron_resnet_8") and "28x28x1" in lines[0]
    assert any(line.startswith("total") for line in lines)
    assert "KroneckerConv2D" in out and "stage3_block1_conv1" in out


def test_info_json_params_equal_count_params(capsys):
    code, out, _ = run(capsys, "info", "kron_resnet_8", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["totals"]["params"] == models.get("kron_resnet_8").count_params()
    assert data["totals"]["model"] == "kron_resnet_8"


def test_info_markdown_all_layers(capsys):
    code, out, _ = run(capsys, "info", "resnet_8", "--format", "markdown", "--all-layers")
    assert code == 0
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1
    assert any("stem_relu" in line for line in table)  # a layer without weights


@pytest.mark.parametrize("spec", ["32,32,1", "32x32x1"])
def test_info_with_input_shape(capsys, spec):
    code, out, _ = run(capsys, "info", "dilated_fcn_small", "--input-shape", spec,
                       "--format", "json")
    assert code == 0
    totals = json.loads(out)["totals"]
    assert totals["input_shape"] == [32, 32, 1]
    # fully convolutional at stride 1: a quarter of the MACs of the default 64x64
    code, out64, _ = run(capsys, "info", "dilated_fcn_small", "--format", "json")
    assert 4 * totals["macs"] == json.loads(out64)["totals"]["macs"]


def test_compare_markdown(capsys):
    code, out, _ = run(capsys, "compare", "resnet_8", "kron_resnet_8", "--format", "markdown")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 4 and len({line.count("|") for line in lines}) == 1
    assert lines[2].startswith("| resnet_8 |") and lines[3].startswith("| kron_resnet_8 |")
    for line, name in zip(lines[2:], ["resnet_8", "kron_resnet_8"]):
        assert f"{models.get(name).count_params():,}" in line


def test_compare_json(capsys):
    code, out, _ = run(capsys, "compare", "resnet_8", "lowrank_resnet_8", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert [d["model"] for d in data] == ["resnet_8", "lowrank_resnet_8"]
    assert [d["params"] for d in data] == [models.get(n).count_params()
                                           for n in ("resnet_8", "lowrank_resnet_8")]


@pytest.mark.parametrize("argv", [["info", "kron_resnet_9"],
                                  ["compare", "resnet_8", "no_such_model"]])
def test_unknown_model_returns_2_and_names_valid_choices(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("kronecker-zoo: error:")
    assert "Valid names" in err
    for name in models.list_models():
        assert repr(name) in err


@pytest.mark.parametrize("spec", ["32,32", "0,32,1", "a,b,c", "32,32,1,1", "-1,32,1"])
def test_bad_input_shape_is_an_argparse_error(capsys, spec):
    with pytest.raises(SystemExit) as exc:
        main(["info", "resnet_8", f"--input-shape={spec}"])
    assert exc.value.code == 2
    assert "HEIGHT,WIDTH,CHANNELS" in capsys.readouterr().err


def test_missing_command_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


@pytest.mark.slow
def test_python_m_kronecker_zoo_list():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "kronecker_zoo", "list"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert listed_names(result.stdout) == models.list_models()


PIPE_NOISE = ("Traceback", "BrokenPipeError", "Broken pipe", "Exception ignored")


@pytest.mark.slow
def test_closed_stdout_pipe_exits_quietly():
    # The reader is gone before anything is written (as `| head -1` once it has its
    # line): the command must stop with status 1 and no traceback or error message.
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "kronecker_zoo", "info", "resnet_8"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 1, err
    assert not any(noise in err for noise in PIPE_NOISE), err


@pytest.mark.slow
def test_piped_into_head_prints_the_first_line_only():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        f"'{sys.executable}' -m kronecker_zoo info resnet_8 | head -1", shell=True,
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.stdout.startswith("resnet_8") and result.stdout.count("\n") == 1
    assert not any(noise in result.stderr for noise in PIPE_NOISE), result.stderr
