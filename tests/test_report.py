"""Tests of kronecker_zoo.report against independent counts.

- MACs: every registered model against `tests.graph_macs`, which counts the
  convolutions and matrix products TensorFlow actually executes (no knowledge of
  layers), and tiny models against hand arithmetic written out below.
- Parameters: against ``model.count_params()`` and hand arithmetic.
- Receptive fields: against the bounding box of the nonzero input gradient of one
  output pixel (linear layers with positive weights on positive inputs, so no
  cancellation can hide a connection), and `kronecker_zoo.kernels.receptive_field`.
- Rendering (text, Markdown, JSON), `compare`, and the ``input_shape`` argument.
"""

import functools
import json
import re

import keras
import numpy as np
import pytest

from kronecker_zoo import kernels, models, report
from kronecker_zoo.layers import (
    ContextModule,
    DilatedStack,
    KroneckerConv2D,
    KroneckerDense,
    LowRankConv2D,
)
from tests.graph_macs import graph_macs, macs_per_example

IS_TF = keras.backend.backend() == "tensorflow"
POSITIVE = keras.initializers.RandomUniform(0.1, 1.0, seed=0)


def require_tensorflow():
    if not IS_TF:
        pytest.skip("graph_macs traces TensorFlow graphs")


def single(layer, input_shape):
    """Functional model ``Input(input_shape) -> layer``."""
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, layer(inputs))


@functools.lru_cache(maxsize=None)
def registered(name):
    """One built instance per registered model, shared by the tests (read-only use)."""
    return models.get(name)


@functools.lru_cache(maxsize=None)
def registered_report(name):
    return report.parameter_report(registered(name))


# ---------------------------------------------------------------------------
# the independent counter itself
# ---------------------------------------------------------------------------

def test_graph_macs_counts_a_known_conv_and_cancels_weight_only_work():
    require_tensorflow()
    model = single(keras.layers.Conv2D(4, 3, padding="same"), (8, 8, 3))
    per_batch = 8 * 8 * 3 * 3 * 3 * 4
    assert graph_macs(model, 1) == per_batch
    assert graph_macs(model, 3) == 3 * per_batch
    # A materialised Kronecker kernel is formed by an Einsum on the weights (its
    # multiplies do not depend on the batch): present in graph_macs(batch), gone from
    # the per-example difference.
    kron = single(KroneckerConv2D(8, 9, [(3, 3, 2, 4), (3, 3, 4, 2)],
                                  execution="materialized"), (8, 8, 8))
    counts = {}
    conv = 8 * 8 * 9 * 9 * 8 * 8
    assert graph_macs(kron, 1, counts=counts) > conv and counts["Einsum"] > 0
    assert macs_per_example(kron) == conv


def test_graph_macs_recurses_into_nested_functions_and_needs_static_shapes():
    require_tensorflow()
    import tensorflow as tf

    from tests.graph_macs import macs_of_graph

    @tf.function
    def inner(x, w):
        return tf.matmul(x, w)

    @tf.function
    def outer(x, w):
        return inner(x, w) + 1.0

    graph = outer.get_concrete_function(tf.TensorSpec((5, 3)), tf.TensorSpec((3, 4))).graph
    assert any(op.type in ("PartitionedCall", "StatefulPartitionedCall")
               for op in graph.get_operations())
    assert macs_of_graph(graph) == 5 * 3 * 4
    dynamic = outer.get_concrete_function(tf.TensorSpec((None, 3)),
                                          tf.TensorSpec((3, 4))).graph
    with pytest.raises(ValueError, match="non-static shape"):
        macs_of_graph(dynamic)


# ---------------------------------------------------------------------------
# every registered model
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", models.list_models(), ids=str)
def test_registered_model_params_equal_count_params(name):
    model = registered(name)
    r = registered_report(name)
    assert r.params == model.count_params()
    assert r.uncounted == []
    assert r.input_shape == tuple(model.inputs[0].shape[1:])


@pytest.mark.parametrize("name", models.list_models(), ids=str)
def test_registered_model_macs_equal_graph_count(name):
    """Exact: both sides count integer MACs of the same convolutions and matmuls.

    The graph counts what TensorFlow runs (for a factored KroneckerConv2D the
    cascade of small convolutions on the padded input), the report counts from
    layer configurations. Keras runs a dilated Conv2D as SpaceToBatchND + Conv2D,
    which pads each spatial axis to a multiple of the rate and so computes extra
    outputs when the size is not one (dilated_fcn_small at 30x30: 22,166,784 graph
    MACs vs 21,024,000 useful ones). At the registry's default sizes every dilated
    conv's input size is a multiple of its rate, so the counts are exactly equal.
    """
    require_tensorflow()
    model = registered(name)
    assert registered_report(name).macs == macs_per_example(model)


# ---------------------------------------------------------------------------
# hand counts on tiny models
# ---------------------------------------------------------------------------

