"""Gradients of a layer's output on the active Keras backend (TensorFlow or JAX)."""

import keras
import numpy as np


def loss_grads(layer, x, weights):
    """d/d(x, weights) of ``sum(layer(x) * weights)`` as NumPy arrays.

    Returns ``(grad_input, [grad for each trainable variable])``.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(layer(xt) * weights)
        grads = tape.gradient(loss, [xt] + list(layer.trainable_variables))
        return np.asarray(grads[0]), [np.asarray(g) for g in grads[1:]]
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        frozen = [v.value for v in layer.non_trainable_variables]

        def loss(tv, xv):
            y, _ = layer.stateless_call(tv, frozen, xv)
            return (y * weights).sum()

        g_vars, g_x = jax.grad(loss, argnums=(0, 1))(trainable, x)
        return np.asarray(g_x), [np.asarray(g) for g in g_vars]
    raise NotImplementedError(f"no gradient helper for backend {backend!r}")
