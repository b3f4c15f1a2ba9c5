"""Inference latency of zoo models side by side on TensorFlow (oneDNN on / off) and JAX.

    python benchmarks/student_inference.py resnet_20 resnet_20_kron5x_lowmac_plain \\
        resnet_20_lowrank5x_plain [--input-size 224,224] [--batch 1 64]

The same table as `tflite/benchmark.py` prints for LiteRT, for the Keras backends: each
way runs in its own process (the kernel choice is made when TensorFlow is imported):
TensorFlow with oneDNN forced on (``TF_ENABLE_ONEDNN_OPTS=1``) and off (``=0``, Eigen),
each as a `tf.function`, and the JAX backend (``jax.jit``). Every model is built as a user
gets it (``execution="auto"``: each Kronecker layer's execution and lowering planned for
that backend at the input size), weights random (only time is measured). The forward passes
of all models are timed interleaved, median of ``--repeats`` after a warm-up; per way and
batch size: ms per call, and each model's ratio to the first one.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAYS = {
    "TensorFlow, oneDNN on (=1)": {"KERAS_BACKEND": "tensorflow", "TF_ENABLE_ONEDNN_OPTS": "1"},
    "TensorFlow, oneDNN off (=0, Eigen)": {"KERAS_BACKEND": "tensorflow",
                                           "TF_ENABLE_ONEDNN_OPTS": "0"},
    "JAX (XLA CPU)": {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"},
}


def forward(model):
    """The backend's compiled inference function of ``model``: array in, array out."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        state = ([v.value for v in model.trainable_variables],
                 [v.value for v in model.non_trainable_variables])
        jitted = jax.jit(lambda s, x: model.stateless_call(s[0], s[1], x, training=False)[0])
        return lambda x: jitted(state, x).block_until_ready()
    import tensorflow as tf

    graph = tf.function(lambda x: model(x, training=False))
    return lambda x: graph(x).numpy()


def measure(names, size, batches, repeats):
    """``{model: {"params", "macs", "ms": {batch: median ms per call}}, "kernels"}``."""
    import numpy as np

    from kronecker_zoo import models, runtime
    from kronecker_zoo.report import parameter_report

    shape = size + (1,) if size else None
    built = {name: models.get(name, input_shape=shape) for name in names}
    results = {}
    for name, model in built.items():
        report = parameter_report(model)
        results[name] = {"params": int(model.count_params()), "macs": int(report.macs),
                         "ms": {}}
    rng = np.random.default_rng(0)
    for batch in batches:
        calls = {}
        for name, model in built.items():
            x = rng.uniform(0, 255, (batch,) + tuple(model.input_shape[1:])).astype("float32")
            fn = forward(model)
            for _ in range(3):
                fn(x)
            calls[name] = (fn, x)
        samples = {name: [] for name in calls}
        for _ in range(repeats):
            for name, (fn, x) in calls.items():
                start = time.perf_counter()
                fn(x)
                samples[name].append(time.perf_counter() - start)
        for name, values in samples.items():
            results[name]["ms"][str(batch)] = float(np.median(values)) * 1000
    return {"models": results, "kernels": runtime.describe()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--input-size", default=None, help="H,W (default: as built, 28x28)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--ways", nargs="+", choices=sorted(WAYS), default=list(WAYS),
                        metavar="WAY", help=f"subset of {list(WAYS)}")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.input_size.split(",")) if args.input_size else None
    if args.worker:
        print(json.dumps(measure(args.models, size, args.batch, args.repeats)))
        return 0
    from kronecker_zoo.tables import markdown_table

    print(f"inference, input {args.input_size or '28,28'}, batches {args.batch}, median of "
          f"{args.repeats} interleaved calls; weights random")
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--worker"]
    header, rows, meta = None, [], None
    for way in args.ways:
        environment = {k: v for k, v in os.environ.items()
                       if k not in ("KERAS_BACKEND", "TF_ENABLE_ONEDNN_OPTS")}
        environment.update(WAYS[way], TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
        run = subprocess.run([sys.executable, __file__, *forwarded, "--worker"],
                             env=environment, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"{way}: failed: {run.stderr.strip().splitlines()[-1:]}")
            continue
        result = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{way}: {result['kernels']}", flush=True)
        meta = result["models"]
        first = meta[args.models[0]]
        for batch in args.batch:
            key = str(batch)
            rows.append([way, str(batch)] + [
                f"{m['ms'][key]:.3f} ms ({m['ms'][key] / first['ms'][key]:.2f}x)"
                for m in (meta[name] for name in args.models)])
    if meta is None:
        return 1
    header = ["way", "batch"] + [f"`{name}`" for name in args.models]
    rows.insert(0, ["params", ""] + [f"{meta[n]['params']:,}" for n in args.models])
    rows.insert(1, ["MACs per image", ""] + [f"{meta[n]['macs'] / 1e6:.2f}M"
                                             for n in args.models])
    print()
    print(markdown_table(header, rows, left=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
