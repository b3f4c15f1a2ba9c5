"""kronecker_zoo.compress against independent references: np.kron reconstructions, a
rearrangement written index by index, np.linalg.svd, and the original Keras model."""

import importlib
import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kronecker_zoo import compress, report
from kronecker_zoo.compress import search
from kronecker_zoo.layers import KroneckerConv2D, KroneckerDense, LowRankConv2D


def _kron_sum(factors):
    """sum_r kron(F_0[r], F_1[r], ...) with np.kron."""
    total = 0
    for r in range(factors[0].shape[0]):
        term = factors[0][r]
        for f in factors[1:]:
            term = np.kron(term, f[r])
        total = total + term
    return total


def _rearranged_by_index(kernel, outer, inner):
    """The Van Loan-Pitsianis matrix, entry by entry: row = outer index, column = inner."""
    rows = np.zeros((math.prod(outer), math.prod(inner)))
    for a in np.ndindex(*outer):
        for b in np.ndindex(*inner):
            index = tuple(i * n + j for i, j, n in zip(a, b, inner))
            rows[np.ravel_multi_index(a, outer), np.ravel_multi_index(b, inner)] = kernel[index]
    return rows


# -- nearest_kronecker ----------------------------------------------------------------------


@pytest.mark.parametrize("outer, inner", [
    ((3, 1, 2, 3), (1, 3, 2, 5)),   # spatial split (3x1) (x) (1x3)
    ((1, 1, 4, 2), (3, 3, 2, 4)),   # (1x1) (x) (3x3)
    ((3, 3, 1, 1), (1, 1, 6, 4)),   # spatial (x) channels
    ((4, 6), (3, 2)),               # dense matrix (in, out)
])
def test_two_factors_error_is_the_discarded_singular_values(outer, inner):
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=[a * b for a, b in zip(outer, inner)])
    s = np.linalg.svd(_rearranged_by_index(kernel, outer, inner), compute_uv=False)
    full = min(math.prod(outer), math.prod(inner))
    for rank in sorted({1, 2, full // 2 or 1, full}):
        result = compress.nearest_kronecker(kernel, [outer, inner], rank)
        assert [f.shape for f in result.factors] == [(rank,) + outer, (rank,) + inner]
        approx = _kron_sum(result.factors)
        assert np.linalg.norm(kernel - approx) == pytest.approx(result.error, rel=1e-9,
                                                                 abs=1e-9)
        assert result.error == pytest.approx(np.sqrt(np.sum(s[rank:] ** 2)), rel=1e-9,
                                             abs=1e-9)
        assert result.relative_error == pytest.approx(result.error / np.linalg.norm(kernel))
        np.testing.assert_allclose(result.singular_values, s, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(_kron_sum(compress.nearest_kronecker(
        kernel, [outer, inner], full).factors), kernel, atol=1e-10)  # exact at full rank


def test_two_factors_is_optimal_against_perturbations_and_recovers_exact_sums():
    rng = np.random.default_rng(2)
    shapes = [(3, 1, 4, 2), (1, 3, 2, 4)]
    truth = [rng.normal(size=(2,) + s) for s in shapes]
    kernel = _kron_sum(truth)
    exact = compress.nearest_kronecker(kernel, shapes, rank=2)
    assert exact.error < 1e-10 and np.allclose(_kron_sum(exact.factors), kernel)
    noisy = kernel + 0.3 * rng.normal(size=kernel.shape)
    best = compress.nearest_kronecker(noisy, shapes, rank=2)
    for _ in range(20):  # no nearby factors approximate better (Eckart-Young)
        moved = [f + 1e-2 * rng.normal(size=f.shape) for f in best.factors]
        assert np.linalg.norm(noisy - _kron_sum(moved)) >= best.error - 1e-12


def test_three_factors_recover_a_product_exactly_and_report_their_true_error():
    rng = np.random.default_rng(3)
    shapes = [(1, 3, 2, 2), (3, 1, 2, 2), (1, 1, 2, 3)]
    truth = [rng.normal(size=(1,) + s) for s in shapes]
    kernel = _kron_sum(truth)
    result = compress.nearest_kronecker(kernel, shapes, rank=1)
    assert result.singular_values is None
    assert result.error < 1e-9 * np.linalg.norm(kernel)
    np.testing.assert_allclose(_kron_sum(result.factors), kernel, atol=1e-9)
    norms = [np.linalg.norm(f) for f in result.factors]  # the scale split evenly
    assert max(norms) / min(norms) == pytest.approx(1.0)
    noisy = rng.normal(size=kernel.shape)
    errors = []
    for rank in (1, 2, 4):
        r = compress.nearest_kronecker(noisy, shapes, rank)
        assert np.linalg.norm(noisy - _kron_sum(r.factors)) == pytest.approx(r.error)
        errors.append(r.error)
    assert errors[0] < np.linalg.norm(noisy) and errors[2] < errors[0]
    # never worse than the best single product of the outer factor with the rest
    two = compress.nearest_kronecker(noisy, [shapes[0], tuple(
        a * b for a, b in zip(shapes[1], shapes[2]))], 1)
    assert errors[0] >= two.error - 1e-9  # three factors are a special case of two


@given(st.lists(st.sampled_from([(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (1, 3)]),
                min_size=4, max_size=4),
       st.integers(1, 3), st.integers(0, 10_000))
def test_random_shapes_reconstruct_with_np_kron(axis_splits, rank, seed):
    outer = tuple(a for a, _ in axis_splits)
    inner = tuple(b for _, b in axis_splits)
    if math.prod(outer) < 2 or math.prod(inner) < 2:
        return
    kernel = np.random.default_rng(seed).normal(size=[a * b for a, b in axis_splits])
    result = compress.nearest_kronecker(kernel.astype("float32"), [outer, inner], rank)
    assert all(f.dtype == np.float32 for f in result.factors)
    assert np.linalg.norm(kernel - _kron_sum(result.factors)) == pytest.approx(
        result.error, rel=1e-4, abs=1e-5)


def test_nearest_kronecker_errors_name_the_problem():
    kernel = np.zeros((3, 3, 4, 4))
    with pytest.raises(ValueError, match="multiply to"):
        compress.nearest_kronecker(kernel, [(3, 1, 2, 2), (1, 3, 2, 3)])
    with pytest.raises(ValueError, match="two or more shapes"):
        compress.nearest_kronecker(kernel, [(3, 3, 4, 4)])
    with pytest.raises(ValueError, match="rank must be a positive int"):
        compress.nearest_kronecker(kernel, [(3, 1, 2, 2), (1, 3, 2, 2)], rank=0)
    with pytest.raises(ValueError, match="float"):
        compress.nearest_kronecker(kernel.astype(int), [(3, 1, 2, 2), (1, 3, 2, 2)])


# -- shape search ---------------------------------------------------------------------------


def test_search_covers_every_divisor_split_including_low_rank():
    shapes = compress.two_factor_shapes((3, 3, 4, 6))
    assert len(shapes) == 2 * 2 * 3 * 4 - 2  # all but the two trivial splits
    assert ((3, 1, 4, 1), (1, 3, 1, 6)) in shapes  # spatial SVD (Jaderberg et al.)
    assert ((1, 1, 2, 3), (3, 3, 2, 2)) in shapes


@pytest.mark.parametrize("seed", range(3))
def test_kronecker_search_is_never_worse_than_low_rank_at_equal_parameters(seed):
    rng = np.random.default_rng(seed)
    kh, kw, cin, cout = 3, 3, 8, 12
    kernel = rng.normal(size=(kh, kw, cin, cout)) * np.linspace(1, 3, cout)
    s = np.linalg.svd(kernel.transpose(0, 2, 1, 3).reshape(kh * cin, kw * cout),
                      compute_uv=False)  # independent low-rank SVD
    options = search.options(search.spectra(kernel))
    for rank in (1, 2, 4, 6):
        budget = rank * (kh * cin + kw * cout)
        low_rank_error = np.sqrt(np.sum(s[rank:] ** 2) / np.sum(s ** 2))
        best = search.best_candidate(options, budget)
        assert best.params <= budget
        assert best.relative_error <= low_rank_error + 1e-9


@pytest.mark.parametrize("runtime, cap", [("litert", 0.45), ("litert_int8", 0.6),
                                          ("tensorflow", 0.3)])
def test_cost_cap_picks_the_least_error_shape_the_runtime_prices_within_it(runtime, cap):
    """`best_candidate` with a runtime's cost: each shape at the rank the budget allows,
    errors from an independent SVD of the rearrangement written index by index, prices
    from the layer the shape would build (`KroneckerConv2D.execution_costs`), against
    ``cap`` x the plain convolution's price."""
    from kronecker_zoo import ops as kz_ops

    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 3, 16, 32)) * np.linspace(1, 3, 32)
    hw, budget = (14, 14), 700
    original = kz_ops.dense_conv_cost(hw, (3, 3), 16, 32, (1, 1), "same", runtime)
    priced = []
    for outer, inner in search.two_factor_shapes(kernel.shape):
        per_rank = math.prod(outer) + math.prod(inner)
        s = np.linalg.svd(_rearranged_by_index(kernel, outer, inner), compute_uv=False)
        rank = min(budget // per_rank, len(s))
        if rank < 1:
            continue
        layer = KroneckerConv2D(32, 3, [outer, inner], rank=rank)
        layer.build((None,) + hw + (16,))
        price = layer.execution_costs(runtime)["factored"]
        error = np.sqrt(np.sum(s[rank:] ** 2) / np.sum(s ** 2))
        priced.append((price, error, (outer, inner), rank))
    admissible = [p for p in priced if p[0] <= cap * original]
    assert 0 < len(admissible) < len(priced)  # the cap bites, and something is left
    best_error = min(p[1] for p in admissible)
    cost = lambda factors, rank: search.conv_cost(factors, rank, hw, (1, 1), "same", runtime)
    options = search.options(search.spectra(kernel), hw)
    best = search.best_candidate(options, budget, cap * original, cost)
    assert best.relative_error == pytest.approx(best_error, abs=1e-9)
    assert cost(best.factors, best.rank) <= cap * original and best.params <= budget
    uncapped = search.best_candidate(options, budget)
    assert uncapped.relative_error < best.relative_error  # the cap changed the choice
    assert uncapped.relative_error == pytest.approx(min(p[1] for p in priced), abs=1e-9)


# -- factorize ------------------------------------------------------------------------------


def _sequential():
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(12, (3, 2), strides=2, padding="valid", use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.DepthwiseConv2D(3),
        keras.layers.Flatten(),
        keras.layers.Dense(6, activation="softmax"),
    ], name="seq")


def _residual():
    inputs = keras.Input((12, 12, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    y = keras.layers.Conv2D(8, 3, strides=1, padding="same", activation="relu", name="a")(x)
    y = keras.layers.Conv2D(8, 1, name="b", use_bias=False)(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="down")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    head = keras.Sequential([keras.layers.Dense(12, activation="relu", name="hidden"),
                             keras.layers.Dense(5, name="logits")], name="head")
    return keras.Model(inputs, head(x), name="residual")


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(size=w.shape) * 0.3
        if "variance" in w.path:
            value = np.abs(value) + 0.5
        w.assign(value.astype(w.dtype))
    return model


def _full_rank_overrides(model, method):
    overrides = {}
    for layer in model._flatten_layers(include_self=False):
        if type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
            continue
        shape = tuple(layer.kernel.shape)
        if method == "lowrank":
            if len(shape) == 4:
                rank = min(shape[0] * shape[2], shape[1] * shape[3])
            else:
                rank = min(shape)
            overrides[layer.name] = {"rank": rank}
        else:
            outer = tuple(d if i == 0 else 1 for i, d in enumerate(shape))  # kh alone
            outer = outer if math.prod(outer) > 1 else (shape[0],) + (1,) * (len(shape) - 1)
            if math.prod(outer) < 2:  # e.g. a 1x1 kernel: split the input channels
                outer = tuple(shape[2] if i == 2 else 1 for i in range(4)) if len(
                    shape) == 4 else outer
            inner = tuple(d // o for d, o in zip(shape, outer))
            overrides[layer.name] = {"factors": [outer, inner],
                                     "rank": min(math.prod(outer), math.prod(inner))}
    return overrides


def _snapshot(model):
    return [np.array(w) for w in model.weights], model.to_json()


@pytest.mark.parametrize("build", [_sequential, _residual])
@pytest.mark.parametrize("method", ["kronecker", "lowrank"])
def test_full_rank_factorization_computes_what_the_original_computes(build, method):
    model = _randomise(build())
    before = _snapshot(model)
    student = compress.factorize(model, ratio=None,
                                 layer_overrides=_full_rank_overrides(model, method),
                                 method=method)
    x = np.random.default_rng(5).normal(size=(4,) + model.input_shape[1:]).astype("float32")
    np.testing.assert_allclose(student(x), model(x), rtol=1e-4, atol=1e-4)
    new_types = {type(l) for l in student._flatten_layers() if l.weights}
    assert not new_types & {keras.layers.Conv2D, keras.layers.Dense}
    assert (LowRankConv2D if method == "lowrank" else KroneckerConv2D) in new_types
    assert KroneckerDense in new_types
    after = _snapshot(model)  # the original is untouched
    assert before[1] == after[1]
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["kronecker", "lowrank"])
def test_ratio_budget_is_met_and_the_plan_reports_the_new_model(method):
    model = _randomise(_residual())
    plan = compress.plan_factorization(model, ratio=3.0, method=method)
    student = compress.factorize(model, plan=plan)
    assert student.count_params() == plan.params_after <= model.count_params() / 3.0
    assert plan.params_before == model.count_params()
    assert report.parameter_report(student).macs == plan.macs_after
    assert report.parameter_report(model).macs == plan.macs_before
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 4)).astype("float32")
    for choice in plan.layers:  # the reported error is the kernel's, measured here
        layer = student.get_layer(choice.name) if "/" not in choice.name else \
            student.get_layer(choice.name.split("/")[0]).get_layer(choice.name.split("/")[1])
        original = model.get_layer(choice.name.split("/")[0])
        if "/" in choice.name:
            original = original.get_layer(choice.name.split("/")[1])
        w = np.array(original.kernel)
        approx = np.array(layer.kernel)
        assert np.linalg.norm(w - approx) / np.linalg.norm(w) == pytest.approx(
            choice.relative_error, rel=1e-4, abs=1e-6)
        assert layer.count_params() == choice.params_after
    text = str(plan)
    assert "rel.err" in text and all(c.name[:22] in text for c in plan.layers)
    assert student(x).shape == model(x).shape


def test_exclusions_skips_and_the_saved_student_reloads(tmp_path):
    model = _randomise(_sequential())
    dense = next(l.name for l in model.layers if isinstance(l, keras.layers.Dense))
    frozen = model.layers[0].name
    model.layers[0].trainable = False  # a layer the user froze stays frozen
    plan = compress.plan_factorization(model, ratio=1.2, exclude=[dense])
    skipped = {s.name: s.reason for s in plan.skipped}
    assert skipped[dense] == "excluded by the caller"
    assert any("depthwise" in r for r in skipped.values())
    student = compress.factorize(model, plan=plan)
    assert type(student.get_layer(dense)) is keras.layers.Dense
    assert type(student.get_layer(frozen)) is KroneckerConv2D
    assert [l.trainable for l in student.layers] == [l.trainable for l in model.layers]
    assert not student.get_layer(frozen).trainable and student.get_layer(dense).trainable
    np.testing.assert_array_equal(student.get_layer(dense).kernel,
                                  model.get_layer(dense).kernel)
    path = tmp_path / "student.keras"
    student.save(path)
    again = keras.saving.load_model(path)
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(again(x), student(x), rtol=1e-5, atol=1e-6)


def test_factorize_errors_name_the_problem():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    sub = Sub()
    sub(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed model"):
        compress.factorize(sub)
    first = keras.Sequential([keras.Input((3, 8, 8)),
                              keras.layers.Conv2D(4, 3, data_format="channels_first")])
    with pytest.raises(ValueError, match="channels_first"):
        compress.factorize(first)
    nothing = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.DepthwiseConv2D(3)])
    with pytest.raises(ValueError, match="Nothing to factorize.*depthwise"):
        compress.factorize(nothing)
    model = _residual()
    with pytest.raises(ValueError, match=r"out of reach .* at most ([\d.]+)x") as error:
        compress.plan_factorization(model, ratio=1000)
    reachable = float(error.value.args[0].split("at most ")[1].split("x")[0])
    plan = compress.plan_factorization(model, ratio=reachable)  # the ratio it names is reachable
    assert plan.params_after <= model.count_params() / reachable
    assert compress.plan_factorization(model, ratio=np.float32(1.5)).ratio == 1.5
    with pytest.raises(ValueError, match=r"No layers named \['nope'\]"):
        compress.plan_factorization(model, exclude=["nope"])
    with pytest.raises(ValueError, match="method must be one of"):
        compress.plan_factorization(model, method="tucker")
    with pytest.raises(ValueError, match="ratio .* must be a number > 1"):
        compress.plan_factorization(model, ratio=0.5)
    with pytest.raises(ValueError, match="needs 'factors'"):
        compress.plan_factorization(model, ratio=None, layer_overrides={"a": {"rank": 2}})
    with pytest.raises(ValueError, match="'lowrank' fixes them"):
        compress.plan_factorization(model, ratio=None, method="lowrank", layer_overrides={
            "a": {"rank": 2, "factors": [(3, 1, 8, 1), (1, 3, 1, 8)]}})
    with pytest.raises(ValueError, match=r"\['a'\] are both excluded and in layer_overrides"):
        compress.plan_factorization(model, exclude=["a"], layer_overrides={"a": {"rank": 1}})
    sequential = _sequential()
    depthwise = next(l.name for l in sequential.layers
                     if isinstance(l, keras.layers.DepthwiseConv2D))
    with pytest.raises(ValueError, match=f"{depthwise}.*cannot be factorized.*depthwise"):
        compress.plan_factorization(sequential, layer_overrides={depthwise: {"rank": 1}})
    # a plan made for another model whose layers have the same names
    narrow = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(8, 3, name="c")])
    wide = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(6, 3, name="c")])
    with pytest.raises(ValueError, match="plan does not fit model .* layer 'c'"):
        compress.factorize(wide, plan=compress.plan_factorization(narrow, ratio=2.0))


