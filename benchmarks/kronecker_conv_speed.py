"""Speed of factored vs materialised Kronecker convolution vs a plain Conv2D.

    python benchmarks/kronecker_conv_speed.py [--repeats 30] [--json out.json]
    KERAS_BACKEND=jax python benchmarks/kronecker_conv_speed.py

For each case it times, in one process and interleaved (so machine noise hits all
variants alike), the forward pass and the forward+backward pass of:
- KroneckerConv2D(execution="factored")     the planner's choice of lowering ("auto")
- the same with lowering="batch" and, for two factors, lowering="channels"
- KroneckerConv2D(execution="materialized") forms the kernel, one convolution
- keras.layers.Conv2D                       holding the same (materialised) kernel
and prints each speedup over the materialised execution next to the ratio of
multiply-accumulates. Target (issue 13): factored speedup >= 50% of the MAC ratio
on the headline case (9x9 = 3x3 (x) 3x3, 64 -> 64 = 8 (x) 8, batch 8, 64x64).
TensorFlow (tf.function) or JAX (jax.jit) backend, whichever Keras runs. The first line
says which CPU ran and, on TensorFlow, which CPU kernels (oneDNN or Eigen): run it with
``TF_ENABLE_ONEDNN_OPTS=0`` and ``=1`` to measure both.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kronecker_zoo import runtime  # noqa: E402
from kronecker_zoo.layers import KroneckerConv2D  # noqa: E402

BACKEND = keras.backend.backend()

CASES = [
    # name, factors, batch, size, strides
    ("9x9 64->64 = (3x3,8->8) (x) (3x3,8->8)", [(3, 3, 8, 8), (3, 3, 8, 8)], 8, 64, 1),
    ("9x9 64->64, stride 2", [(3, 3, 8, 8), (3, 3, 8, 8)], 8, 64, 2),
    ("27x27 64->64 = three (3x3,4->4)", [(3, 3, 4, 4)] * 3, 8, 64, 1),
    ("5x5 128->128 = (5x5,16->16) (x) (1x1,8->8)", [(5, 5, 16, 16), (1, 1, 8, 8)], 8, 32, 1),
]


def _runners(layer):
    """``(forward, train_step)``: compiled callables of ``x`` that return when done."""
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        fixed = [v.value for v in layer.non_trainable_variables]

        def apply(params, x):
            return layer.stateless_call(params, fixed, x)[0]

        fwd = jax.jit(apply)
        grad = jax.jit(jax.grad(lambda params, x: jnp.sum(jnp.square(apply(params, x)))))
        return (lambda x: fwd(trainable, x).block_until_ready(),
                lambda x: jax.block_until_ready(grad(trainable, x)))
    import tensorflow as tf

    fwd = tf.function(lambda t: layer(t))

    @tf.function
    def step(t):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(t)))
        return tape.gradient(loss, layer.trainable_variables)

    return (lambda x: fwd(x).numpy(), lambda x: [g.numpy() for g in step(x)])


def bench_case(name, factors, batch, size, strides, repeats):
    kh = int(np.prod([f[0] for f in factors]))
    kw = int(np.prod([f[1] for f in factors]))
    cin = int(np.prod([f[2] for f in factors]))
    cout = int(np.prod([f[3] for f in factors]))
    x = np.random.default_rng(0).standard_normal((batch, size, size, cin)).astype("float32")
    variants = {"factored": ("factored", "auto"), "factored, batch": ("factored", "batch"),
                "materialized": ("materialized", "auto")}
    if len(factors) == 2:
        variants["factored, channels"] = ("factored", "channels")
    layers, weights = {}, None
    for key, (execution, lowering) in variants.items():
        layer = KroneckerConv2D(cout, (kh, kw), factors, strides=strides, execution=execution,
                                lowering=lowering)
        layer.build(x.shape)
        if weights is None:
            weights = layer.get_weights()
        layer.set_weights(weights)
        layers[key] = layer
    fact = layers["factored"]
    plain = keras.layers.Conv2D(cout, (kh, kw), strides=strides, padding="same")
    plain.build(x.shape)
    plain.set_weights([keras.ops.convert_to_numpy(fact.kernel), weights[-1]])
    layers["Conv2D"] = plain
    runners = {k: _runners(layer) for k, layer in layers.items()}
    outputs = {k: np.asarray(keras.ops.convert_to_numpy(layer(x))) for k, layer in layers.items()}
    scale = float(np.abs(outputs["Conv2D"]).max())
    max_err = max(float(np.abs(outputs[k] - outputs["Conv2D"]).max()) for k in outputs)
    times = {}
    for mode, index in (("forward", 0), ("train", 1)):
        calls = {k: r[index] for k, r in runners.items()}
        for call in calls.values():  # warm up: trace/compile + first runs
            for _ in range(3):
                call(x)
        samples = {k: [] for k in calls}
        for _ in range(repeats):
            for k, call in calls.items():
                start = time.perf_counter()
                call(x)
                samples[k].append(time.perf_counter() - start)
        times[mode] = {k: float(np.median(v)) * 1000 for k, v in samples.items()}
    macs = fact.macs((size, size), execution=None)
    return {
        "case": name, "batch": batch, "size": size, "strides": strides,
        "lowering": fact.resolved_lowering,
        "params_factored": int(fact.count_params()), "params_dense": int(plain.count_params()),
        "macs_factored": macs["factored"], "macs_materialized": macs["materialized"],
        "mac_ratio": macs["materialized"] / macs["factored"],
        "max_abs_err_rel": max_err / scale, "ms": times,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--cases", type=int, default=len(CASES),
                        help="run only the first N cases")
    args = parser.parse_args()
    machine = runtime.describe()
    print(f"# {machine}; backend {BACKEND}, Keras {keras.__version__}; "
          f"median of {args.repeats} runs")
    header = ("| case | params (kron / dense) | MAC ratio | fwd ms: factored (lowering) / "
              "batch / channels / materialized / Conv2D | fwd speedup | % of MAC ratio | "
              "train ms: factored / materialized | train speedup | max rel. err |")
    print(header)
    print("|---" * 9 + "|")
    results = []
    for case in CASES[: args.cases]:
        r = bench_case(*case, repeats=args.repeats)
        results.append(r)
        f, t = r["ms"]["forward"], r["ms"]["train"]
        speed = f["materialized"] / f["factored"]
        train_speed = t["materialized"] / t["factored"]
        r["forward_speedup"], r["train_speedup"] = speed, train_speed
        r["fraction_of_mac_ratio"] = speed / r["mac_ratio"]
        channels = f"{f['factored, channels']:.1f}" if "factored, channels" in f else "-"
        print(f"| {r['case']} | {r['params_factored']:,} / {r['params_dense']:,} | "
              f"{r['mac_ratio']:.1f}x | {f['factored']:.1f} ({r['lowering']}) / "
              f"{f['factored, batch']:.1f} / {channels} / {f['materialized']:.1f} / "
              f"{f['Conv2D']:.1f} | {speed:.1f}x | {100 * speed / r['mac_ratio']:.0f}% | "
              f"{t['factored']:.1f} / {t['materialized']:.1f} | {train_speed:.1f}x | "
              f"{r['max_abs_err_rel']:.1e} |", flush=True)
    head = results[0]
    verdict = "meets" if head["fraction_of_mac_ratio"] >= 0.5 else "falls short of"
    kernels = runtime.tensorflow_cpu_kernels() if BACKEND == "tensorflow" else "XLA"
    print(f"\nHeadline case ({BACKEND}, {kernels} CPU kernels): factored forward speedup "
          f"{head['forward_speedup']:.1f}x is "
          f"{100 * head['fraction_of_mac_ratio']:.0f}% of the MAC ratio "
          f"{head['mac_ratio']:.1f}x: {verdict} the 50% target.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "backend": BACKEND, "cpu_kernels": kernels,
                       "keras": keras.__version__,
                       "cases": results}, f, indent=2)


if __name__ == "__main__":
    main()
