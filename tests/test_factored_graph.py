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


@pytest.mark.training
def test_training_graph_has_no_dilated_backprop_ops():
    """The gradient of the factored layer runs on every CPU: TensorFlow's Eigen kernels
    (oneDNN off) have no dilated Conv2DBackpropInput / Conv2DBackpropFilter, so no
    backprop op of the training graph may carry a dilation; the forward keeps its one
    native dilated Conv2D per step."""
    import numpy as np
    import tensorflow as tf

    layer = kz.KroneckerConv2D(16, 9, [(3, 3, 4, 4), (3, 3, 4, 4)], execution="factored")
    layer.build((2, 12, 12, 16))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    x = tf.constant(np.random.default_rng(0).normal(size=(2, 12, 12, 16)), "float32")
    ops = step.get_concrete_function(x).graph.get_operations()
    backprop = [op for op in ops if op.type.startswith("Conv2DBackprop")]
    assert backprop, [op.type for op in ops]
    for op in backprop:
        assert tuple(op.get_attr("dilations")) == (1, 1, 1, 1), op.name
    forward = [op for op in ops if op.type == "Conv2D" and "gradient" not in op.name.lower()]
    assert (1, 3, 3, 1) in [tuple(op.get_attr("dilations")) for op in forward]
    # ...and the step runs here, whichever CPU kernels TensorFlow uses.
    grads = step(x)
    assert all(np.all(np.isfinite(g.numpy())) and np.abs(g.numpy()).max() > 0 for g in grads)