def test_kept_layers_name_their_reason_and_channels_first_layers_can_be_excluded():
    inputs = keras.Input((4, 8, 8, 3))
    x = keras.layers.TimeDistributed(keras.layers.Conv2D(4, 3), name="wrapped")(inputs)
    x = keras.layers.Reshape((4, 6 * 6 * 4))(x)
    x = keras.layers.Dense(16, name="lora")(x)
    x = keras.layers.Dense(16, name="int8")(x)
    outputs = keras.layers.Dense(12, name="plain")(x)
    model = _randomise(keras.Model(inputs, outputs))
    model.get_layer("lora").enable_lora(2)
    model.get_layer("int8").quantize("int8")
    plan = compress.plan_factorization(model, ratio=1.05)
    reasons = {s.name: s.reason for s in plan.skipped}
    assert "wrapper" in reasons["wrapped"]
    assert reasons["lora"] == "LoRA-enabled layer"
    assert "quantized layer (int8)" in reasons["int8"]
    assert [c.name for c in plan.layers] == ["plain"]
    # a channels_first layer the caller excludes is kept; a single name is one name
    first = keras.Sequential([keras.Input((3, 8, 8)),
                              keras.layers.Conv2D(4, 3, data_format="channels_first",
                                                  name="cf"),
                              keras.layers.Flatten(), keras.layers.Dense(16, name="d")])
    plan = compress.plan_factorization(first, ratio=1.05, exclude="cf")
    assert [(s.name, s.reason) for s in plan.skipped] == [("cf", "excluded by the caller")]
    assert [c.name for c in plan.layers] == ["d"]