# Kronecker factors (3,3,2,4) (outer) and (3,3,4,2) (inner): in = 2*4 = 8, out = 4*2 = 8,
# a 9x9 kernel. Factored, "same", 8x8 input: the input is padded once by 9-1 to 16x16;
# the innermost factor runs first (3x3 "valid": 16 -> 14), once per channel group of the
# outer factor's input (2 groups); then the outer factor at dilation 3 (extent 7:
# 14 -> 8), once per group of the inner factor's output (2 groups).
KRON_FACTORS = [(3, 3, 2, 4), (3, 3, 4, 2)]
KRON_8x8 = 2 * 14 * 14 * (3 * 3 * 4 * 2) + 2 * 8 * 8 * (3 * 3 * 2 * 4)
# Stride 2: output ceil(8/2) = 4, "same" pads (4-1)*2 + 9 - 8 = 7 to 15x15; inner 3x3
# 15 -> 13; the outer factor's dilation 3 is not a multiple of 2, so it runs at full
# resolution (13 -> 7) and its output is subsampled to 4x4 afterwards.
KRON_8x8_S2 = 2 * 13 * 13 * (3 * 3 * 4 * 2) + 2 * 7 * 7 * (3 * 3 * 2 * 4)
KRON_PARAMS = 3 * 3 * 2 * 4 + 3 * 3 * 4 * 2 + 8

