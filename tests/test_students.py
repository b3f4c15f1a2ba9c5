"""Students: models.factorized.replace_layers / students.student_builder rebuild exactly the
architecture compress.factorize makes, and every registered student loads and runs."""

import keras
import numpy as np
import pytest

from kronecker_zoo import compress, models
from kronecker_zoo.models import factorized, students


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _pixels(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 28, 28, 1)).astype("float32")


@pytest.mark.parametrize("method", ["kronecker", "lowrank"])
def test_student_builder_rebuilds_the_factorized_architecture(method):
    keras.utils.set_random_seed(0)
    teacher = models.get("resnet_8")
    plan = compress.plan_factorization(teacher, ratio=4.0, method=method,
                                       exclude=["stem_conv"])
    student = compress.factorize(teacher, plan=plan)
    build = students.student_builder(models.resnet, plan.layer_specs(),
                                     {"depth", "include_top", "name"})
    rebuilt = build(depth=8, name="resnet_8_student")
    assert rebuilt.name == "resnet_8_student"
    assert [(l.name, type(l)) for l in rebuilt.layers] == [
        (l.name, type(l)) for l in student.layers]
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in student.weights]
    assert rebuilt.count_params() == plan.params_after
    rebuilt.set_weights(student.get_weights())
    x = _pixels(4)
    np.testing.assert_allclose(_np(rebuilt(x)), _np(student(x)), rtol=1e-5, atol=1e-5)
    # the predictions layer (factorized here) has no place in a backbone
    backbone = build(depth=8, include_top=False)
    assert "predictions" not in [l.name for l in backbone.layers]
    assert type(backbone.get_layer("stage1_block1_conv1")).__name__ == (
        "KroneckerConv2D" if method == "kronecker" else "LowRankConv2D")


def test_replace_layers_errors_name_the_problem():
    model = models.get("resnet_8")
    with pytest.raises(ValueError, match=r"has no layer\(s\) \['nope'\]"):
        factorized.replace_layers(model, {"nope": {"layer": "LowRankConv2D", "rank": 2}})
    with pytest.raises(ValueError, match="replaces a Conv2D; layer 'stem_bn'"):
        factorized.replace_layers(model, {"stem_bn": {"layer": "LowRankConv2D", "rank": 2}})
    with pytest.raises(ValueError, match="layer_type must be one of"):
        factorized.replace_layers(model, {"stem_conv": {"layer": "Tucker", "rank": 2}})
    with pytest.raises(ValueError, match="needs its factor shapes"):
        factorized.replace_layers(model, {"stem_conv": {"layer": "KroneckerConv2D",
                                                        "rank": 2}})


def _two_heads():
    """Two nested Sequential heads that both have a layer named ``dense``."""
    inputs = keras.Input((6,))
    first = keras.Sequential([keras.layers.Dense(8, name="dense")], name="first")
    second = keras.Sequential([keras.layers.Dense(8, name="dense")], name="second")
    x = keras.layers.Dense(8, name="stem")(inputs)
    return keras.Model(inputs, keras.layers.Add()([first(x), second(x)]), name="heads")


def test_replace_layers_finds_nested_layers_by_path_and_refuses_ambiguous_names():
    model = _two_heads()
    spec = {"layer": "KroneckerDense", "factors": [[2, 2], [4, 4]], "rank": 1}
    stem = {"layer": "KroneckerDense", "factors": [[2, 2], [3, 4]], "rank": 1}
    new = factorized.replace_layers(model, {"second/dense": spec, "stem": stem})
    kinds = {f"{outer.name}/{l.name}" if isinstance(outer, keras.Model) else l.name:
             type(l).__name__
             for outer in new.layers for l in (outer.layers if isinstance(
                 outer, keras.Model) else [outer])}
    assert kinds["first/dense"] == "Dense"
    assert kinds["second/dense"] == "KroneckerDense"
    assert kinds["stem"] == "KroneckerDense"
    assert type(model.get_layer("second").layers[0]) is keras.layers.Dense  # untouched
    with pytest.raises(ValueError, match=r"'dense' is ambiguous.*give its path"):
        factorized.replace_layers(model, {"dense": spec})
    with pytest.raises(ValueError, match=r"no layer\(s\) \['third/dense'\]"):
        factorized.replace_layers(model, {"third/dense": spec})


@pytest.mark.parametrize("name", sorted(students.STUDENTS))
def test_registered_students_build_and_report(name):
    assert name in models.list_models()
    teacher_name, method, layers = students.STUDENTS[name]
    student, teacher = models.get(name), models.get(teacher_name)
    assert models.spec(name).task == models.spec(teacher_name).task
    assert {l.name for l in student.layers} == {l.name for l in teacher.layers}
    for layer_name, spec in layers.items():
        assert type(student.get_layer(layer_name)).__name__ == spec["layer"]
    assert student.count_params() < teacher.count_params()
    five = models.get(name, num_classes=5)
    assert five.output_shape == (None, 5)
    assert models.valid_overrides(name) == []  # the plan fixes the architecture
    with pytest.raises(ValueError, match=r"Invalid override\(s\) 'widths'"):
        models.get(name, widths=(8, 16, 24))
