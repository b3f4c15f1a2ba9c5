"""Cost of the portable dilated-conv gradient: factored KroneckerConv2D, old vs new op.

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/portable_gradient_cost.py [--repeats 30]
    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/portable_gradient_cost.py

"old" is the native dilated ``tf.nn.conv2d`` with TensorFlow's own gradient (which
Eigen, i.e. oneDNN off, does not have); "new" is `kronecker_zoo.ops.dilated_conv2d`
(same forward op, gradient through TensorFlow's SpaceToBatch lowering). Timed
interleaved in one process, batch 8, 64x64, `tf.function`; the training step only
where the old op has a gradient (oneDNN). The first line says which kernels ran.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kronecker_zoo import ops as kz_ops  # noqa: E402
from kronecker_zoo import runtime  # noqa: E402
from kronecker_zoo.layers import KroneckerConv2D  # noqa: E402

CASES = [("9x9 64->64 = (3x3,8->8) (x) (3x3,8->8)", [(3, 3, 8, 8), (3, 3, 8, 8)]),
         ("27x27 64->64 = three (3x3,4->4)", [(3, 3, 4, 4)] * 3)]
NEW_OP = kz_ops._tf_native_dilated_conv2d


def old_op(x, kernel, strides, dilation):
    return tf.nn.conv2d(x, kernel, strides=[1, *strides, 1], padding="VALID",
                        dilations=[1, *dilation, 1])


def _forward(layer):
    return tf.function(lambda t: layer(t))


def _train_step(layer):
    @tf.function
    def step(t):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(t)))
        return tape.gradient(loss, layer.trainable_variables)[0]
    return step


def median_ms(factors, make, repeats):
    """``{"old": ms, "new": ms}``: each op traced into its own function, timed interleaved."""
    size = int(np.prod([f[0] for f in factors]))
    channels = int(np.prod([f[2] for f in factors]))
    x = tf.random.normal((8, 64, 64, channels), seed=0)
    functions = {}
    for label, op in (("old", old_op), ("new", NEW_OP)):
        layer = KroneckerConv2D(channels, size, factors, execution="factored")
        layer.build(x.shape)
        kz_ops._tf_native_dilated_conv2d = op  # read when the function is traced
        try:
            fn = make(layer)
            fn.get_concrete_function(x)
        finally:
            kz_ops._tf_native_dilated_conv2d = NEW_OP
        functions[label] = fn
    for fn in functions.values():
        for _ in range(3):
            fn(x).numpy()
    samples = {label: [] for label in functions}
    for _ in range(repeats):
        for label, fn in functions.items():
            start = time.perf_counter()
            fn(x).numpy()
            samples[label].append(time.perf_counter() - start)
    return {label: 1000 * float(np.median(v)) for label, v in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    kernels = runtime.tensorflow_cpu_kernels()
    print(f"# {runtime.describe()}; median of {args.repeats} runs")
    print("| case | pass | old ms | new ms | new / old |")
    print("|---|---|---|---|---|")
    modes = [("forward", _forward)] + ([("train step", _train_step)]
                                       if kernels == "oneDNN" else [])
    for mode, make in modes:
        for name, factors in CASES:
            ms = median_ms(factors, make, args.repeats)
            print(f"| {name} | {mode} | {ms['old']:.2f} | {ms['new']:.2f} | "
                  f"{ms['new'] / ms['old']:.3f} |", flush=True)
    if kernels != "oneDNN":
        print("(train step: the old op has no gradient on Eigen kernels)")


if __name__ == "__main__":
    main()