def test_adapted_normalization_is_copied_with_its_statistics():
    """A copied Normalization layer keeps what adapt() computed (its mean and variance
    are derived state, not weights): at full rank the student equals the original."""
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(16, 8, 8, 3)).astype("float32")
    norm = keras.layers.Normalization()
    norm.adapt(x)
    model = keras.Sequential([keras.Input((8, 8, 3)), norm, keras.layers.Conv2D(6, 3, name="c")])
    student = compress.factorize(model, ratio=None, layer_overrides={
        "c": {"factors": [(1, 1, 1, 6), (3, 3, 3, 1)], "rank": 6}})
    np.testing.assert_allclose(student(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_dense_layer_never_costs_more_macs_than_its_matrix():
    """KroneckerDense runs factored, so the plan keeps only shapes whose factored MACs
    are at most the matrix's, even where the budget would allow a dearer, closer one."""
    model = _randomise(keras.Sequential([
        keras.Input((24,)), keras.layers.Dense(24, name="a"), keras.layers.Dense(8, name="b"),
        keras.layers.Dense(4, name="c")]))
    plan = compress.plan_factorization(model, ratio=1.05)
    assert plan.layers
    for choice in plan.layers:
        assert choice.macs_after <= choice.macs_before, choice
    student = compress.factorize(model, plan=plan)
    assert report.parameter_report(student).macs <= report.parameter_report(model).macs
    for choice in plan.layers:
        assert student.get_layer(choice.name).macs() == choice.macs_after


def test_factorize_with_a_runtime_cost_cap_keeps_every_layer_within_it():
    """``max_relative_cost`` on "litert": every factorized convolution's cost on LiteRT
    (the built student layer's `execution_costs`) within the cap of the plain layer's
    price, a Dense layer's MACs within the cap of its own; the cap changes the plan; the
    original model untouched; bad caps and runtimes refused."""
    from kronecker_zoo import ops as kz_ops

    inputs = keras.Input((14, 14, 16))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = _randomise(keras.Model(inputs, keras.layers.Dense(24, name="d")(x)))
    before = _snapshot(model)
    cap = 0.25
    plan = compress.plan_factorization(model, ratio=6.0, max_relative_cost=cap,
                                       runtime="litert")
    student = compress.factorize(model, ratio=6.0, max_relative_cost=cap, runtime="litert")
    assert student.count_params() == plan.params_after <= model.count_params() / 6.0
    assert [c.factors for c in plan.layers] == [
        tuple(tuple(f) for f in student.get_layer(c.name).factors) for c in plan.layers]
    for choice in plan.layers:
        layer, original = student.get_layer(choice.name), model.get_layer(choice.name)
        if isinstance(layer, KroneckerConv2D):
            kh, kw, cin, cout = original.kernel.shape
            hw = tuple(original.input.shape[1:3])
            dense = kz_ops.dense_conv_cost(hw, (kh, kw), cin, cout, original.strides,
                                           original.padding, "litert")
            assert layer.execution_costs("litert")["factored"] <= cap * dense
        else:
            assert choice.macs_after <= cap * math.prod(original.kernel.shape)
    uncapped = compress.plan_factorization(model, ratio=6.0)
    assert [c.factors for c in uncapped.layers] != [c.factors for c in plan.layers]
    dense_before = {c.name: c for c in uncapped.layers}["d"]  # the cap bites on Dense too
    assert "d" in [c.name for c in plan.layers]
    assert dense_before.macs_after > cap * dense_before.macs_before
    after = _snapshot(model)
    assert after[1] == before[1]
    assert all(np.array_equal(a, b) for a, b in zip(after[0], before[0]))
    with pytest.raises(ValueError, match="not both"):
        compress.plan_factorization(model, 6.0, max_relative_macs=0.5, max_relative_cost=0.5)
    with pytest.raises(ValueError, match="runtime must be one of"):
        compress.plan_factorization(model, 6.0, max_relative_cost=0.5, runtime="tpu")
    with pytest.raises(ValueError, match="max_relative_cost must be a number > 0"):
        compress.plan_factorization(model, 6.0, max_relative_cost=0)
    with pytest.raises(ValueError, match="max_relative_macs must be a number > 0"):
        compress.plan_factorization(model, 6.0, max_relative_macs="low")
    with pytest.raises(ValueError, match="prices shapes for max_relative_cost"):
        compress.plan_factorization(model, 6.0, runtime="litert")
    with pytest.raises(ValueError, match=r"out of reach .*max_relative_cost=0.01 "
                                         r"\(runtime='litert'\)"):
        compress.plan_factorization(model, 6.0, max_relative_cost=0.01, runtime="litert")


@pytest.mark.parametrize("method", ["kronecker", "lowrank"])
def test_runtime_cost_cap_prices_each_shape_as_the_student_layer_runs_it(method):
    """The cap of a stride-2 "valid" 3x3 convolution of 3 -> 20 channels on 15x15 (its
    reduction 27 is no multiple of LiteRT's tile (8, 16)): cap x the dense layer's tiled
    cost counted here by hand, and each shape priced as the layer `factorize` builds runs
    it (the `KroneckerConv2D`'s ``execution_costs``, or `LowRankConv2D`'s two
    convolutions counted by hand), every rank apart (a high rank priced first)."""
    factorize_module = importlib.import_module("kronecker_zoo.compress.factorize")

    inputs = keras.Input((15, 15, 3))
    conv = keras.layers.Conv2D(20, 3, strides=2, padding="valid", name="c")
    _randomise(keras.Model(inputs, conv(inputs)))
    target = factorize_module._Target("c", conv, np.array(conv.kernel), (15, 15), None,
                                      7 * 7 * 27 * 20, 1)
    max_cost, cost = factorize_module._cost_cap(target, method, None, 0.5, "litert")
    assert max_cost == 0.5 * 7 * 7 * 32 * 32  # 27 -> 32 inputs, 20 -> 32 outputs per tile
    if method == "lowrank":  # (3x1, 3 -> r) at stride (2, 1): 7x15 out, 9 -> 16, r -> 16;
        # then (1x3, r -> 20) at (1, 2): 7x7 out, 3r -> multiple of 8, 20 -> 32
        for rank in (5, 2):
            expected = 7 * 15 * 16 * 16 + 7 * 7 * (-(-3 * rank // 8) * 8) * 32
            assert cost(((3, 1, 3, 1), (1, 3, 1, 20)), rank) == expected
        return
    for factors, rank in [(((3, 1, 3, 1), (1, 3, 1, 20)), 3),
                          (((3, 1, 3, 1), (1, 3, 1, 20)), 1),
                          (((1, 1, 3, 4), (3, 3, 1, 5)), 2)]:
        layer = KroneckerConv2D(20, 3, list(factors), rank=rank, strides=2, padding="valid")
        layer.build((None, 15, 15, 3))
        assert cost(factors, rank) == pytest.approx(layer.execution_costs("litert")["factored"])


@pytest.mark.parametrize("method", ["kronecker", "lowrank"])
def test_fully_convolutional_and_multi_input_models_factorize(method):
    """An input size left open, or two inputs: the model's MACs are not countable (None,
    said in the report), its layers are (at the nominal 64x64), and full rank is exact
    at any size."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="a")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="b")(x)
    open_size = _randomise(keras.Model(inputs, x))
    left, right = keras.Input((9, 9, 2)), keras.Input((9, 9, 2))
    joined = keras.layers.Concatenate()([left, right])
    two_inputs = _randomise(keras.Model(
        [left, right], keras.layers.Conv2D(6, 3, name="c")(joined)))
    rng = np.random.default_rng(3)
    for model, batches in [
            (open_size, [rng.normal(size=(2, 20, 14, 3)), rng.normal(size=(1, 7, 9, 3))]),
            (two_inputs, [[rng.normal(size=(2, 9, 9, 2)), rng.normal(size=(2, 9, 9, 2))]])]:
        plan = compress.plan_factorization(model, ratio=None, method=method,
                                           layer_overrides=_full_rank_overrides(model, method))
        assert plan.macs_before is None and plan.macs_after is None
        assert "MACs not countable" in str(plan)
        assert all(c.macs_before > 0 and c.macs_after > 0 for c in plan.layers)
        student = compress.factorize(model, plan=plan)
        for batch in batches:
            batch = [np.asarray(b, "float32") for b in batch] if isinstance(batch, list) \
                else np.asarray(batch, "float32")
            np.testing.assert_allclose(student(batch), model(batch), rtol=1e-4, atol=1e-4)
        assert compress.plan_factorization(model, ratio=1.5, method=method).params_after \
            <= model.count_params() / 1.5
    a = compress.plan_factorization(open_size, ratio=None, method="lowrank",
                                    layer_overrides={"a": {"rank": 2}}).layers[0]
    assert a.macs_before == 64 * 64 * 9 * 3 * 8  # the nominal 64x64, "same", stride 1


def test_dense_over_positions_counts_every_position():
    """A Dense layer on (N, 50, 32) runs 50 times per example: the plan's MACs are the
    report's, before and after."""
    inputs = keras.Input((50, 32))
    model = _randomise(keras.Model(inputs, keras.layers.Dense(64, name="d")(inputs)))
    plan = compress.plan_factorization(model, ratio=3.0)
    student = compress.factorize(model, plan=plan)
    assert plan.macs_before == report.parameter_report(model).macs == 50 * 32 * 64
    assert plan.macs_after == report.parameter_report(student).macs
    assert plan.layers[0].macs_after == plan.macs_after


def test_nested_namesakes_are_named_by_path_and_plans_rebuild_by_path():
    def block(name):
        return keras.Sequential([keras.Input((8, 8, 8)),
                                 keras.layers.Conv2D(8, 3, padding="same", name="conv")],
                                name=name)

    inputs = keras.Input((8, 8, 8))
    model = _randomise(keras.Model(inputs, block("b2")(block("b1")(inputs))))
    with pytest.raises(ValueError, match=r"ambiguous.*'b1/conv', 'b2/conv'.*by path"):
        compress.plan_factorization(model, ratio=1.5, exclude=["conv"])
    plan = compress.plan_factorization(model, ratio=1.5, exclude=["b2/conv"])
    assert [c.name for c in plan.layers] == ["b1/conv"]
    assert [s.name for s in plan.skipped] == ["b2/conv"]
    assert list(plan.layer_overrides()) == ["b1/conv"]
    again = compress.plan_factorization(model, ratio=None,
                                        layer_overrides=plan.layer_overrides())
    assert [c._replace(relative_error=0.0) for c in again.layers] == [
        c._replace(relative_error=0.0) for c in plan.layers]
    assert again.layers[0].relative_error == pytest.approx(plan.layers[0].relative_error)


def test_activity_regularizers_are_kept_and_saved(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activity_regularizer="l2", name="c")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, activity_regularizer=keras.regularizers.L1(0.1),
                                 name="d")(x)
    model = _randomise(keras.Model(inputs, outputs))
    for method in ("kronecker", "lowrank"):
        student = compress.factorize(model, ratio=2.0, method=method)
        student.save(tmp_path / f"{method}.keras")
        again = keras.saving.load_model(tmp_path / f"{method}.keras")
        for name in ("c", "d"):
            assert type(again.get_layer(name)) is not type(model.get_layer(name))
            assert (again.get_layer(name).activity_regularizer.get_config()
                    == model.get_layer(name).activity_regularizer.get_config())
        x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
        student(x, training=True)
        assert len(student.losses) == 2  # one activity penalty per factorized layer


@pytest.mark.training
def test_factorized_student_distils_from_its_teacher_with_keras_distiller():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12, 12, 4)).astype("float32")
    teacher = _randomise(_residual())
    y = np.argmax(teacher.predict(x, verbose=0), axis=-1)
    student = compress.factorize(teacher, ratio=2.0)
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student,
        distillation_losses=compress.logits_distillation(temperature=2.0),
        student_loss_weight=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [np.array(w) for w in teacher.weights]
    history = distiller.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    for a, w in zip(before, teacher.weights):  # the teacher stays frozen
        np.testing.assert_array_equal(a, np.array(w))


class _ChannelScale(keras.layers.Layer):
    """A user layer whose config leaves out its name (as Keras' automatic get_config does
    for some user layers)."""

    def __init__(self, start=2.0, **kwargs):
        super().__init__(**kwargs)
        self.start = start

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale

    def get_config(self):
        config = super().get_config()
        config.pop("name", None)
        return config


@pytest.mark.parametrize("method", ["kronecker", "lowrank"])
def test_a_user_layer_without_its_own_config_is_copied_with_its_weights(method):
    inputs = keras.Input((8, 8, 3))
    x = _ChannelScale(3.0, name="my_scale")(keras.layers.Conv2D(6, 3, name="conv")(inputs))
    model = _randomise(keras.Model(inputs, keras.layers.Dense(4, name="head")(
        keras.layers.Flatten()(x))))
    assert "name" not in model.get_layer("my_scale").get_config()
    student = compress.factorize(model, ratio=None, method=method,
                                 layer_overrides=_full_rank_overrides(model, method))
    np.testing.assert_array_equal(student.get_layer("my_scale").scale,
                                  model.get_layer("my_scale").scale)
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(student(x), model(x), rtol=1e-4, atol=1e-4)


def _nested_backbone_model():
    backbone = keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.Conv2D(16, 3, padding="same", name="backbone_stem_convolution"),
        keras.layers.Conv2D(16, 3, padding="same", name="backbone_block_1_convolution"),
    ], name="pretrained_backbone")
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    return _randomise(keras.Model(inputs, keras.layers.Dense(10, name="head")(x)))


