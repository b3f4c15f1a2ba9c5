"""Pruning kron_resnet_8 to 50% sparsity: which schedule and learning rate recover best.

    python benchmarks/pruning_schedules.py [--images 8000] [--epochs 2] [--only N]

Each row: the published kron_resnet_8 (Fashion-MNIST, materialised execution), a
tf_keras pruning twin (`kronecker_zoo.optimize.prune`, 50% of every pruned kernel),
fine-tuned with Adam on the first ``--images`` shuffled train images (seed 0), then
stripped, put back into the Keras 3 model and scored on the whole test set. The
schedule is either one-shot (50% from step 0: `end_step=None`) or tfmot's polynomial
ramp to 50% over a fraction of the steps; the learning rate constant or cosine-decayed
to 0. This is the measurement behind `tests/test_optimize.py::test_prune_half_kron_resnet_8`.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tf_keras  # noqa: E402

from kronecker_zoo import data, models, optimize, runtime  # noqa: E402

# (learning rate, ramp end as a fraction of the steps or None for one-shot, schedule)
SCHEDULES = [
    (1e-3, None, "cosine"),
    (5e-4, None, "cosine"),
    (5e-4, 0.3, "constant"),  # the earlier recipe
    (5e-4, 0.3, "cosine"),
    (1e-3, 0.3, "cosine"),
    (2e-3, 0.3, "cosine"),
    (1e-3, 0.5, "cosine"),
    (2e-4, 0.5, "cosine"),
]


def accuracy(model, x, y):
    logits = np.asarray(model.predict(x, batch_size=500, verbose=0))
    return float(np.mean(np.argmax(logits, -1) == y))


def run(learning_rate, ramp, schedule, x, y, xt, yt, epochs, batch=64):
    steps = epochs * (-(-len(x) // batch))
    model = models.get("kron_resnet_8", weights="fashion_mnist", execution="materialized")
    tf_keras.utils.set_random_seed(0)
    start = time.perf_counter()
    pruned = optimize.prune(model, 0.5, begin_step=0,
                            end_step=None if ramp is None else int(ramp * steps),
                            frequency=steps // 20)
    rate = (learning_rate if schedule == "constant"
            else tf_keras.optimizers.schedules.CosineDecay(learning_rate, steps))
    optimize.compile_for_finetuning(pruned, learning_rate=rate)
    pruned.fit(x, y, batch_size=batch, epochs=epochs, verbose=0,
               callbacks=optimize.pruning_callbacks())
    sparse = optimize.restore_weights(optimize.strip_pruning(pruned),
                                      models.get("kron_resnet_8"))
    return accuracy(sparse, xt, yt), time.perf_counter() - start, accuracy(model, xt, yt)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--only", type=int, help="run only the first N schedules")
    args = parser.parse_args()
    x, y = data.fashion_mnist("train")
    order = np.random.default_rng(0).permutation(len(x))[:args.images]
    x, y = x[order].astype("float32"), y[order]
    xt, yt = data.fashion_mnist("test")
    print(f"# {runtime.describe()}; {args.images} images x {args.epochs} epochs")
    print("| learning rate | schedule | sparsity ramp | float | pruned | drop (points) | s |")
    print("|---|---|---|---|---|---|---|")
    for lr, ramp, schedule in SCHEDULES[: args.only]:
        pruned, seconds, float_accuracy = run(lr, ramp, schedule, x, y,
                                              xt.astype("float32"), yt, args.epochs)
        ramp_text = "one-shot" if ramp is None else f"first {100 * ramp:.0f}% of steps"
        print(f"| {lr:g} | {schedule} | {ramp_text} | {100 * float_accuracy:.2f}% | "
              f"{100 * pruned:.2f}% | {100 * (float_accuracy - pruned):.2f} | {seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
