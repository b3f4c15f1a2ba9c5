"""Tests of the model zoo (`kronecker_zoo.models`): registry, builders, saving, behaviour.

Table-driven over `models.list_models()`; references are independent of the
library (NumPy, closed-form parameter counts, `tests.reference`). Backend-neutral
(`keras.ops` / NumPy only), so this file also runs under KERAS_BACKEND=jax.
"""

import math
import re

import keras
import numpy as np
import pytest

from kronecker_zoo import models, report
from kronecker_zoo.layers import (
    ContextIdentity,
    ContextModule,
    KroneckerConv2D,
    KroneckerIdentity,
    LowRankConv2D,
)
from kronecker_zoo.models.context_net import kronecker_context
from kronecker_zoo.models.students import STUDENTS
from tests import zoo_cases
from tests.reference import conv2d, kron_kernel

ALL = zoo_cases.ALL
CLASSIFICATION = models.list_models("classification")
SEGMENTATION = models.list_models("segmentation")
# The size does not change how a family treats its input channels.
ONE_PER_FAMILY = zoo_cases.ONE_PER_FAMILY
# Under JAX (the rerun of tests/test_jax_backend.py) the per-model tests run once per
# family: that run checks the layers on another backend; TensorFlow checks every model.
PER_MODEL = ALL if keras.backend.backend() == "tensorflow" else ONE_PER_FAMILY
RESNET_FAMILIES = ("resnet", "kron_resnet", "lowrank_resnet", "separable_resnet")
# The layer type in the 3x3 role of each ResNet twin (everything else is shared).
CONV_TYPE = {
    "resnet": keras.layers.Conv2D,
    "kron_resnet": KroneckerConv2D,
    "lowrank_resnet": LowRankConv2D,
    "separable_resnet": keras.layers.SeparableConv2D,
}


@pytest.fixture(autouse=True)
def _seeded():
    """Weight initialisers draw from Keras' global seed: make every test repeatable."""
    keras.utils.set_random_seed(0)