# name: (model factory, params, MACs per example)
HAND_COUNTS = {
    "conv_same": (lambda: single(keras.layers.Conv2D(4, 3, padding="same"), (8, 8, 3)),
                  3 * 3 * 3 * 4 + 4, 8 * 8 * 3 * 3 * 3 * 4),
    "conv_valid": (lambda: single(keras.layers.Conv2D(4, 3, padding="valid"), (8, 8, 3)),
                   3 * 3 * 3 * 4 + 4, 6 * 6 * 3 * 3 * 3 * 4),
    "conv_stride2_same": (
        lambda: single(keras.layers.Conv2D(4, 3, strides=2, padding="same"), (8, 8, 3)),
        3 * 3 * 3 * 4 + 4, 4 * 4 * 3 * 3 * 3 * 4),
    "conv_stride2_valid": (  # (9 - 3) // 2 + 1 = 4
        lambda: single(keras.layers.Conv2D(4, 3, strides=2, padding="valid"), (9, 9, 3)),
        3 * 3 * 3 * 4 + 4, 4 * 4 * 3 * 3 * 3 * 4),
    "conv_dilated_same": (
        lambda: single(keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same"), (8, 8, 3)),
        3 * 3 * 3 * 4 + 4, 8 * 8 * 3 * 3 * 3 * 4),
    "conv_dilated_valid": (  # extent 5: 8 -> 4
        lambda: single(keras.layers.Conv2D(4, 3, dilation_rate=2, padding="valid"), (8, 8, 3)),
        3 * 3 * 3 * 4 + 4, 4 * 4 * 3 * 3 * 3 * 4),
    "conv_1x5_valid_no_bias": (
        lambda: single(keras.layers.Conv2D(4, (1, 5), padding="valid", use_bias=False),
                       (8, 8, 3)),
        1 * 5 * 3 * 4, 8 * 4 * 1 * 5 * 3 * 4),
    "conv_groups": (  # 2 groups: each output channel sees 4 / 2 input channels
        lambda: single(keras.layers.Conv2D(6, 3, groups=2, padding="same"), (8, 8, 4)),
        3 * 3 * 2 * 6 + 6, 8 * 8 * 3 * 3 * 2 * 6),
    "depthwise": (
        lambda: single(keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
                       (8, 8, 3)),
        3 * 3 * 3 * 2 + 6, 8 * 8 * 3 * 3 * 6),
    "depthwise_stride2": (
        lambda: single(keras.layers.DepthwiseConv2D(3, strides=2, padding="same"), (8, 8, 3)),
        3 * 3 * 3 + 3, 4 * 4 * 3 * 3 * 3),
    "separable": (  # depthwise 3 -> 6, then pointwise 6 -> 5
        lambda: single(keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, padding="same"),
                       (8, 8, 3)),
        3 * 3 * 3 * 2 + 6 * 5 + 5, 8 * 8 * 3 * 3 * 6 + 8 * 8 * 6 * 5),
    "separable_stride2_valid": (
        lambda: single(keras.layers.SeparableConv2D(5, 3, strides=2, padding="valid"),
                       (9, 9, 3)),
        3 * 3 * 3 + 3 * 5 + 5, 4 * 4 * 3 * 3 * 3 + 4 * 4 * 3 * 5),
    "dense_2d": (lambda: single(keras.layers.Dense(7), (10,)), 10 * 7 + 7, 10 * 7),
    "dense_4d": (lambda: single(keras.layers.Dense(6), (4, 5, 3)), 3 * 6 + 6, 4 * 5 * 3 * 6),
    "kron_factored": (
        lambda: single(KroneckerConv2D(8, 9, KRON_FACTORS, execution="factored",
                                      lowering="batch"), (8, 8, 8)),
        KRON_PARAMS, KRON_8x8),
    "kron_factored_rank2": (
        lambda: single(KroneckerConv2D(8, 9, KRON_FACTORS, rank=2, execution="factored",
                                      lowering="batch"),
                       (8, 8, 8)),
        2 * (KRON_PARAMS - 8) + 8, 2 * KRON_8x8),
    "kron_factored_stride2": (
        lambda: single(KroneckerConv2D(8, 9, KRON_FACTORS, strides=2, execution="factored",
                                      lowering="batch"),
                       (8, 8, 8)),
        KRON_PARAMS, KRON_8x8_S2),
    # lowering="channels": inner 3x3 as one grouped conv (2 groups of 4 -> 2) on the
    # 16x16 padded input -> 14x14, then the outer 3x3 (2 -> 4) (x) I_2 at dilation 3 as one
    # dense 4 -> 8 conv, 14 -> 8 (twice the outer step's MACs in the batch lowering)
    "kron_factored_channels": (
        lambda: single(KroneckerConv2D(8, 9, KRON_FACTORS, execution="factored",
                                       lowering="channels"), (8, 8, 8)),
        KRON_PARAMS, 14 * 14 * 3 * 3 * 2 * (4 * 2) + 8 * 8 * 3 * 3 * (2 * 2) * (4 * 2)),
    "kron_materialized": (  # one plain 9x9 conv with the formed kernel
        lambda: single(KroneckerConv2D(8, 9, KRON_FACTORS, execution="materialized"),
                       (8, 8, 8)),
        KRON_PARAMS, 8 * 8 * 9 * 9 * 8 * 8),
    "kron_dense": (  # (3 -> 2) (x) (4 -> 3), cheapest order outer step first: 4 * (3*2),
        # then the inner 2 * (4*3) (inner first would cost 3 * (4*3) + 3 * (3*2) = 54)
        lambda: single(KroneckerDense(6, [(3, 2), (4, 3)]), (12,)),
        3 * 2 + 4 * 3 + 6, 4 * 3 * 2 + 2 * 4 * 3),
    "lowrank": (  # 3x1 conv 4 -> 2 (rank), then 1x3 conv 2 -> 6
        lambda: single(LowRankConv2D(6, 3, rank=2), (8, 8, 4)),
        3 * 4 * 2 + 3 * 2 * 6 + 6, 8 * 8 * 3 * 4 * 2 + 8 * 8 * 3 * 2 * 6),
    "lowrank_stride2": (  # vertical at strides (2, 1): 4x8; horizontal at (1, 2): 4x4
        lambda: single(LowRankConv2D(6, 3, rank=2, strides=2), (8, 8, 4)),
        3 * 4 * 2 + 3 * 2 * 6 + 6, 4 * 8 * 3 * 4 * 2 + 4 * 4 * 3 * 2 * 6),
    "context_module": (  # 3x3 d1 2->2, 3x3 d2 2->2, 1x1 2->2, all "same"
        lambda: single(ContextModule(2, dilations=(1, 2)), (16, 16, 2)),
        2 * (3 * 3 * 2 * 2 + 2) + 2 * 2 + 2, 16 * 16 * (3 * 3 * 2 * 2 * 2 + 2 * 2)),
    "dilated_stack_same": (  # 3x3 d1 2->4, 3x3 d2 4->4, each "same"
        lambda: single(DilatedStack(4, 3, dilation_rates=(1, 2)), (16, 16, 2)),
        3 * 3 * 2 * 4 + 4 + 3 * 3 * 4 * 4 + 4, 16 * 16 * 3 * 3 * 2 * 4 + 16 * 16 * 3 * 3 * 4 * 4),
    "dilated_stack_valid": (  # "valid": 16 -> 14 (extent 3) -> 10 (extent 5)
        lambda: single(DilatedStack(4, 3, dilation_rates=(1, 2), padding="valid"), (16, 16, 2)),
        3 * 3 * 2 * 4 + 4 + 3 * 3 * 4 * 4 + 4, 14 * 14 * 3 * 3 * 2 * 4 + 10 * 10 * 3 * 3 * 4 * 4),
    "dilated_stack_pad_once": (  # padded once by rf-1 = 6 to 22, then "valid": 20, 16
        lambda: single(DilatedStack(4, 3, dilation_rates=(1, 2), pad_once=True), (16, 16, 2)),
        3 * 3 * 2 * 4 + 4 + 3 * 3 * 4 * 4 + 4, 20 * 20 * 3 * 3 * 2 * 4 + 16 * 16 * 3 * 3 * 4 * 4),
    "conv_transpose_stride2": (  # every input pixel scatters a 3x3x4 patch
        lambda: single(keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
                       (8, 8, 3)),
        3 * 3 * 4 * 3 + 4, 8 * 8 * 3 * 3 * 3 * 4),
    "sequential_conv_pool_dense": (
        lambda: keras.Sequential([keras.Input((8, 8, 3)),
                                  keras.layers.Conv2D(4, 3, padding="valid"),
                                  keras.layers.MaxPooling2D(2),
                                  keras.layers.Flatten(),
                                  keras.layers.Dense(5)]),
        3 * 3 * 3 * 4 + 4 + 3 * 3 * 4 * 5 + 5, 6 * 6 * 3 * 3 * 3 * 4 + 3 * 3 * 4 * 5),
}


@pytest.mark.parametrize("case", list(HAND_COUNTS), ids=str)
def test_hand_counted_params_and_macs(case):
    factory, params, macs = HAND_COUNTS[case]
    model = factory()
    r = report.parameter_report(model)
    assert model.count_params() == params
    assert r.params == params
    if IS_TF:  # the independent graph count agrees with the hand count
        assert macs_per_example(model) == macs
    assert r.macs == macs, f"report says {r.macs:,}, hand count {macs:,}"


