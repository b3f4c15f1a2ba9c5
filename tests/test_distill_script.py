"""training/distill.py: a student from compress.factorize, fine-tuned by Keras' Distiller
(or plain fit), in train.py's run directory protocol. In-process on a few random images."""

import json
import os

import numpy as np
import pytest

from kronecker_zoo import compress, models
from training import distill as distill_script
from training import train as train_script

RECIPE = {"teacher": "resnet_8", "ratio": 4.0, "epochs": 1, "batch_size": 8,
          "augment": None}
RUN_FILES = ["config.json", "log.csv", "plan.json", "plan.txt", "result.json",
             "student.weights.h5"]


def _tiny_data(dataset, subset, test_subset=None):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 28, 28, 1)).astype("uint8")
    y = rng.integers(0, 10, 16)
    return (x, y), (x[:8], y[:8])


def _student_from_run(run):
    teacher = models.get("resnet_8", weights="fashion_mnist")
    with open(os.path.join(run, "plan.json")) as f:
        overrides = json.load(f)
    student = compress.factorize(teacher, ratio=None, layer_overrides=overrides)
    student.load_weights(os.path.join(run, "student.weights.h5"))
    return teacher, student


@pytest.mark.training
@pytest.mark.parametrize("distillation", [True, False])
def test_student_run_writes_a_rebuildable_student(tmp_path, monkeypatch, distillation):
    monkeypatch.setattr(train_script, "load_data", _tiny_data)
    recipe = dict(RECIPE, distillation=None) if not distillation else RECIPE
    out = tmp_path / "s"
    result = distill_script.distill(recipe, str(out), verbose=0)
    assert sorted(os.listdir(out)) == RUN_FILES
    assert os.listdir(tmp_path) == ["s"]
    teacher, student = _student_from_run(out)
    assert result["params"] == student.count_params() <= teacher.count_params() / 4.0
    assert result["compression"] >= 4.0
    assert result["teacher_params"] == teacher.count_params()
    x, y = _tiny_data(None, None)[1]  # the run's test split
    accuracy = np.mean(np.argmax(student.predict(x.astype("float32"), verbose=0), -1) == y)
    assert result["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    with open(out / "config.json") as f:
        assert (json.load(f)["distillation"] is None) == (not distillation)


def test_scratch_init_keeps_the_architecture_and_not_the_weights(tmp_path):
    teacher = models.get("resnet_8", weights="fashion_mnist")
    config = {**distill_script.DEFAULTS, **RECIPE}
    factorized, plan = distill_script._student(config, teacher, str(tmp_path))
    scratch, _ = distill_script._student({**config, "init": "scratch"}, teacher, str(tmp_path))
    assert [w.shape for w in factorized.weights] == [w.shape for w in scratch.weights]
    assert factorized.count_params() == plan.params_after
    layer = plan.layers[1].name
    assert not np.allclose(np.array(factorized.get_layer(layer).weights[0]),
                           np.array(scratch.get_layer(layer).weights[0]))


def test_mac_cap_of_the_recipe_bounds_every_layer_of_the_plan(tmp_path):
    teacher = models.get("resnet_8", weights="fashion_mnist")
    config = {**distill_script.DEFAULTS, **RECIPE, "ratio": 5.0}
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "b")
    _, uncapped = distill_script._student(config, teacher, str(tmp_path / "a"))
    _, capped = distill_script._student({**config, "max_relative_macs": 0.25}, teacher,
                                        str(tmp_path / "b"))
    assert any(c.macs_after > 0.25 * c.macs_before for c in uncapped.layers)
    assert capped.layers and all(c.macs_after <= 0.25 * c.macs_before for c in capped.layers)
    assert capped.params_after <= teacher.count_params() / 5.0


def test_litert_cost_cap_of_the_recipe_bounds_every_layer_of_the_plan(tmp_path):
    from kronecker_zoo import ops as kz_ops

    teacher = models.get("resnet_8", weights="fashion_mnist")
    config = {**distill_script.DEFAULTS, **RECIPE, "ratio": 5.0,
              "max_relative_cost": 0.5, "runtime": "litert"}
    student, plan = distill_script._student(config, teacher, str(tmp_path))
    assert plan.layers and plan.params_after <= teacher.count_params() / 5.0
    for choice in plan.layers:
        original = teacher.get_layer(choice.name)
        if len(original.kernel.shape) == 2:  # Dense: its MACs
            assert choice.macs_after <= 0.5 * choice.macs_before
            continue
        kh, kw, cin, cout = original.kernel.shape
        dense = kz_ops.dense_conv_cost(tuple(original.input.shape[1:3]), (kh, kw), cin, cout,
                                       original.strides, original.padding, "litert")
        costs = student.get_layer(choice.name).execution_costs("litert")
        assert costs["factored"] <= 0.5 * dense