# -- helpers -------------------------------------------------------------------------------
def to_np(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def pixels(shape, seed=0):
    """Raw pixel values, uniform in [0, 255]."""
    return np.random.default_rng(seed).uniform(0.0, 255.0, shape).astype("float32")


def run(model, x):
    return to_np(model(x, training=False))


def randomize_model(model, seed=0):
    """Random values for every weight, BatchNorm statistics included (variance > 0).

    Kernels keep their initialiser's scale (init + noise of half its std) so deep
    models stay well-conditioned; 1-D weights (beta, moving mean, biases) get
    N(0, 0.1), gamma and moving variance U(0.5, 1.5).
    """
    g = np.random.default_rng(seed)
    for w in model.weights:
        value = to_np(w)
        leaf = w.path.split("/")[-1]
        if leaf in ("moving_variance", "gamma"):
            new = g.uniform(0.5, 1.5, value.shape)
        elif value.ndim == 1:
            new = 0.1 * g.standard_normal(value.shape)
        else:
            new = value + 0.5 * max(float(value.std()), 0.05) * g.standard_normal(value.shape)
        w.assign(new.astype(value.dtype))


def expected_shape(name, batch, h, w, include_top=True, num_classes=None):
    """Output shape of registered model ``name`` from its documented contract."""
    s = models.spec(name)
    if name in STUDENTS:  # the teacher's architecture, layers factorized
        s = models.spec(STUDENTS[name][0])
    if include_top:
        n = num_classes or (10 if s.task == "classification" else 11)
        return (batch, n) if s.task == "classification" else (batch, h, w, n)
    half = (math.ceil(h / 2), math.ceil(w / 2))
    if s.family in RESNET_FAMILIES:  # two stride-2 stages, widths (16, 32, 64)
        return (batch, math.ceil(half[0] / 2), math.ceil(half[1] / 2), 64)
    if s.family == "drn":  # last stage dilated instead of strided
        return (batch, *half, 64)
    if s.family in ("context_net", "kron_context_net"):  # stride-2 logits, C = classes
        return (batch, *half, num_classes or 11)
    if s.family in ("dilated_fcn", "pool_segnet"):  # full resolution, `width` channels
        return (batch, h, w, s.size_args["width"])
    raise AssertionError(f"no feature-shape expectation for family {s.family!r}: add one")


def split_channels(c):
    """``c = outer * inner``, outer <= inner, as close as possible (the documented split)."""
    pairs = [(a, c // a) for a in range(1, c + 1) if c % a == 0 and a <= c // a]
    return min(pairs, key=lambda p: p[1] - p[0])


def n_weights(layer_or_model):
    """Independent parameter count: sum of the sizes of all weight tensors."""
    return int(sum(np.prod(w.shape) for w in layer_or_model.weights))


def layers_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def default_hw(name):
    return (28, 28) if models.spec(name).task == "classification" else (64, 64)


# -- the registry --------------------------------------------------------------------------
def test_list_models_partition_and_names():
    assert ALL and len(set(ALL)) == len(ALL)
    assert sorted(CLASSIFICATION + SEGMENTATION) == sorted(ALL)
    assert not set(CLASSIFICATION) & set(SEGMENTATION)
    families = set(models.FAMILIES)
    for name in ALL:
        if name in STUDENTS:  # <teacher>_<kron|lowrank><N>x[_variant...], the teacher's task
            teacher, method, _ = STUDENTS[name]
            kind = {"kronecker": "kron", "lowrank": "lowrank"}[method]
            assert re.fullmatch(rf"{teacher}_{kind}\d+x(_[a-z0-9]+)*", name), name
            assert models.spec(name).family == f"{teacher}_student"
            assert models.spec(name).task == models.spec(teacher).task
            continue
        family, _, size = name.rpartition("_")
        assert family in families and size, name
        assert re.fullmatch(r"[a-z0-9]+", size), name
        s = models.spec(name)
        assert (s.name, s.family) == (name, family)
        assert s.task == models.FAMILIES[family][0]
        assert name in (CLASSIFICATION if s.task == "classification" else SEGMENTATION)
    assert {models.spec(n).family for n in ALL if n not in STUDENTS} == families
    assert set(models.list_models(pretrained=True)) <= set(ALL)
    for task in models.TASKS:
        assert set(models.list_models(task, pretrained=True)) <= set(models.list_models(task))


# -- forward passes ------------------------------------------------------------------------
# Another size, odd on purpose (stride-2 "same" convs, pooling, upsampling and crops).
OTHER_SIZE = {"classification": (29, 31), "segmentation": (37, 45)}


@pytest.mark.parametrize("name", PER_MODEL, ids=PER_MODEL)
def test_forward_default_and_other_sizes(name):
    model = models.get(name)
    assert model.name == name
    h, w = default_hw(name)
    assert tuple(model.input_shape) == (None, h, w, 1) == (None, *models.spec(name).input_shape)
    x = pixels((2, h, w, 1))
    y = run(model, x)
    assert y.shape == expected_shape(name, 2, h, w)
    assert np.all(np.isfinite(y))
    assert not np.allclose(y[0], y[1]), "the output does not depend on the input"

    # Any size: same function at the default size, right shapes elsewhere.
    flexible = models.get(name, input_shape=(None, None, 1))
    flexible.set_weights(model.get_weights())
    np.testing.assert_allclose(run(flexible, x), y, rtol=1e-5, atol=1e-5 * np.abs(y).max())
    hh, ww = OTHER_SIZE[models.spec(name).task]
    y2 = run(flexible, pixels((2, hh, ww, 1), seed=1))
    assert y2.shape == expected_shape(name, 2, hh, ww)
    assert np.all(np.isfinite(y2))


# -- saving --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PER_MODEL, ids=PER_MODEL)
def test_keras_and_weights_file_round_trip(name, tmp_path):
    model = models.get(name)
    randomize_model(model, seed=3)
    x = pixels((2, *default_hw(name), 1), seed=4)
    before = run(model, x)
    assert np.all(np.isfinite(before))

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    for w0, w1 in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)
    np.testing.assert_array_equal(run(loaded, x), before)

    weights_path = str(tmp_path / f"{name}.weights.h5")
    model.save_weights(weights_path)
    fresh = models.get(name)
    assert not np.allclose(run(fresh, x), before), "randomize_model changed nothing"
    restored = models.get(name, weights=weights_path)
    for w0, w1 in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)
    np.testing.assert_array_equal(run(restored, x), before)


# -- parameter counts ----------------------------------------------------------------------
@pytest.mark.parametrize("name", PER_MODEL, ids=PER_MODEL)
def test_parameter_report_counts_every_weight(name):
    model = models.get(name)
    expected = n_weights(model)
    assert model.count_params() == expected
    assert report.parameter_report(model).params == expected
    flexible = models.get(name, input_shape=(None, None, 1))
    assert report.parameter_report(flexible, (*default_hw(name), 1)).params == expected


# -- raw pixels in, normalised inside ------------------------------------------------------
@pytest.mark.parametrize("name", PER_MODEL, ids=PER_MODEL)
def test_model_normalises_raw_pixels(name):
    model = models.get(name)
    first = model.layers[1]
    assert isinstance(first, keras.layers.Rescaling), type(first)
    assert first.input is model.inputs[0]
    np.testing.assert_allclose(
        to_np(first(np.array([[0.0, 127.5, 255.0]], "float32"))), [[-1.0, 0.0, 1.0]],
        atol=1e-6)
    # No other normalisation: the same network with the Rescaling replaced by the
    # identity, fed x / 127.5 - 1, computes the same function.
    rescalings = layers_of(model, keras.layers.Rescaling)
    assert rescalings == [first]

    def clone_fn(layer):
        if layer is first:
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    bare = keras.models.clone_model(model, clone_function=clone_fn)
    bare.set_weights(model.get_weights())
    x = pixels((2, *default_hw(name), 1), seed=5)
    y = run(model, x)
    np.testing.assert_allclose(run(bare, (x / 127.5 - 1.0).astype("float32")), y,
                               rtol=1e-5, atol=1e-5 * np.abs(y).max())


# -- backbone, head size, channels ---------------------------------------------------------
@pytest.mark.parametrize("name", PER_MODEL, ids=PER_MODEL)
def test_include_top_false_returns_feature_map(name):
    h, w = default_hw(name)
    backbone = models.get(name, include_top=False)
    y = run(backbone, pixels((2, h, w, 1)))
    assert y.ndim == 4 and y.shape == expected_shape(name, 2, h, w, include_top=False)
    assert np.all(np.isfinite(y))
    flexible = models.get(name, include_top=False, input_shape=(None, None, 1))
    hh, ww = OTHER_SIZE[models.spec(name).task]
    assert run(flexible, pixels((2, hh, ww, 1))).shape == expected_shape(
        name, 2, hh, ww, include_top=False)
    if models.spec(name).family in ("context_net", "kron_context_net"):
        # include_top=False keeps the logits at the front end's stride: no upsampling,
        # no weights dropped; the top is the same maps upsampled by 2 and cropped.
        full = models.get(name)
        assert full.count_params() == backbone.count_params()
        backbone.set_weights(full.get_weights())
        x = pixels((2, h, w, 1), seed=4)
        low, high = run(backbone, x), run(full, x)
        assert low.shape[1:3] == (math.ceil(h / 2), math.ceil(w / 2))
        up = keras.ops.convert_to_numpy(full.get_layer("upsample")(low))
        np.testing.assert_allclose(high, up[:, :h, :w], rtol=1e-5, atol=1e-5)
        return
    # The head is what include_top adds: global pooling + Dense, or a 1x1 conv.
    assert models.get(name).count_params() - backbone.count_params() == (
        (y.shape[-1] + 1) * (10 if models.spec(name).task == "classification" else 11))


def test_backbone_shapes_named_in_docs():
    assert models.get("resnet_8", include_top=False).output_shape == (None, 7, 7, 64)
    assert models.get("drn_8", include_top=False).output_shape == (None, 14, 14, 64)
    assert run(models.get("resnet_8", include_top=False),
               pixels((2, 28, 28, 1))).shape == (2, 7, 7, 64)


@pytest.mark.parametrize("name", PER_MODEL, ids=PER_MODEL)
def test_num_classes_changes_the_head(name):
    h, w = default_hw(name)
    default = models.get(name)
    model = models.get(name, num_classes=3)
    y = run(model, pixels((2, h, w, 1)))
    assert y.shape == expected_shape(name, 2, h, w, num_classes=3)
    default_classes = default.output_shape[-1]
    if models.spec(name).family in ("context_net", "kron_context_net"):
        # Yu & Koltun: the class scores and the context module run at C = num_classes.
        assert model.get_layer("front_out").filters == 3
        assert default.get_layer("front_out").filters == default_classes
        if models.spec(name).size_args["variant"] == "frontend":
            return
        if models.spec(name).family == "context_net":
            assert model.get_layer("context").channels == 3
        else:
            widths = [model.get_layer(f"context_{i}").filters for i in range(6)]
            assert model.get_layer("context_out").filters == 3
            assert all(w % 3 == 0 for w in widths) and widths[0] in (3, 6), widths
        return
    features = models.get(name, include_top=False).output_shape[-1]
    # Dense (classification) or 1x1 conv (segmentation): (features + 1) per class.
    assert default.count_params() - model.count_params() == (features + 1) * (
        default_classes - 3)


@pytest.mark.parametrize("name", ONE_PER_FAMILY, ids=ONE_PER_FAMILY)
def test_three_channel_input(name):
    hw = (32, 32) if models.spec(name).task == "classification" else default_hw(name)
    model = models.get(name, input_shape=(*hw, 3))
    assert tuple(model.input_shape) == (None, *hw, 3)
    x = pixels((2, *hw, 3), seed=6)
    y = run(model, x)
    assert y.shape == expected_shape(name, 2, *hw)
    assert np.all(np.isfinite(y))
    x2 = x.copy()
    x2[..., 2] = 255.0 - x2[..., 2]  # only the third channel changes
    assert not np.allclose(run(model, x2), y), "the third channel is ignored"


# -- errors list the valid choices ---------------------------------------------------------
def _case(id, call, exc, pattern):
    return pytest.param(call, exc, pattern, id=id)


ERROR_CASES = [
    _case("unknown-name-close", lambda tmp: models.get("kron_resnet_9"), ValueError,
          r"Unknown model 'kron_resnet_9'\. Did you mean .*'kron_resnet_8'.*Valid names: .*"
          r"'resnet_8'.*'pool_segnet_base'"),
    _case("unknown-name", lambda tmp: models.get("unet"), ValueError,
          r"Unknown model 'unet'.*Valid names: .*'drn_8'"),
    _case("unknown-task", lambda tmp: models.list_models("detection"), ValueError,
          r"Unknown task 'detection'\. Valid tasks: 'classification', 'segmentation'"),
    _case("unknown-weights-tag", lambda tmp: models.get("resnet_8", weights="imagenet"),
          ValueError,
          r"Unknown weights 'imagenet' for 'resnet_8'\. Valid: None, a path to a \.weights\.h5"),
    _case("missing-weights-file",
          lambda tmp: models.get("resnet_8", weights=str(tmp / "missing.weights.h5")),
          FileNotFoundError, r"Weight file not found: .*missing\.weights\.h5"),
    _case("invalid-override", lambda tmp: models.get("resnet_8", rnak=2), ValueError,
          r"Invalid override\(s\) 'rnak' for 'resnet_8'\..*Valid overrides: .*'widths'"),
    _case("invalid-override-kron", lambda tmp: models.get("kron_resnet_8", rnak=2), ValueError,
          r"Valid overrides: .*'rank'.*'spatial_factors'"),
    _case("size-override-depth", lambda tmp: models.get("resnet_8", depth=20), ValueError,
          r"'depth' is fixed by the name 'resnet_8'.*models\.resnet\(\) directly"),
    _case("size-override-variant",
          lambda tmp: models.get("context_net_basic", variant="large"), ValueError,
          r"'variant' is fixed by the name 'context_net_basic'"),
    _case("size-override-width", lambda tmp: models.get("dilated_fcn_small", width=64),
          ValueError,
          r"'width' is fixed by the name 'dilated_fcn_small'.*Valid overrides: .*'dilations'"),
    _case("num-classes-without-top",
          lambda tmp: models.get("resnet_8", include_top=False, num_classes=5), ValueError,
          r"include_top=False.*num_classes=5"),
    _case("num-classes-0", lambda tmp: models.get("resnet_8", num_classes=0), ValueError,
          r"`num_classes` must be a positive int\. Received: num_classes=0"),
    _case("num-classes-float", lambda tmp: models.get("resnet_8", num_classes=2.5), ValueError,
          r"`num_classes` must be a positive int\. Received: num_classes=2\.5"),
    _case("num-classes-bool", lambda tmp: models.get("context_net_basic", num_classes=True),
          ValueError, r"`num_classes` must be a positive int"),
    _case("input-shape-2d", lambda tmp: models.get("resnet_8", input_shape=(28, 28)),
          ValueError, r"`input_shape` must be \(height, width, channels\).*\(28, 28\)"),
    _case("input-shape-zero",
          lambda tmp: models.get("pool_segnet_small", input_shape=(0, 28, 1)), ValueError,
          r"`input_shape` must be .*\(0, 28, 1\)"),
    _case("input-shape-no-channels",
          lambda tmp: models.get("resnet_8", input_shape=(28, 28, None)), ValueError,
          r"`input_shape` must be"),
    _case("depth-9", lambda tmp: models.resnet(depth=9), ValueError,
          r"`depth` must be 6 \* n \+ 2.*depth=9"),
    _case("depth-2", lambda tmp: models.kron_resnet(depth=2), ValueError,
          r"`depth` must be 6 \* n \+ 2"),
    _case("depth-float", lambda tmp: models.drn(depth=14.0), ValueError,
          r"`depth` must be 6 \* n \+ 2"),
    _case("widths", lambda tmp: models.resnet(widths=(16, 32)), ValueError,
          r"`widths` must be three"),
    _case("variant", lambda tmp: models.kron_context_net(variant="huge"), ValueError,
          r"`variant` must be one of \('basic', 'large'\)"),
    _case("layer-factors", lambda tmp: models.kron_context_net(layer_factors=(1, -1)),
          ValueError, r"`layer_factors` must be a non-empty sequence of non-negative ints"),
    _case("width-multipliers", lambda tmp: models.kron_context_net(width_multipliers=(1, 0, 1,
                                                                                   1, 1, 1)),
          ValueError, r"`width_multipliers` must be a non-empty sequence of positive ints"),
    _case("width-multipliers-length", lambda tmp: models.kron_context_net(
        width_multipliers=(1, 2, 2)), ValueError,
          r"`width_multipliers` needs one entry per layer of `layer_factors` \(6\)"),
    _case("dilations", lambda tmp: models.dilated_fcn(dilations=()), ValueError,
          r"`dilations` must be"),
    _case("levels", lambda tmp: models.pool_segnet(levels=0), ValueError,
          r"`levels` must be a positive int"),
]


@pytest.mark.parametrize("call, exc, pattern", ERROR_CASES)
def test_errors_list_valid_choices(call, exc, pattern, tmp_path):
    with pytest.raises(exc, match=pattern):
        call(tmp_path)


def test_valid_overrides_exclude_size_and_get_arguments():
    for name in ALL:
        s = models.spec(name)
        valid = set(models.valid_overrides(name))
        assert not valid & set(s.size_args), name
        assert not valid & {"input_shape", "num_classes", "include_top", "name"}, name
    assert "rank" in models.valid_overrides("kron_resnet_8")


# -- overrides and parameter budgets -------------------------------------------------------
def _kron_layer_params(layer, rank):
    """Closed form for the ResNet's KroneckerConv2D: 3x3 factors, (a->c) (x) (b->d)."""
    a, b = split_channels(layer.input.shape[-1])
    c, d = split_channels(layer.filters)
    return rank * (3 * 3 * a * c + 3 * 3 * b * d)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="registry arguments reaching the builders: backend-independent, "
                           "checked by the TensorFlow run")