def test_shared_layer_params_counted_once_macs_twice():
    conv = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, conv(conv(inputs)))
    r = report.parameter_report(model)
    params = 3 * 3 * 3 * 3 + 3
    per_call = 8 * 8 * 3 * 3 * 3 * 3
    assert model.count_params() == params
    assert [(row.name, row.params, row.macs) for row in r.rows] == [
        ("shared", params, per_call), ("shared", 0, per_call)]
    assert r.params == params and r.macs == 2 * per_call
    assert r.dense_equivalent == params  # the second call adds no dense-equivalent either
    if IS_TF:
        assert macs_per_example(model) == 2 * per_call


def test_a_layer_shared_across_nested_models_is_counted_once():
    """One Conv2D inside two nested models (and called directly too): its weights count
    once, every call's MACs count (totals against `count_params` and hand counts)."""
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared")

    def branch(name, extra):
        inputs = keras.Input((8, 8, 4))
        return keras.Model(inputs, extra(shared(inputs)), name=name)

    first = branch("branch_a", keras.layers.ReLU())
    second = branch("branch_b", keras.layers.Conv2D(2, 1, name="squeeze"))
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, second(first(shared(inputs))))
    r = report.parameter_report(model)
    conv_params, squeeze_params = 3 * 3 * 4 * 4 + 4, 4 * 2 + 2
    assert model.count_params() == conv_params + squeeze_params
    assert r.params == model.count_params()
    assert r.dense_equivalent == model.count_params()
    assert [(row.name, row.params) for row in r.rows] == [
        ("shared", conv_params), ("branch_a", 0), ("branch_b", squeeze_params)]
    per_call = 8 * 8 * 9 * 4 * 4
    assert r.macs == 3 * per_call + 8 * 8 * 4 * 2
    alone = report.parameter_report(keras.Model(inputs, second(first(inputs))))
    assert alone.params == conv_params + squeeze_params  # nested first: counted there


@pytest.mark.parametrize("input_shape", [(9.7, 9, 3), (True, 9, 3), (9, 9, 3.0), (0, 9, 3)])
def test_input_shape_must_be_positive_ints(input_shape):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs))
    with pytest.raises(ValueError, match="input_shape must be .* positive ints"):
        report.parameter_report(model, input_shape=input_shape)
    assert report.parameter_report(model, np.array([9, 9, 3])).input_shape == (9, 9, 3)


def test_layers_with_unknown_macs_are_listed_as_uncounted():
    inputs = keras.Input((16, 3))
    model = keras.Model(inputs, keras.layers.Conv1D(4, 3, name="conv1d")(inputs))
    r = report.parameter_report(model)
    assert r.uncounted == ["conv1d"]
    assert r.params == model.count_params() == 3 * 3 * 4 + 4
    assert "MACs not counted for: conv1d" in r.to_text()


def test_markdown_and_compare_say_which_macs_are_not_counted():
    inputs = keras.Input((16, 3))
    model = keras.Model(inputs, keras.layers.Conv1D(4, 3, name="conv1d")(inputs))
    assert "MACs not counted for: conv1d" in report.parameter_report(model).to_markdown()
    for fmt in ("text", "markdown"):
        table = report.compare([model], format=fmt)
        assert f"MACs not counted for: {model.name}: conv1d" in table


def test_operations_that_are_not_layers_are_counted_as_elementwise():
    """``x * 0.5`` (a Keras operation, not a layer) before a conv: no weights, no MACs,
    no extent; an operation that changes the spatial size is listed as uncounted."""
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs * 0.5))
    r = report.parameter_report(model)
    assert r.uncounted == [] and r.params == model.count_params()
    assert r.macs == 14 * 14 * 9 * 3 * 4 and r.receptive_field == (3, 3)
    if IS_TF:
        assert r.macs == macs_per_example(model)
    pooled = keras.Model(inputs, keras.layers.Conv2D(2, 1)(keras.ops.max_pool(inputs, 2, 2)))
    assert len(report.parameter_report(pooled).uncounted) == 1


def test_nested_models_are_reported_through():
    """A backbone called as a layer (the fine-tuning pattern): its MACs, dense-equivalent
    and receptive field compose with the outer layers', against an independent graph
    count and `kernels.receptive_field`."""
    backbone = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3, padding="same"),
        KroneckerConv2D(8, 9, factors=[(3, 3, 2, 2), (3, 3, 4, 4)], rank=2, strides=2,
                        execution="factored"),
    ], name="backbone")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="head_conv")(backbone(inputs))
    model = keras.Model(inputs, x)
    r = report.parameter_report(model)
    assert r.uncounted == []
    assert r.params == model.count_params()
    kron = backbone.layers[1]
    assert r.macs == 16 * 16 * 9 * 3 * 8 + kron.macs((16, 16)) + 8 * 8 * 9 * 8 * 4
    if IS_TF:  # the independent count of the traced graph
        assert r.macs == macs_per_example(model)
    assert r.dense_equivalent == (report.parameter_report(backbone).dense_equivalent
                                  + 3 * 3 * 8 * 4 + 4)
    assert r.receptive_field == (kernels.receptive_field([3, 9, 3], strides=[1, 2, 1]),) * 2
    pooled = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3),
                               keras.layers.GlobalAveragePooling2D()], name="pooled")
    outer = keras.Model(inputs, keras.layers.Dense(3, name="logits")(pooled(inputs)))
    rows = {row.name: row for row in report.parameter_report(outer).rows}
    assert rows["pooled"].receptive_field == rows["logits"].receptive_field == report.GLOBAL
    assert report.parameter_report(outer).macs == 14 * 14 * 9 * 3 * 4 + 4 * 3