def test_the_report_prints_whole_layer_paths_and_factor_shapes():
    model = _nested_backbone_model()
    text = str(compress.plan_factorization(model, ratio=2.0))
    for path in ("pretrained_backbone/backbone_stem_convolution",
                 "pretrained_backbone/backbone_block_1_convolution"):
        assert path in text
    plan = compress.plan_factorization(model, ratio=None, layer_overrides={
        "head": {"factors": [(2, 1), (2, 5), (4, 2)], "rank": 1}})
    assert "2x1 (x) 2x5 (x) 4x2" in str(plan)


def test_excluding_a_nested_model_keeps_all_its_layers():
    model = _nested_backbone_model()
    plan = compress.plan_factorization(model, ratio=1.02, exclude=["pretrained_backbone"])
    assert [c.name for c in plan.layers] == ["head"]
    assert {s.name for s in plan.skipped} == {
        "pretrained_backbone/backbone_stem_convolution",
        "pretrained_backbone/backbone_block_1_convolution"}
    student = compress.factorize(model, plan=plan)
    for a, b in zip(model.get_layer("pretrained_backbone").weights,
                    student.get_layer("pretrained_backbone").weights):
        np.testing.assert_array_equal(a, b)


def test_a_layer_run_twice_counts_its_macs_twice():
    shared = keras.layers.Conv2D(16, 3, padding="same", name="shared")
    inputs = keras.Input((10, 10, 16))
    model = _randomise(keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(
        shared(shared(inputs)))))
    plan = compress.plan_factorization(model, ratio=3.0, method="lowrank")
    student = compress.factorize(model, plan=plan)
    assert plan.macs_before == report.parameter_report(model).macs == 2 * 10 * 10 * 9 * 16 * 16
    assert plan.macs_after == report.parameter_report(student).macs
    (choice,) = plan.layers
    assert choice.macs_before == plan.macs_before  # both runs

    small = keras.layers.Conv2D(4, 3, padding="same", name="on_two_sizes")
    a, b = keras.Input((8, 8, 4)), keras.Input((6, 6, 4))
    pooled = [keras.layers.GlobalAveragePooling2D()(small(t)) for t in (a, b)]
    two_sizes = keras.Model([a, b], keras.layers.Concatenate()(pooled))
    with pytest.raises(ValueError, match="'on_two_sizes' is called on inputs of different"):
        compress.plan_factorization(two_sizes, ratio=2.0)