def test_kron_rank_override_parameter_count():
    m4 = models.get("kron_resnet_8")
    m2 = models.get("kron_resnet_8", rank=2)
    k4, k2 = layers_of(m4, KroneckerConv2D), layers_of(m2, KroneckerConv2D)
    assert len(k2) == 6 and [layer.name for layer in k2] == [layer.name for layer in k4]
    for layer2, layer4 in zip(k2, k4):
        assert (layer2.rank, layer4.rank) == (2, 4)
        for layer, rank in ((layer2, 2), (layer4, 4)):
            formula = rank * sum(kh * kw * i * o for kh, kw, i, o in layer.factors)
            assert n_weights(layer) == layer.count_params() == formula == _kron_layer_params(
                layer, rank), layer.name
            assert [tuple(w.shape) for w in layer.factor_weights] == [
                (rank,) + tuple(f) for f in layer.factors]
            assert not layer.use_bias and layer.kernel_size == (9, 9)
        # The layer's kernel is the rank-2 sum of Kronecker products of its factors.
        np.testing.assert_allclose(
            to_np(layer2.kernel), kron_kernel([to_np(f) for f in layer2.factor_weights]),
            rtol=1e-5, atol=1e-6)
    assert m2.count_params() < m4.count_params()
    assert m4.count_params() - m2.count_params() == sum(n_weights(layer) for layer in k2)
    y = run(m2, pixels((2, 28, 28, 1)))
    assert y.shape == (2, 10) and np.all(np.isfinite(y))


