"""The factored execution's TensorFlow graph: native dilated convs, no full kernel."""

import keras
import pytest

import kronecker_zoo as kz

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="inspects a TensorFlow graph")


def _graph_ops(layer, spec_shape):
    import tensorflow as tf

    fn = tf.function(lambda t: layer(t))
    graph = fn.get_concrete_function(tf.TensorSpec(spec_shape, "float32")).graph
    return graph.get_operations()


@pytest.mark.parametrize("batch", [None, 2])
def test_factored_graph_has_dilated_conv2d_and_no_space_to_batch(batch):
    layer = kz.KroneckerConv2D(16, 9, [(3, 3, 4, 4), (3, 3, 4, 4)], execution="factored")
    ops = _graph_ops(layer, (batch, None, None, 16))
    types = [op.type for op in ops]
    assert "SpaceToBatchND" not in types and "BatchToSpaceND" not in types, types
    convs = [op for op in ops if op.type == "Conv2D"]
    assert len(convs) == 2
    dilations = sorted(tuple(op.get_attr("dilations")) for op in convs)
    assert dilations == [(1, 1, 1, 1), (1, 3, 3, 1)]
    # The full (9, 9, 16, 16) kernel is never formed (the materialised graph has it).
    shapes = [tuple(out.shape) for op in ops for out in op.outputs]
    assert (9, 9, 16, 16) not in shapes


def test_materialized_graph_forms_the_kernel():
    layer = kz.KroneckerConv2D(16, 9, [(3, 3, 4, 4), (3, 3, 4, 4)], execution="materialized")
    ops = _graph_ops(layer, (2, 20, 20, 16))
    shapes = [tuple(out.shape) for op in ops for out in op.outputs]
    assert (9, 9, 16, 16) in shapes