def test_the_plan_names_layers_its_mac_totals_leave_out():
    inputs = keras.Input((12, 12, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    y = keras.layers.Conv1D(8, 3, name="c1")(keras.layers.Reshape((144, 8))(x))
    model = keras.Model(inputs, keras.layers.Flatten()(y))
    plan = compress.plan_factorization(model, ratio=1.2)
    assert plan.macs_uncounted == ("c1",)
    assert "not counted: c1" in str(plan)


def test_an_override_above_full_rank_is_refused():
    model = _randomise(_residual())
    with pytest.raises(ValueError, match=r"rank 1000 exceeds the full rank 12"):
        compress.plan_factorization(model, ratio=None, layer_overrides={
            "stem": {"factors": [(3, 1, 4, 1), (1, 3, 1, 8)], "rank": 1000}})


@keras.saving.register_keras_serializable(package="kronecker_zoo_tests")
def _halve(x):
    return x * 0.5


def test_lambda_layers_copy_when_their_function_is_registered_and_else_say_how():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, name="conv", activation=_halve)(inputs)
    named = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(
        keras.layers.Lambda(_halve, name="halve")(x))))
    student = compress.factorize(_randomise(named), ratio=None,
                                 layer_overrides=_full_rank_overrides(named, "kronecker"))
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(student(x), named(x), rtol=1e-4, atol=1e-4)
    inputs = keras.Input((8, 8, 3))
    anonymous = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(
        keras.layers.Conv2D(6, 3)(keras.layers.Lambda(lambda t: t / 255.0, name="scale")(
            inputs)))))
    with pytest.raises(ValueError, match=r"'scale' \(Lambda\) cannot be rebuilt.*"
                                         "register_keras_serializable"):
        compress.factorize(anonymous, ratio=1.5)