def test_lowrank_resnet_matches_the_kronecker_budget():
    for size in ("8", "20"):
        kron = models.get(f"kron_resnet_{size}")
        low = models.get(f"lowrank_resnet_{size}")
        lows = layers_of(low, LowRankConv2D)
        krons = {layer.name: layer for layer in layers_of(kron, KroneckerConv2D)}
        assert lows and [layer.name for layer in lows] == list(krons)
        for layer in lows:
            cin, cout = layer.input.shape[-1], layer.filters
            budget = _kron_layer_params(krons[layer.name], 4)
            assert n_weights(krons[layer.name]) == budget
            # rank r: r * (3 * in + 3 * out) weights, r = budget / (3 (in + out)) rounded.
            assert layer.rank == max(1, round(budget / (3 * (cin + cout))))
            assert n_weights(layer) == layer.rank * 3 * (cin + cout)
            # At the default widths the budget divides exactly: same count per layer.
            assert n_weights(layer) == budget, layer.name
        assert low.count_params() == kron.count_params()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="registry arguments reaching the builders: backend-independent, "
                           "checked by the TensorFlow run")
def test_lowrank_rank_override():
    model = models.get("lowrank_resnet_8", rank=3)
    for layer in layers_of(model, LowRankConv2D):
        assert layer.rank == 3
        assert n_weights(layer) == 3 * (3 * layer.input.shape[-1] + 3 * layer.filters)
    assert model.count_params() < models.get("lowrank_resnet_8").count_params()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="registry arguments reaching the builders: backend-independent, "
                           "checked by the TensorFlow run")
