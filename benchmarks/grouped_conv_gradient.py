"""Gradient of a grouped convolution on TensorFlow CPU: the library's route vs XLA's.

    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/grouped_conv_gradient.py
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/grouped_conv_gradient.py

TensorFlow's CPU kernels have no gradient for a grouped Conv2D. Keras (and this library
until now) differentiate it with XLA (``tf.function(jit_compile=True)``);
`kronecker_zoo.ops.grouped_conv2d` now uses TensorFlow's dense convolution gradients (a
block-diagonal kernel, or one convolution per group). Times both, side by side in one
run, on the grouped steps of the published students' channels-lowered Kronecker layers
(batch 128), and reports how far apart their gradients are. Prints the machine and the kernels TensorFlow ran.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kronecker_zoo import ops, runtime  # noqa: E402
from kronecker_zoo.tables import markdown_table  # noqa: E402

# (input h, w, groups, channels per group in, out, kernel, stride)
CASES = [(14, 14, 16, 2, 2, 3, 2), (28, 28, 16, 2, 4, 3, 1), (14, 14, 16, 2, 1, 3, 1),
         (7, 7, 8, 8, 8, 3, 1), (14, 14, 40, 2, 2, 3, 1)]


@tf.function(jit_compile=True, reduce_retracing=True)
def xla_gradient(x, kernel, dy, strides):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        z = tf.nn.conv2d(x, kernel, strides=strides, padding="SAME")
    return tape.gradient(z, [x, kernel], output_gradients=dy)


def timed(fn, repeats=3):
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main():
    print(runtime.describe())
    rows = []
    for h, w, groups, a, b, k, s in CASES:
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(size=(128, h, w, groups * a)).astype("float32"))
        kernel = tf.constant(rng.normal(size=(k, k, a, groups * b)).astype("float32"))
        strides = [1, s, s, 1]
        dy = tf.constant(rng.normal(size=(128, -(-h // s), -(-w // s), groups * b))
                         .astype("float32"))

        @tf.function
        def ours():
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                z = ops.grouped_conv2d(x, kernel, (s, s), "same")
            return tape.gradient(z, [x, kernel], output_gradients=dy)

        g_ours, g_xla = ours(), xla_gradient(x, kernel, dy, strides)
        err = max(float(tf.reduce_max(tf.abs(p - q)) / tf.reduce_max(tf.abs(q)))
                  for p, q in zip(g_ours, g_xla))
        t_ours = timed(ours)
        t_xla = timed(lambda: xla_gradient(x, kernel, dy, strides))
        rows.append([f"{h}x{w}, {groups} groups of {a} -> {b}, {k}x{k}, stride {s}",
                     f"{t_xla:.1f} ms", f"{t_ours:.1f} ms", f"{t_xla / t_ours:.1f}x",
                     f"{err:.1e}"])
    print(markdown_table(["grouped conv (batch 128)", "XLA gradient", "library gradient",
                          "speedup", "max rel. difference"], rows))


if __name__ == "__main__":
    main()