def test_a_factorized_layer_with_a_lambda_activation_says_how_to_fix_it():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(
        keras.layers.Conv2D(6, 3, name="conv", activation=lambda t: t * 2.0)(inputs))))
    with pytest.raises(ValueError, match=r"'conv' \(Conv2D\) cannot be rebuilt.*"
                                         "register_keras_serializable"):
        compress.factorize(model, ratio=None, layer_overrides=_full_rank_overrides(
            model, "kronecker"))


def test_a_plan_is_refused_for_a_layer_the_model_cannot_factorize():
    """A plan for a plain convolution does not fit a dilated one of the same kernel shape
    (the student would drop the dilation and change the output size)."""
    plain = keras.Sequential([keras.Input((12, 12, 4)), keras.layers.Conv2D(6, 3, name="c")])
    dilated = keras.Sequential([keras.Input((12, 12, 4)),
                                keras.layers.Conv2D(6, 3, dilation_rate=2, name="c")])
    plan = compress.plan_factorization(plain, ratio=2.0)
    with pytest.raises(ValueError, match=r"plan does not fit .* layer 'c'.*dilated"):
        compress.factorize(dilated, plan=plan)


def test_frozen_models_nested_or_whole_stay_frozen(tmp_path):
    """``trainable`` of a nested model and of the model itself carries over (Keras' own
    clone_model keeps them too), also through a save and reload."""
    inner_input = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", name="c1")(inner_input)
    h = keras.layers.Conv2D(6, 3, name="c2")(keras.layers.BatchNormalization(name="bn")(h))
    backbone = keras.Model(inner_input, h, name="backbone")
    backbone.trainable = False
    inputs = keras.Input((8, 8, 3))
    head = keras.layers.Dense(5, name="head")(
        keras.layers.GlobalAveragePooling2D()(backbone(inputs)))
    model = _randomise(keras.Model(inputs, head))
    student = compress.factorize(model, ratio=None,
                                 layer_overrides=_full_rank_overrides(model, "kronecker"))
    frozen = student.get_layer("backbone")
    assert not frozen.trainable and type(frozen.get_layer("c1")) is KroneckerConv2D
    assert student.trainable and student.get_layer("head").trainable
    assert {id(w) for w in student.trainable_weights} == {
        id(w) for w in student.get_layer("head").trainable_weights}
    path = tmp_path / "student.keras"
    student.save(path)
    assert not keras.saving.load_model(path).get_layer("backbone").trainable
    model.trainable = False
    whole = compress.factorize(model, ratio=None,
                               layer_overrides=_full_rank_overrides(model, "kronecker"))
    assert not whole.trainable and not whole.trainable_weights
    assert model.get_layer("head").trainable is False  # the original's own flags unchanged


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_layers_factorize_from_their_own_kernels(dtype):
    """A bfloat16 kernel (an ml_dtypes type NumPy does not call floating) is decomposed
    like a float16 one; at full rank the student's kernel is the original's to the
    dtype's precision."""
    inputs = keras.Input((8, 8, 4))
    outputs = keras.layers.Conv2D(6, 3, name="c", dtype=dtype)(inputs)
    model = _randomise(keras.Model(inputs, outputs))
    student = compress.factorize(model, ratio=None,
                                 layer_overrides=_full_rank_overrides(model, "kronecker"))
    layer = student.get_layer("c")
    assert type(layer) is KroneckerConv2D and layer.dtype_policy.name == dtype
    original = keras.ops.convert_to_numpy(keras.ops.cast(model.get_layer("c").kernel,
                                                         "float32"))
    rebuilt = keras.ops.convert_to_numpy(keras.ops.cast(layer.kernel, "float32"))
    np.testing.assert_allclose(rebuilt, original, rtol=0.05, atol=0.02)
    assert student(np.ones((1, 8, 8, 4), "float32")).shape == (1, 6, 6, 6)