def test_builder_overrides_reach_the_layers():
    model = models.get("resnet_8", widths=(8, 16, 24))
    assert model.get_layer("stem_conv").filters == 8
    assert models.get("resnet_8", widths=(8, 16, 24), include_top=False).output_shape == (
        None, 7, 7, 24)
    fcn = models.get("dilated_fcn_small", dilations=(1, 2))
    assert [layer.name for layer in fcn.layers if layer.name.endswith("_add")] == [
        "block1_add", "block2_add"]
    assert fcn.get_layer("block2_conv1").dilation_rate == (2, 2)


# -- one topology, four parametrisations ---------------------------------------------------
@pytest.mark.parametrize("size", ["8", "20"])
def test_resnet_twins_share_topology(size):
    built = {family: models.get(f"{family}_{size}") for family in RESNET_FAMILIES}
    reference = built["resnet"]
    names = [layer.name for layer in reference.layers]
    conv_roles = [n for n in names if re.fullmatch(r"stage\d_block\d+_conv[12]", n)]
    assert len(conv_roles) == 2 * 3 * ((int(size) - 2) // 6)
    for family, model in built.items():
        assert [layer.name for layer in model.layers] == names, family
        for layer, ref in zip(model.layers, reference.layers):
            expected_type = CONV_TYPE[family] if layer.name in conv_roles else type(ref)
            assert type(layer) is expected_type, (family, layer.name)
            assert tuple(layer.output.shape) == tuple(ref.output.shape), (family, layer.name)
        # The same wiring: every layer reads the outputs of the same-named layers.
        assert _wiring(model) == _wiring(reference), family


def _wiring(model):
    return [(layer["name"], layer["inbound_nodes"]) for layer in model.get_config()["layers"]]


# -- translation equivariance --------------------------------------------------------------
def _shift_error(model, x, dy, dx, margin):
    """Max |f(roll(x)) - roll(f(x))| over pixels whose receptive field, in both the
    shifted and unshifted input, lies inside the image (so no padding, no wrap)."""
    y = run(model, x)
    y_shifted = run(model, np.roll(x, (dy, dx), axis=(1, 2)))
    expected = np.roll(y, (dy, dx), axis=(1, 2))
    h, w = x.shape[1:3]
    inner = (slice(None), slice(margin + dy, h - margin), slice(margin + dx, w - margin))
    assert y_shifted[inner].size > 0
    return np.abs(y_shifted[inner] - expected[inner]).max() / np.abs(y[inner]).max()


def test_dilated_fcn_is_translation_equivariant():
    size = 128
    model = models.get("dilated_fcn_small", input_shape=(size, size, 1))
    randomize_model(model, seed=7)
    rf = report.parameter_report(model).receptive_field
    assert rf == (69, 69)  # 3 + 4 * sum(1, 2, 4, 8) + 6, as documented
    margin = rf[0] // 2 + 1
    x = pixels((1, size, size, 1), seed=8)
    rng = np.random.default_rng(9)
    for dy, dx in [(1, 1), (3, 8), tuple(int(v) for v in rng.integers(1, 9, 2))]:
        assert _shift_error(model, x, dy, dx, margin) < 1e-5, (dy, dx)


# pool_segnet(levels=2): 3x3 convs and 2x2 pools on the way down, bilinear x2
# upsampling (each output mixes 2 inputs per axis: floor(src), floor(src) + 1) on the
# way up. Propagating exact 1-D support intervals through that graph gives receptive
# fields of 48 or 52 pixels depending on the pixel's position modulo 4.
POOL_SEGNET_RF = 52


def test_pool_segnet_is_not_translation_equivariant():
    size = 128
    model = models.get("pool_segnet_small", input_shape=(size, size, 1))
    randomize_model(model, seed=10)
    margin = POOL_SEGNET_RF // 2 + 2
    x = pixels((1, size, size, 1), seed=11)
    for dy, dx in [(1, 0), (0, 1), (1, 1), (3, 2)]:
        assert _shift_error(model, x, dy, dx, margin) > 1e-3, (dy, dx)
    # ...but it is for shifts by a multiple of the pooling period 2 ** levels = 4:
    # the grid of the max pooling, not a bug or a loose tolerance, breaks it above.
    for dy, dx in [(4, 8), (8, 4)]:
        assert _shift_error(model, x, dy, dx, margin) < 1e-5, (dy, dx)


def _measured_receptive_width(model, width, seed=0):
    """Largest number of pixels on its row that change one output pixel (a lower
    bound of the receptive field's width), over the output pixels near the centre."""
    x = pixels((1, 16, width, 1), seed=seed)
    base = run(model, x)[0, 8]
    batch = np.repeat(x, width, axis=0)
    # One pixel per example, by far brighter than the rest so that it wins its max
    # pools and passes the ReLUs (a probe of influence, not a realistic image).
    batch[np.arange(width), 8, np.arange(width), 0] += 1000.0
    changed = np.abs(run(model, batch)[:, 8] - base).max(-1) > 1e-5 * np.abs(base).max()
    spans = []
    for p in range(width // 2 - 4, width // 2 + 4):  # several pooling alignments
        hit = np.nonzero(changed[:, p])[0]
        spans.append(hit.max() - hit.min() + 1)
    return max(spans)


@pytest.mark.parametrize("name, expected", [("dilated_fcn_small", 69),
                                            ("pool_segnet_small", POOL_SEGNET_RF)])
def test_report_receptive_field_covers_the_measured_one(name, expected):
    model = models.get(name, input_shape=(None, None, 1))
    randomize_model(model, seed=17)
    measured = _measured_receptive_width(model, 96)
    assert measured == expected  # the closed forms above are attained
    reported = report.parameter_report(model, (64, 64, 1)).receptive_field[1]
    assert reported >= measured, (
        f"parameter_report gives {name} a receptive field of {reported} px, but one of its "
        f"output pixels changes when any of {measured} consecutive input pixels of its row "
        "does (exact support intervals: 48 or 52 px, alternating with the output pixel's "
        "position modulo 4). The report's rule rf_in + (k - 1) * stride_in, with the "
        "fractional stride of a bilinear UpSampling2D followed by convs and skips, gives "
        "the average over those positions, not the largest field")


# -- identity initialisation of the context part -------------------------------------------
def _context_submodel(name, model):
    """front_out -> end of the context part (one ContextModule layer, or the chain
    context_0 ... context_out of the Kronecker twin)."""
    kron = models.spec(name).family == "kron_context_net"
    last = model.get_layer("context_out" if kron else "context")
    return keras.Model(model.get_layer("front_out").output, last.output)


CONTEXT_NETS = [n for n in ALL if models.spec(n).family in ("context_net", "kron_context_net")
                and models.spec(n).size_args["variant"] != "frontend"]


@pytest.mark.parametrize("name", CONTEXT_NETS, ids=CONTEXT_NETS)
def test_fresh_context_part_is_the_identity(name):
    model = models.get(name)
    if models.spec(name).family == "kron_context_net":
        assert [layer.name for layer in model.layers if layer.name.startswith("context")] == [
            f"context_{i}" for i in range(6)] + ["context_out"]
        assert layers_of(model, KroneckerConv2D)
    else:
        assert isinstance(model.get_layer("context"), ContextModule)
    sub = _context_submodel(name, model)
    x = np.random.default_rng(12).uniform(0.0, 1.0, (2, *sub.input_shape[1:])).astype("float32")
    y = run(sub, x)
    assert y.shape == x.shape
    if models.spec(name).size_args["variant"] == "basic":
        np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6)
    else:
        # "large" adds N(0, 1e-3) noise to every kernel to break symmetry.
        assert np.linalg.norm(y - x) / np.linalg.norm(x) < 0.05  # measured: ~0.014
        assert np.abs(y - x).max() > 1e-6  # the noise is there


@pytest.mark.parametrize("variant", ["basic", "large"])
def test_noise_free_context_modules_are_exactly_the_identity(variant):
    c = 4
    inputs = keras.Input((None, None, c))
    kron = keras.Model(inputs, kronecker_context(inputs, c, variant, noise_stddev=0.0))
    dense = keras.Model(inputs, ContextModule(c, variant, noise_stddev=0.0)(inputs))
    x = np.random.default_rng(13).uniform(0.0, 2.0, (2, 30, 34, c)).astype("float32")
    np.testing.assert_allclose(run(kron, x), x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run(dense, x), x, rtol=1e-5, atol=1e-6)
    if variant == "large":  # six Kronecker layers: 2C, 2C, 4C, 8C, 16C, 16C, then C
        assert [layer.filters for layer in kron.layers[1:]] == [8, 8, 16, 32, 64, 64, 4]


@pytest.mark.parametrize("variant", ["basic", "large"])
def test_kronecker_context_layouts_with_1x1_layers_start_as_the_identity(variant):
    """``layer_factors`` entry n is a layer of extent 3 ** n: 0 is a 1x1 Conv2D."""
    c = 3
    inputs = keras.Input((None, None, c))
    kron = keras.Model(inputs, kronecker_context(inputs, c, variant, (1, 2, 0, 3, 0),
                                                 noise_stddev=0.0))
    extents = [tuple(layer.kernel_size) for layer in kron.layers[1:]]
    assert extents == [(e, e) for e in (3, 9, 1, 27, 1, 1)], extents
    x = np.random.default_rng(23).uniform(0.0, 2.0, (2, 31, 29, c)).astype("float32")
    np.testing.assert_allclose(run(kron, x), x, rtol=1e-5, atol=1e-6)


def test_widened_kronecker_context_modules_start_as_the_identity():
    """``width_multipliers`` widens layers to ``m_i C``: still exactly the identity without
    noise; widened modules get noise by default, so the copies of a channel differ."""
    c, factors, multipliers = 3, (1, 2, 2, 3, 0, 2), (1, 2, 2, 4, 3, 2)
    inputs = keras.Input((None, None, c))
    exact = keras.Model(inputs, kronecker_context(inputs, c, "basic", factors, noise_stddev=0.0,
                                                  width_multipliers=multipliers))
    assert [layer.filters for layer in exact.layers[1:]] == [c * m for m in multipliers] + [c]
    x = np.random.default_rng(24).uniform(0.0, 2.0, (2, 33, 28, c)).astype("float32")
    np.testing.assert_allclose(run(exact, x), x, rtol=1e-5, atol=1e-6)
    noisy = keras.Model(inputs, kronecker_context(inputs, c, "basic", factors,
                                                  width_multipliers=multipliers))
    y = run(noisy, x)
    assert 0 < np.linalg.norm(y - x) / np.linalg.norm(x) < 0.05
    kernel = to_np(noisy.get_layer("context_4").kernel)[0, 0]  # 1x1, 12 -> 9 channels
    assert not np.array_equal(kernel[:, 0], kernel[:, 1])  # the two copies of channel 0
    # All-ones multipliers are the basic module itself (no noise, same parameters).
    plain = keras.Model(inputs, kronecker_context(inputs, c, "basic",
                                                  width_multipliers=(1,) * 6))
    np.testing.assert_allclose(run(plain, x), x, rtol=1e-5, atol=1e-6)
    assert plain.count_params() == keras.Model(
        inputs, kronecker_context(inputs, c, "basic")).count_params()


def test_kronecker_identity_factors():
    init = KroneckerIdentity()
    f0 = to_np(init((1, 3, 3, 4, 4)))
    f1 = to_np(init((1, 3, 3, 2, 4)))
    np.testing.assert_array_equal(to_np(init((3, 3, 2, 4))), f1[0])
    full = kron_kernel([f0, f1])
    assert full.shape == (9, 9, 8, 16)
    # Independent expectation: centre delta (x) (I_4 (x) B), B maps 2 -> 4 channels.
    b = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    expected = np.zeros((9, 9, 8, 16))
    expected[4, 4] = np.kron(np.eye(4), b)
    np.testing.assert_allclose(full, expected, atol=1e-7)
    # Other rank terms are zero.
    two = to_np(init((2, 3, 3, 4, 4)))
    np.testing.assert_array_equal(two[1], 0.0)
    np.testing.assert_array_equal(two[0, 1, 1], np.eye(4))
    # Same function as ContextIdentity(4) on the full (9, 9, 8, 16) shape: both map
    # C = 4 maps held as blocks (v / 2 in each of 2 channels) to blocks of 4 (v / 4).
    # (The kernels themselves differ: ContextIdentity averages over the whole block.)
    dense = to_np(ContextIdentity(4)((9, 9, 8, 16)))
    v = np.random.default_rng(14).uniform(0.0, 1.0, (1, 12, 11, 4))
    held = np.repeat(v, 2, axis=-1) / 2
    want = np.repeat(v, 4, axis=-1) / 4
    np.testing.assert_allclose(conv2d(held, full, padding="same"), want, atol=1e-6)
    np.testing.assert_allclose(conv2d(held, dense, padding="same"), want, atol=1e-6)
    # Noise: seeded, of the requested scale.
    noisy = to_np(KroneckerIdentity(0.1, seed=0)((64, 3, 3, 4, 4)))
    assert abs(np.std(noisy[1:]) - 0.1) < 0.01
    np.testing.assert_array_equal(noisy, to_np(KroneckerIdentity(0.1, seed=0)((64, 3, 3, 4, 4))))


# -- training ------------------------------------------------------------------------------
def _fit_and_check(model, x, y, loss):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    before = [to_np(w).copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 3 and np.all(np.isfinite(losses))
    changed = [not np.array_equal(w0, to_np(w1))
               for w0, w1 in zip(before, model.trainable_weights)]
    assert all(changed), [w.path for w, c in zip(model.trainable_weights, changed) if not c]
    # It learns: the training loss (BatchNorm on batch statistics) drops over the epochs.
    # (Inference-mode loss is not compared: after six steps the BatchNorm moving
    # statistics are still near their initial values.)
    assert losses[-1] < losses[0], losses


@pytest.mark.slow
@pytest.mark.training
@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_every_family_trains_with_plain_fit(name):
    """``model.fit`` of each family (TensorFlow: no XLA): every weight moves, loss drops."""
    keras.utils.set_random_seed(15)
    rng = np.random.default_rng(15)
    if models.spec(name).task == "classification":
        model = models.get(name)
        x = pixels((8, 28, 28, 1), seed=15)
        y = rng.integers(0, 10, 8)
    else:
        model = models.get(name, input_shape=(32, 32, 1))
        x = pixels((8, 32, 32, 1), seed=16)
        y = rng.integers(0, 11, (8, 32, 32))
    _fit_and_check(model, x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=True))


# -- the context ablation: one front end, class scores, module at C = num_classes ----------
ABLATION = ["context_net_frontend", "context_net_basic", "context_net_large",
            "kron_context_net_basic", "kron_context_net_large"]


def _front_layers(model):
    return {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers
            if layer.name.startswith("front") and layer.weights}


def test_context_ablation_models_share_their_front_end():
    fronts = [_front_layers(models.get(name)) for name in ABLATION]
    assert all(front == fronts[0] for front in fronts)
    assert fronts[0]["front_out"] == [(1, 1, 32, 11), (11,)]  # the front end ends in scores
    frontend = models.get("context_net_frontend")
    # the front end alone: its scores, upsampled, are the logits (no other weights)
    assert sum(np.prod(s) for shapes in fronts[0].values() for s in shapes) == (
        frontend.count_params())


def test_context_net_large_widths_follow_yu_koltun_at_c_classes():
    module = models.get("context_net_large", num_classes=5).get_layer("context")
    assert [conv.filters for conv in module.convs] == [10, 10, 20, 40, 80, 160, 160, 5]
    assert module.dilations == (1, 1, 2, 4, 8, 16, 1)
    kron = models.get("kron_context_net_large", num_classes=5)
    assert [kron.get_layer(f"context_{i}").filters for i in range(6)] + [
        kron.get_layer("context_out").filters] == [10, 10, 20, 40, 80, 80, 5]


@pytest.mark.parametrize("name", ABLATION[1:])
def test_fresh_module_keeps_the_front_end_prediction(name):
    """Yu & Koltun's code feeds the scores straight into conv + ReLU: a fresh module gives
    ``max(scores, 0)``, the same argmax wherever the top score is positive."""
    model = models.get(name)
    front = keras.Model(model.input, model.get_layer("front_out").output)
    x = pixels((2, 64, 64, 1), seed=9)
    scores = run(front, x)
    logits = run(keras.Model(model.input, model.get_layer(
        "context" if models.spec(name).family == "context_net" else "context_out").output), x)
    expected = np.maximum(scores, 0.0)
    if models.spec(name).size_args["variant"] == "basic":
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    else:  # N(0, 1e-3) noise on every kernel
        assert np.linalg.norm(logits - expected) / np.linalg.norm(expected) < 0.05


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_models_are_channels_last_whatever_the_global_image_data_format(name):
    """With `image_data_format()` set to channels_first (code or ~/.keras/keras.json), a
    zoo model still reads ``(height, width, channels)`` images: the same parameters and
    outputs as the model built under the default, and the setting is restored."""
    reference = models.get(name)
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        model = models.get(name)
        assert keras.config.image_data_format() == "channels_first"
    finally:
        keras.config.set_image_data_format(previous)
    assert model.count_params() == reference.count_params()
    model.set_weights(reference.get_weights())
    x = pixels((1,) + default_hw(name) + (1,), seed=3)
    np.testing.assert_allclose(run(model, x), run(reference, x), rtol=1e-5, atol=1e-5)


def test_widths_accept_numpy_ints_and_refuse_floats():
    model = models.get("resnet_8", widths=tuple(np.array([8, 16, 32])))
    assert model.get_layer("stem_conv").filters == 8
    for widths in ((8.0, 16, 32), (8, 16), (8, True, 32)):
        with pytest.raises(ValueError, match="`widths` must be three positive ints"):
            models.get("resnet_8", widths=widths)


def test_list_models_pretrained_must_be_a_bool():
    with pytest.raises(ValueError, match="`pretrained` must be True or False"):
        models.list_models(pretrained="no")
    assert set(models.list_models(pretrained=np.bool_(True))) <= set(ALL)
