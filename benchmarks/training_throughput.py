"""Which way trains a zoo model fastest on this machine: `model.fit` images per second.

    python benchmarks/training_throughput.py [--model resnet_20] [--steps 30] [--batch 128]

Runs the same fit (the model's SGD recipe on real Fashion-MNIST images, batch 128) once
per way, each in its own process because the kernel choice is made when TensorFlow is
imported: TensorFlow with its default CPU kernels, with oneDNN forced on
(``TF_ENABLE_ONEDNN_OPTS=1``) and off (``=0``, Eigen), with ``jit_compile=True`` (XLA), and
on the JAX backend. The first epoch (tracing, compilation) is not timed; the figure is the
median over ``--repeats`` timed epochs of ``--steps`` steps. Prints the machine and which
kernels each process ran, then the ratio of each way to the default.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAYS = {
    "tensorflow, default kernels": ({"KERAS_BACKEND": "tensorflow"}, False),
    "tensorflow, oneDNN on (=1)": ({"KERAS_BACKEND": "tensorflow",
                                    "TF_ENABLE_ONEDNN_OPTS": "1"}, False),
    "tensorflow, oneDNN off (=0, Eigen)": ({"KERAS_BACKEND": "tensorflow",
                                            "TF_ENABLE_ONEDNN_OPTS": "0"}, False),
    "tensorflow, jit_compile=True": ({"KERAS_BACKEND": "tensorflow"}, True),
    "jax (XLA)": ({"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}, True),
}


def measure(model_name, steps, batch, repeats, jit_compile):
    """Median images/second of `fit` over ``repeats`` epochs of ``steps`` steps."""
    import keras
    import numpy as np

    from kronecker_zoo import data, models, runtime

    x, y = data.fashion_mnist("train")
    n = steps * batch
    x, y = x[:n].astype("float32"), y[:n].astype("int32")
    keras.utils.set_random_seed(0)
    model = models.get(model_name)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=batch, epochs=repeats + 1, shuffle=False, verbose=0,
              callbacks=[Clock()])
    return {"images_per_second": n / float(np.median(times[1:])),
            "kernels": runtime.describe()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet_20")
    parser.add_argument("--steps", type=int, default=30, help="steps per timed epoch")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per way")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one way, as JSON
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(measure(args.model, args.steps, args.batch, args.repeats,
                                 args.worker == "jit")))
        return 0
    print(f"fit of {args.model}, batch {args.batch}, {args.steps} steps per epoch, median of "
          f"{args.repeats} epochs after a warm-up epoch")
    results = {}
    for name, (env, jit) in WAYS.items():
        environment = {k: v for k, v in os.environ.items()
                       if k not in ("KERAS_BACKEND", "TF_ENABLE_ONEDNN_OPTS")}
        environment.update(env, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
        run = subprocess.run(
            [sys.executable, __file__, "--model", args.model, "--steps", str(args.steps),
             "--batch", str(args.batch), "--repeats", str(args.repeats),
             "--worker", "jit" if jit else "plain"],
            env=environment, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"{name:38s} failed: {run.stderr.strip().splitlines()[-1:]}")
            continue
        results[name] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{name:38s} {results[name]['images_per_second']:7.1f} img/s   "
              f"[{results[name]['kernels']}]", flush=True)
    base = results.get("tensorflow, default kernels")
    if base:
        print("ratio to the default: " + ", ".join(
            f"{name}: {r['images_per_second'] / base['images_per_second']:.2f}x"
            for name, r in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