def test_layers_with_other_weight_matrices_are_listed_as_kept():
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(20, 6, name="emb")(inputs)
    x = keras.layers.LSTM(4, return_sequences=True, name="lstm")(x)
    x = keras.layers.MultiHeadAttention(2, 3, name="mha")(x, x)
    outputs = keras.layers.Dense(6, name="head")(keras.layers.Dense(8, name="d")(x))
    plan = compress.plan_factorization(keras.Model(inputs, outputs), ratio=1.05)
    reasons = {s.name: s.reason for s in plan.skipped}
    for name, kind in (("emb", "Embedding"), ("lstm", "LSTM"), ("mha", "MultiHeadAttention")):
        assert reasons[name] == f"{kind}: only Conv2D and Dense layers are factorized"


@pytest.mark.parametrize("method", ["kronecker", "lowrank"])
def test_a_plans_layer_overrides_rebuild_it_with_dense_layers_too(method):
    # Before: a "lowrank" plan's Dense layers gave 'factors', which method="lowrank" refuses.
    model = _randomise(_residual())
    plan = compress.plan_factorization(model, ratio=3.0, method=method)
    assert any(c.layer_type == "KroneckerDense" for c in plan.layers)
    again = compress.plan_factorization(model, ratio=None, method=method,
                                        layer_overrides=plan.layer_overrides())
    assert [c._replace(relative_error=0.0) for c in again.layers] == [
        c._replace(relative_error=0.0) for c in plan.layers]
    for a, b in zip(again.layers, plan.layers):
        assert a.relative_error == pytest.approx(b.relative_error, abs=1e-12)