def test_student_recipe_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="classification"):
        distill_script.distill({**RECIPE, "teacher": "context_net_basic"}, str(tmp_path / "a"))
    with pytest.raises(ValueError, match="init must be one of"):
        distill_script.distill({**RECIPE, "init": "random"}, str(tmp_path / "b"))
    with pytest.raises(ValueError, match="unknown recipe keys"):
        distill_script.distill({**RECIPE, "temperature": 4}, str(tmp_path / "c"))
    assert os.listdir(tmp_path) == []


def test_students_table_reads_finished_runs(tmp_path, monkeypatch):
    from training import students_table

    from kronecker_zoo import report
    from kronecker_zoo.models.students import STUDENTS

    def run(name, config=None, **fields):
        result = {"method": "kronecker", "init": "factorized", "epochs": 15,
                  "distillation": {"temperature": 4.0, "student_loss_weight": 0.5},
                  "params": 15000, "teacher_params": 75000, "macs": 1,
                  "test_accuracy": 0.92, "teacher_test_accuracy": 0.93, **fields}
        os.makedirs(tmp_path / name)
        with open(tmp_path / name / "result.json", "w") as f:
            json.dump(result, f)
        student = "resnet_8_lowrank5x" if result["method"] == "lowrank" else "resnet_8_kron5x"
        plan = {layer: {k: v for k, v in spec.items() if k != "layer"}
                for layer, spec in STUDENTS[student][2].items()}
        with open(tmp_path / name / "plan.json", "w") as f:
            json.dump(plan, f)
        with open(tmp_path / name / "config.json", "w") as f:
            json.dump({**distill_script.DEFAULTS, "teacher": "resnet_8", **(config or {})}, f)

    run("resnet_8_kron5x")
    run("resnet_8_kron5x_lowmac", config={"max_relative_macs": 0.25}, test_accuracy=0.918)
    run("resnet_8_kron5x_plain", distillation=None, test_accuracy=0.915, epochs=30,
        config={"weight_decay": 1e-4})
    run("resnet_8_lowrank5x", method="lowrank", params=14000)
    os.makedirs(tmp_path / "resnet_8_kron5x_scratch.partial")  # unfinished: not a row
    monkeypatch.setattr(students_table, "RUNS", str(tmp_path))
    table = students_table.markdown("resnet_8", "5").splitlines()
    assert len(table) == 2 + 4 + 2  # header, four runs, the two zoo models
    # MACs: the plan's architecture counted with today's code, not the result's record
    macs = report.parameter_report(models.get("resnet_8_kron5x")).macs / 1e6
    assert table[2] == ("| `resnet_8_kron5x`: kronecker, factorize + distillation (T=4, "
                        f"student weight 0.5), 15 epochs | 15,000 | 5.0x | {macs:.2f}M | "
                        "92.00% | -1.00 |")
    assert table[3].startswith("| `resnet_8_kron5x_lowmac`: kronecker, each layer's MACs "
                               "capped at 0.25x the dense layer's, factorize + distillation")
    assert table[3].endswith("| 91.80% | -1.20 |")
    assert table[4].startswith("| `resnet_8_kron5x_plain`: kronecker, factorize + plain "
                               "fine-tune, 30 epochs, weight decay 0.0001 |")
    assert table[4].endswith("| 91.50% | -1.50 |")
    assert "weight decay" not in table[2]  # the recipes' default is not repeated
    assert table[5].startswith("| `resnet_8_lowrank5x`: lowrank") and "| 5.4x |" in table[5]
    assert table[6].startswith("| `kron_resnet_8` (zoo model")
    # a zoo row names its own recipe's optimizer and epochs (the manifest's config)
    published = students_table.weight_registry.published
    entry = {**published("lowrank_resnet_8")["fashion_mnist"], "epochs": 30}
    entry["config"] = {**entry.get("config", {}), "optimizer": "sgd"}
    monkeypatch.setattr(students_table.weight_registry, "published",
                        lambda name: ({"fashion_mnist": entry} if name == "lowrank_resnet_8"
                                      else published(name)))
    rows = students_table.markdown("resnet_8", "5").splitlines()
    assert rows[7].startswith("| `lowrank_resnet_8` (zoo model, 30 epochs SGD) |")
    assert "epochs AdamW) |" in rows[6]  # kron_resnet_8's recipe is AdamW
    with pytest.raises(SystemExit, match="no finished runs"):
        students_table.markdown("resnet_20", "5")