# ---------------------------------------------------------------------------
# dense-equivalent and compression
# ---------------------------------------------------------------------------

def test_kronecker_dense_equivalent_and_compression():
    factors = [(3, 3, 8, 8), (3, 3, 8, 8)]
    for use_bias, bias in ((True, 64), (False, 0)):
        model = single(KroneckerConv2D(64, 9, factors, use_bias=use_bias), (16, 16, 64))
        r = report.parameter_report(model)
        (row,) = r.rows
        params = 2 * 3 * 3 * 8 * 8 + bias
        dense = 9 * 9 * 64 * 64 + bias
        assert (row.params, row.dense_equivalent) == (params, dense)
        assert row.compression == pytest.approx(dense / params)
        assert (r.params, r.dense_equivalent) == (params, dense)
        assert r.compression == pytest.approx(dense / params)


@pytest.mark.parametrize("layer, input_shape, params, dense", [
    (keras.layers.SeparableConv2D(16, 3), (8, 8, 8),
     3 * 3 * 8 + 8 * 16 + 16, 3 * 3 * 8 * 16 + 16),
    (keras.layers.SeparableConv2D(16, 3, use_bias=False), (8, 8, 8),
     3 * 3 * 8 + 8 * 16, 3 * 3 * 8 * 16),
    (keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 4),
     3 * 3 * 4 * 2 + 8, 3 * 3 * 4 * 8 + 8),
    (LowRankConv2D(16, 5, rank=2), (8, 8, 8),
     2 * (5 * 8 + 5 * 16) + 16, 5 * 5 * 8 * 16 + 16),
    (KroneckerDense(16, [(4, 4), (8, 4)]), (32,),
     4 * 4 + 8 * 4 + 16, 32 * 16 + 16),
    # plain layers: dense-equivalent == params
    (keras.layers.Conv2D(16, 3), (8, 8, 8), 3 * 3 * 8 * 16 + 16, 3 * 3 * 8 * 16 + 16),
    (keras.layers.Conv2D(16, 3, groups=4), (8, 8, 8),
     3 * 3 * 2 * 16 + 16, 3 * 3 * 8 * 16 + 16),  # a plain Conv2D of that extent: all channels
    (keras.layers.Dense(5), (7,), 7 * 5 + 5, 7 * 5 + 5),
    (keras.layers.BatchNormalization(), (8, 8, 8), 4 * 8, 4 * 8),
], ids=["separable", "separable_no_bias", "depthwise", "lowrank", "kron_dense", "conv",
        "conv_groups", "dense", "batchnorm"])
def test_dense_equivalent_per_layer(layer, input_shape, params, dense):
    r = report.parameter_report(single(layer, input_shape))
    (row,) = r.rows
    assert (row.params, row.dense_equivalent) == (params, dense)
    assert row.compression == pytest.approx(dense / params)


