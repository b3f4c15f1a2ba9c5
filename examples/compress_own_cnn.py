"""Worked example: compress a Keras CNN you built yourself, distil it, export it.

    python examples/compress_own_cnn.py [--ratio 4] [--epochs 12] [--distill-epochs 12]

1. builds and trains a small functional CNN on MNIST 5k (4,000 train / 1,000 held-out
   digits, `examples/mnist5k.py`);
2. `compress.plan_factorization` picks, per layer, Kronecker factor shapes and ranks under
   ``--ratio``; `compress.factorize` builds the new model from the trained kernels (the
   teacher is not modified);
3. fine-tunes the student with `keras.distillation.Distiller` (`compress.logits_distillation`)
   from the teacher, and, for comparison, the same student with plain `fit`;
4. exports the distilled student with `export.to_tflite` (float32 and int8; Kronecker
   layers factored, and int8 also materialised) and checks each file with
   `export.verify_tflite` on the held-out digits.
Prints the plan and one table (accuracy, parameters, MACs, file size). Imports only the
library's public API.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from examples.mnist5k import mnist_5k  # noqa: E402
from kronecker_zoo import compress, report, runtime  # noqa: E402
from kronecker_zoo.export import to_tflite, verify_tflite  # noqa: E402


def build_cnn():
    """A user's CNN: 28x28 grey digits -> 10 logits (functional, with a residual add)."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv1")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu",
                            name="conv2")(x)
    y = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.Conv2D(128, 3, strides=2, padding="valid", activation="relu",
                            name="conv4")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="user_cnn")


def _schedule(learning_rate, steps):
    return keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.01)


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=4.0)
    parser.add_argument("--epochs", type=int, default=12, help="teacher training epochs")
    parser.add_argument("--distill-epochs", type=int, default=12)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--student-loss-weight", type=float, default=0.5)
    args = parser.parse_args(argv)
    print(runtime.describe())
    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = mnist_5k("train"), mnist_5k("test")
    x, xt = x.astype("float32"), xt.astype("float32")  # (N, 28, 28, 1) raw pixels
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    steps = int(np.ceil(len(x) / 64))
    start = time.time()

    teacher = build_cnn()
    teacher.compile(keras.optimizers.Adam(_schedule(2e-3, steps * args.epochs)), loss,
                    metrics=["accuracy"])
    teacher.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    rows = [("teacher (trained)", teacher, _accuracy(teacher, xt, yt))]

    plan = compress.plan_factorization(teacher, ratio=args.ratio)
    print(plan)
    student = compress.factorize(teacher, plan=plan)
    # the plain-fit twin, built now: the Distiller below freezes the teacher it is given,
    # and factorize copies each layer's `trainable` flag
    plain = compress.factorize(teacher, plan=plan)
    rows.append(("student, factorized (no fine-tune)", student, _accuracy(student, xt, yt)))

    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student,
        distillation_losses=compress.logits_distillation(args.temperature),
        student_loss_weight=args.student_loss_weight)
    distiller.compile(keras.optimizers.Adam(_schedule(1e-3, steps * args.distill_epochs)),
                      loss)
    distiller.fit(x, y, batch_size=64, epochs=args.distill_epochs, verbose=0)
    rows.append(("student + distillation", student, _accuracy(student, xt, yt)))

    plain.compile(keras.optimizers.Adam(_schedule(1e-3, steps * args.distill_epochs)), loss)
    plain.fit(x, y, batch_size=64, epochs=args.distill_epochs, verbose=0)
    rows.append(("student + plain fine-tune", plain, _accuracy(plain, xt, yt)))

    folder = tempfile.mkdtemp()
    exports = []
    for quantization, execution in ((None, "factored"), ("int8", "factored"),
                                    ("int8", "materialized")):
        path = os.path.join(folder, f"student_{quantization or 'float32'}_{execution}.tflite")
        exported = to_tflite(student, path, quantization=quantization, execution=execution,
                             representative_data=x[:256] if quantization else None)
        exports.append((f"{quantization or 'float32'}, {execution}", exported,
                        verify_tflite(student, exported, xt, yt)))
    print(f"\n{'model':36s} {'accuracy':>8s} {'params':>8s} {'MACs':>11s}")
    for label, model, accuracy in rows:
        r = report.parameter_report(model)
        print(f"{label:36s} {100 * accuracy:7.2f}% {r.params:8,} {r.macs:11,}")
    for label, exported, check in exports:
        print(f"{'student .tflite ' + label:36s} {100 * check.tflite_accuracy:7.2f}% "
              f"{exported.size_bytes:,} bytes; top-1 agreement with Keras "
              f"{100 * check.agreement:.2f}%, verify passed: {check.passed}")
    print(f"took {time.time() - start:.0f} s")
    return 0 if exports[0][2].passed else 1  # float32 must match; int8 is reported


if __name__ == "__main__":
    sys.exit(main())