def _conv_macs(hw, k, cin, cout, strides):
    """MACs of a plain "same" convolution, by hand."""
    out = [math.ceil(n / s) for n, s in zip(hw, strides)]
    return out[0] * out[1] * k[0] * k[1] * cin * cout


def test_a_mac_cap_lowers_a_layers_rank_rather_than_keep_it_dense():
    # Before: a shape over the cap at the rank the budget allowed was dropped, never tried
    # at a lower rank, so a Dense head stayed whole ("no shape within max_relative_macs")
    # although (192 x 1) (x) (1 x 6) at rank 1 costs 198 of its 1,152 MACs (and the other
    # layers went down to rank 1 to make up for it).
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same", name="c2")(x)
    x = keras.layers.Flatten()(x)
    model = _randomise(keras.Model(inputs, keras.layers.Dense(6, name="out")(x)))
    cap = 0.3
    plan = compress.plan_factorization(model, ratio=1.5, max_relative_macs=cap)
    assert [c.name for c in plan.layers] == ["c1", "c2", "out"], plan
    assert not plan.skipped
    for c in plan.layers:
        assert c.macs_after <= cap * c.macs_before, c
    student = compress.factorize(model, plan=plan)
    assert student.count_params() == plan.params_after <= model.count_params() / 1.5


def test_a_low_rank_mac_cap_prices_the_convolutions_low_rank_runs():
    # Before: method="lowrank" checked the cap against the Kronecker cascade's MACs of a
    # strided layer (1.66x LowRankConv2D's), so it chose ranks far under the cap.
    inputs = keras.Input((16, 16, 16))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="s2")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", name="s1")(x)
    model = _randomise(keras.Model(inputs, x))
    cap = 0.6
    plan = compress.plan_factorization(model, ratio=2.0, method="lowrank",
                                       max_relative_macs=cap)
    shapes = {"s2": ((16, 16), (2, 2)), "s1": ((8, 8), (1, 1))}
    assert [c.name for c in plan.layers] == ["s2", "s1"]
    for c in plan.layers:
        hw, strides = shapes[c.name]
        mid = (math.ceil(hw[0] / strides[0]), hw[1])

        def lowrank_macs(rank):  # (3 x 1, 16 -> r) at (sh, 1), then (1 x 3, r -> 16)
            return (_conv_macs(hw, (3, 1), 16, rank, (strides[0], 1))
                    + _conv_macs(mid, (1, 3), rank, 16, (1, strides[1])))

        original = _conv_macs(hw, (3, 3), 16, 16, strides)
        assert c.macs_before == original and c.macs_after == lowrank_macs(c.rank)
        assert lowrank_macs(c.rank) <= cap * original < lowrank_macs(c.rank + 1), c
    student = compress.factorize(model, plan=plan)
    assert student.count_params() == plan.params_after <= model.count_params() / 2.0


def test_a_layer_shared_across_nesting_levels_is_planned_and_factorized_once():
    # Before: planned under both paths (its kernel subtracted twice: 148 -> 68 reported
    # for a 108-parameter student), then factorize called its own plan ambiguous.
    shared = keras.layers.Conv2D(4, 3, padding="same", name="sh")
    inner_inputs = keras.Input((6, 6, 4))
    sub = keras.Model(inner_inputs, keras.layers.ReLU()(shared(inner_inputs)), name="sub")
    inputs = keras.Input((6, 6, 4))
    model = _randomise(keras.Model(inputs, keras.layers.Flatten()(sub(shared(inputs)))))
    before = _snapshot(model)
    plan = compress.plan_factorization(model, ratio=1.5)
    assert [c.name for c in plan.layers] == ["sh"]
    student = compress.factorize(model, plan=plan)
    assert student.count_params() == plan.params_after <= model.count_params() / 1.5
    assert student.get_layer("sh") is student.get_layer("sub").get_layer("sh")
    assert plan.layers[0].macs_before == 2 * 6 * 6 * 3 * 3 * 4 * 4  # runs twice
    # At full rank, by either path, the student computes what the original does.
    for path in ("sh", "sub/sh"):
        full = compress.factorize(model, ratio=None, layer_overrides={
            path: {"factors": [(3, 1, 1, 1), (1, 3, 4, 4)], "rank": 3}})
        x = np.random.default_rng(1).normal(size=(2, 6, 6, 4)).astype("float32")
        np.testing.assert_allclose(full(x), model(x), rtol=1e-4, atol=1e-4)
        assert isinstance(full.get_layer("sub").get_layer("sh"), KroneckerConv2D)
    after = _snapshot(model)
    assert before[1] == after[1]
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