def test_totals_sum_rows_and_compression_is_dense_over_params():
    inputs = keras.Input((16, 16, 4))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inputs)
    x = KroneckerConv2D(16, 9, [(3, 3, 4, 4), (3, 3, 4, 4)], name="kron")(x)
    x = keras.layers.SeparableConv2D(8, 3, name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    r = report.parameter_report(model)
    rows = {row.name: row for row in r.rows}
    dense = {"conv": 3 * 3 * 4 * 16 + 16, "kron": 9 * 9 * 16 * 16 + 16,
             "sep": 3 * 3 * 16 * 8 + 8, "gap": 0, "head": 8 * 3 + 3}
    params = {"conv": 3 * 3 * 4 * 16 + 16, "kron": 2 * 3 * 3 * 4 * 4 + 16,
              "sep": 3 * 3 * 16 + 16 * 8 + 8, "gap": 0, "head": 8 * 3 + 3}
    assert {n: row.dense_equivalent for n, row in rows.items()} == dense
    assert {n: row.params for n, row in rows.items()} == params
    assert r.params == sum(params.values()) == model.count_params()
    assert r.dense_equivalent == sum(dense.values())
    assert r.compression == pytest.approx(sum(dense.values()) / sum(params.values()))
    assert rows["gap"].compression == 1.0  # no weights: reported as 1x


# ---------------------------------------------------------------------------
# receptive fields, checked by gradients
# ---------------------------------------------------------------------------

def input_gradient(model, x, oy, ox):
    """``|d sum_{b, c} y[b, oy, ox, c] / dx|`` summed over batch and channels: (H, W)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(model(xt, training=False)[:, oy, ox, :])
        grad = tape.gradient(loss, xt).numpy()
    elif backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def loss(xv):
            y, _ = model.stateless_call(trainable, frozen, xv, training=False)
            return y[:, oy, ox, :].sum()

        grad = np.asarray(jax.grad(loss)(x))
    else:
        pytest.skip(f"no gradient helper for backend {keras.backend.backend()!r}")
    return np.abs(grad).sum(axis=(0, 3))


def gradient_receptive_field(model, samples=1, positions=4, seed=0):
    """Largest ``(h, w)`` bounding box of nonzero input gradient over ``positions``
    consecutive output pixels (diagonally from the centre, to cover every phase of
    strides and upsampling), on ``samples`` random positive inputs (their union:
    max pooling routes each input's gradient through one window position)."""
    h, w, c = (int(d) for d in model.inputs[0].shape[1:])
    oh, ow = (int(d) for d in model.outputs[0].shape[1:3])
    x = np.random.default_rng(seed).uniform(0.5, 1.5, (samples, h, w, c)).astype("float32")
    best = [0, 0]
    for k in range(positions):
        grad = input_gradient(model, x, oh // 2 + k, ow // 2 + k)
        for axis in (0, 1):
            hit = np.nonzero(grad.any(axis=1 - axis))[0]
            assert hit.size and hit[0] > 0 and hit[-1] < grad.shape[axis] - 1, (
                "the receptive field touches the border: use a larger input")
            best[axis] = max(best[axis], int(hit[-1] - hit[0] + 1))
    return tuple(best)


def conv(filters=2, kernel_size=3, **kwargs):
    """Linear conv with positive weights and no bias: gradients cannot cancel."""
    return keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False,
                               kernel_initializer=POSITIVE, **kwargs)


def stack(input_hw, layers, channels=1):
    inputs = keras.Input((input_hw, input_hw, channels))
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def add_model():
    inputs = keras.Input((24, 24, 1))
    a = conv()(inputs)                                   # rf 3
    b = conv(dilation_rate=2)(conv()(inputs))            # rf 3 + 2 * 2 = 7
    x = keras.layers.Add()([a, b])                       # rf max(3, 7) = 7
    return keras.Model(inputs, conv()(x))                # rf 7 + 2 = 9


def kron9(**kwargs):
    return KroneckerConv2D(4, 9, [(3, 3, 2, 2), (3, 3, 2, 2)], use_bias=False,
                           kernel_initializer=POSITIVE, **kwargs)


# name: (model factory, hand-computed rf (h, w) of the output, random samples)
RF_CASES = {
    # 1 + 2 + 4 + 2
    "stride1": (lambda: stack(24, [conv(), conv(kernel_size=5), conv()]), (9, 9), 1),
    # 3, 5 (then stride 2), 5 + 2*2 = 9, 9 + 2*2 = 13
    "stride2": (lambda: stack(32, [conv(), conv(strides=2), conv(), conv()]), (13, 13), 1),
    # 3, 3 + 2*2 = 7, 7 + 2*4 = 15, then a (3, 5) kernel at dilation (1, 2): (17, 23)
    "dilated": (lambda: stack(40, [conv(), conv(dilation_rate=2), conv(dilation_rate=4),
                                   conv(kernel_size=(3, 5), dilation_rate=(1, 2))]), (17, 23), 1),
    # 9, then 9 + 2 = 11
    "kronecker9": (lambda: stack(24, [kron9(execution="factored"), conv()], channels=4),
                   (11, 11), 1),
    # 9 (then stride 2), 9 + 2*2 = 13
    "kronecker9_stride2": (lambda: stack(32, [kron9(strides=2, execution="factored"), conv()],
                                         channels=4), (13, 13), 1),
    # 3, pool 2: 3 + 1 = 4 (then stride 2), 4 + 2*2 = 8
    "maxpool": (lambda: stack(24, [conv(), keras.layers.MaxPooling2D(2), conv()]), (8, 8), 32),
    "add": (add_model, (9, 9), 1),
}


@pytest.mark.training
@pytest.mark.parametrize("case", list(RF_CASES), ids=str)
def test_receptive_field_matches_gradient_support(case):
    factory, hand, samples = RF_CASES[case]
    model = factory()
    r = report.parameter_report(model)
    assert r.rows[-1].receptive_field == hand
    assert r.receptive_field == hand
    assert gradient_receptive_field(model, samples=samples) == hand


@pytest.mark.training
@pytest.mark.parametrize("case", ["nearest", "bilinear", "conv_transpose"])
def test_receptive_field_of_upsampling_layers_matches_gradient_support(case):
    """After a 3x3 conv (rf 3, stride 1) the upsampling output depends on:
    nearest: 1 input pixel per axis (rf 3); bilinear (half-pixel centres): 2
    adjacent ones (rf 4); a stride-2 transposed conv with a 4-tap kernel: ceil(4/2)
    = 2 (rf 4). The gradient support confirms each."""
    last = {"nearest": keras.layers.UpSampling2D(2, interpolation="nearest"),
            "bilinear": keras.layers.UpSampling2D(2, interpolation="bilinear"),
            "conv_transpose": keras.layers.Conv2DTranspose(
                1, 4, strides=2, padding="same", use_bias=False,
                kernel_initializer=POSITIVE)}[case]
    hand = {"nearest": (3, 3), "bilinear": (4, 4), "conv_transpose": (4, 4)}[case]
    model = stack(16, [conv(), last])
    assert gradient_receptive_field(model) == hand
    got = report.parameter_report(model).rows[-1].receptive_field
    assert got == hand, f"report says {got}, gradient support {hand}"


def test_receptive_field_of_plain_stacks_equals_kernels_receptive_field():
    model = RF_CASES["stride1"][0]()
    assert report.parameter_report(model).receptive_field == (
        (kernels.receptive_field([3, 5, 3]),) * 2)
    model = RF_CASES["stride2"][0]()
    assert report.parameter_report(model).receptive_field == (
        (kernels.receptive_field([3, 3, 3, 3], strides=[1, 2, 1, 1]),) * 2)
    model = RF_CASES["dilated"][0]()
    assert report.parameter_report(model).receptive_field == kernels.receptive_field(
        [3, 3, 3, (3, 5)], [1, 2, 4, (1, 2)])


def test_rows_after_global_pooling_are_global():
    r = registered_report("resnet_8")
    rows = {row.name: row for row in r.rows}
    assert rows["avg_pool"].receptive_field == report.GLOBAL
    assert rows["predictions"].receptive_field == report.GLOBAL
    finite = [row.receptive_field for row in r.rows if row.receptive_field != report.GLOBAL]
    assert r.receptive_field == finite[-1]  # the last feature map has the largest field
    assert "global" in r.to_text() and r.to_dict()["layers"][-1]["receptive_field"] == "global"


def _conv_chain_is_consistent(model, rows, names):
    """Each named row's rf is the previous named row's rf + (extent - 1) * its stride."""
    for prev, name in zip(names, names[1:]):
        layer = model.get_layer(name)
        extent = np.subtract(layer.kernel_size, 1) * getattr(layer, "dilation_rate", (1, 1))
        want = tuple(int(rows[prev].receptive_field[a] + extent[a] * rows[prev].stride[a])
                     for a in (0, 1))
        assert rows[name].receptive_field == want, (name, rows[name].receptive_field, want)


def test_context_net_context_row_adds_66_times_the_stride():
    model = registered("context_net_basic")
    rows = {row.name: row for row in registered_report("context_net_basic").rows}
    _conv_chain_is_consistent(model, rows, ["front1_conv", "front2_conv", "front3_conv",
                                            "front_out"])
    assert rows["front1_conv"].receptive_field == (3, 3)
    # front2_conv has stride 2; every later row keeps it
    assert model.get_layer("front2_conv").strides == (2, 2)
    assert rows["front_out"].stride == rows["context"].stride == (2, 2)
    module_rf = model.get_layer("context").receptive_field
    assert module_rf == kernels.receptive_field([3] * 7 + [1], [1, 1, 2, 4, 8, 16, 1, 1]) == 67
    before = rows["front_out"]
    assert rows["context"].receptive_field == tuple(
        before.receptive_field[a] + (module_rf - 1) * before.stride[a] for a in (0, 1))


def test_kron_context_net_has_the_context_module_receptive_field():
    model = registered("kron_context_net_basic")
    rows = {row.name: row for row in registered_report("kron_context_net_basic").rows}
    names = ["front_out"] + [f"context_{i}" for i in range(6)] + ["context_out"]
    _conv_chain_is_consistent(model, rows, names)
    sizes = [model.get_layer(n).kernel_size[0] for n in names[1:-1]]
    assert sizes == [3, 3, 9, 27, 27, 3]
    added = rows["context_out"].receptive_field[0] - rows["front_out"].receptive_field[0]
    assert added == 66 * rows["front_out"].stride[0]  # the dense module's 67 - 1, at stride 2


# ---------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------

def weighted_layer_names(model):
    return [layer.name for layer in model.layers if layer.count_params()]


@pytest.mark.parametrize("name", ["resnet_8", "kron_resnet_8"])
def test_to_text_lists_weighted_layers_and_a_total_line(name):
    model, r = registered(name), registered_report(name)
    text = r.to_text()
    assert text.splitlines()[0].startswith(name)
    for layer in weighted_layer_names(model):
        assert layer in text, layer
    total = [line for line in text.splitlines() if line.startswith("total")]
    assert len(total) == 1
    assert f"{r.params:,}" in total[0] and f"{r.dense_equivalent:,}" in total[0]
    assert f"{r.compression:.1f}x" in total[0]
    assert "stage1_block1_1_relu" not in text  # no weights, no MACs: hidden by default
    assert "stage1_block1_1_relu" in r.to_text(all_layers=True)
    assert str(r) == text


@pytest.mark.parametrize("all_layers", [False, True])
def test_to_markdown_is_a_valid_table(all_layers):
    r = registered_report("kron_resnet_8")
    lines = r.to_markdown(all_layers=all_layers).splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert lines[0].startswith("**kron_resnet_8**") and lines[1] == ""
    assert len({line.count("|") for line in table}) == 1
    columns = table[0].count("|") - 1
    assert re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|){%d}" % columns, table[1]), table[1]
    assert all(line.endswith("|") for line in table)
    shown = [row for row in r.rows if all_layers or row.params or row.macs]
    assert len(table) == 2 + len(shown) + 1  # header, separator, rows, total
    assert table[-1].startswith("| total |")


def test_to_json_totals_match_the_report():
    r = registered_report("kron_resnet_8")
    data = json.loads(r.to_json())
    totals = data["totals"]
    assert totals["model"] == "kron_resnet_8"
    assert totals["input_shape"] == [28, 28, 1]
    assert totals["params"] == r.params == registered("kron_resnet_8").count_params()
    assert totals["dense_equivalent"] == r.dense_equivalent
    assert totals["macs"] == r.macs
    assert totals["compression"] == pytest.approx(r.compression, abs=5e-4)
    assert totals["receptive_field"] == list(r.receptive_field)
    assert sum(layer["params"] for layer in data["layers"]) == totals["params"]
    assert sum(layer["macs"] for layer in data["layers"]) == totals["macs"]
    assert [layer["name"] for layer in data["layers"]] == [row.name for row in r.rows]
    assert data["uncounted"] == []


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_compare_lists_both_models(fmt):
    names = ["resnet_8", "kron_resnet_8"]
    built = [registered(n) for n in names]
    out = report.compare(built, format=fmt)
    if fmt == "json":
        data = json.loads(out)
        assert isinstance(data, list) and len(data) == 2
        assert [d["model"] for d in data] == names
        assert [d["params"] for d in data] == [m.count_params() for m in built]
        assert [d["macs"] for d in data] == [registered_report(n).macs for n in names]
        return
    lines = out.splitlines()
    for name, model in zip(names, built):
        (line,) = [line for line in lines if name in line.split()
                   or f"| {name} |" in line]
        assert f"{model.count_params():,}" in line
    if fmt == "markdown":
        assert len({line.count("|") for line in lines}) == 1 and len(lines) == 4
        assert re.fullmatch(r"\|(-{3,}:?\|)+", lines[1])


def test_compare_accepts_reports_and_rejects_bad_formats():
    r = registered_report("resnet_8")
    assert json.loads(report.compare([r], format="json"))[0] == r.totals()
    with pytest.raises(ValueError, match="format"):
        report.compare([r], format="html")


# ---------------------------------------------------------------------------
# the input_shape argument
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def any_size_fcn():
    return models.get("dilated_fcn_small", input_shape=(None, None, 1))


def test_any_size_model_needs_an_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        report.parameter_report(any_size_fcn())


def test_input_shape_gives_the_report_of_the_model_built_at_that_size():
    at_64 = report.parameter_report(any_size_fcn(), input_shape=(64, 64, 1))
    built_64 = registered_report("dilated_fcn_small")
    assert at_64.input_shape == (64, 64, 1)
    assert (at_64.macs, at_64.params) == (built_64.macs, built_64.params)
    assert at_64.receptive_field == built_64.receptive_field
    assert [row.macs for row in at_64.rows] == [row.macs for row in built_64.rows]


def test_macs_scale_with_area_for_a_stride1_fully_convolutional_model():
    at_32 = report.parameter_report(any_size_fcn(), input_shape=(32, 32, 1))
    at_64 = report.parameter_report(any_size_fcn(), input_shape=(64, 64, 1))
    assert at_64.macs == 4 * at_32.macs
    assert at_32.params == at_64.params == any_size_fcn().count_params()
    if IS_TF:
        assert macs_per_example(any_size_fcn(), input_shape=(32, 32, 1)) == at_32.macs


def test_any_size_sequential_model_with_input_shape():
    def build(shape):
        return keras.Sequential([keras.Input(shape), keras.layers.Conv2D(4, 3),
                                 keras.layers.Conv2D(2, 1)])

    r = report.parameter_report(build((None, None, 3)), input_shape=(10, 10, 3))
    assert r.macs == 8 * 8 * 3 * 3 * 3 * 4 + 8 * 8 * 4 * 2
    assert r.macs == report.parameter_report(build((10, 10, 3))).macs


@pytest.mark.parametrize("model, input_shape", [
    (lambda: any_size_fcn(), (64, 64, 3)),          # wrong channel count
    (lambda: any_size_fcn(), (64, 64)),             # not (H, W, C)
    (lambda: registered("resnet_8"), (32, 32, 1)),  # fixed-size model, other size
], ids=["channels", "rank", "fixed_size"])
def test_input_shape_that_does_not_fit_raises(model, input_shape):
    with pytest.raises(ValueError, match="does not fit"):
        report.parameter_report(model(), input_shape=input_shape)


def test_subclassed_model_raises_type_error():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(TypeError, match="functional or Sequential"):
        report.parameter_report(model)
    with pytest.raises(TypeError):
        report.parameter_report(keras.layers.Dense(3))


def test_channels_first_models_and_open_sizes_are_refused_by_name():
    """The counts read channels from the last axis: a channels_first layer, anywhere in
    the model, is an error naming it rather than a wrong MAC count."""
    inputs = keras.Input((4, 20, 20))
    x = keras.layers.Conv2D(6, 3, padding="same", data_format="channels_first",
                            name="first")(inputs)
    with pytest.raises(ValueError, match="layer 'first' .* is channels_first"):
        report.parameter_report(keras.Model(inputs, x))
    outer_inputs = keras.Input((4, 20, 20))
    nested = keras.Model(outer_inputs, keras.Model(inputs, x, name="inner")(outer_inputs))
    with pytest.raises(ValueError, match="layer 'first' .* is channels_first"):
        report.parameter_report(nested)
    with pytest.raises(ValueError, match=r"input_shape must be a full size"):
        report.parameter_report(any_size_fcn(), input_shape=(None, None, 1))
