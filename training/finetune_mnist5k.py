"""Worked example: fine-tune a Fashion-MNIST-pretrained classifier on MNIST 5k digits.

    python training/finetune_mnist5k.py --model resnet_8 --steps 125

Trains the same number of steps twice with plain `model.fit`: from the pretrained
weights (new 10-way head, everything trains) and from scratch, with the same
optimizer, steps and BatchNorm momentum (0.9), and reports
held-out accuracy on the stratified MNIST 5k test split for both.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from kronecker_zoo import data, models  # noqa: E402


def fine_tune(name="resnet_8", steps=125, batch_size=32, learning_rate=5e-4, seed=0,
              pretrained=True):
    """Held-out MNIST 5k accuracy after ``steps`` steps of `model.fit`."""
    keras.utils.set_random_seed(seed)
    x, y = data.mnist_5k("train", seed=seed)
    x_test, y_test = data.mnist_5k("test", seed=seed)
    model = models.get(name, weights="fashion_mnist" if pretrained else None, num_classes=10)
    for layer in model.layers:
        # Short runs: let the BatchNorm statistics follow the new data within tens of
        # steps (the default momentum 0.99 keeps ~30% of the old ones after 125).
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    n = min(len(x), steps * batch_size)
    epochs = max(1, -(-steps * batch_size // n))
    model.fit(x[:n].astype("float32"), y[:n], batch_size=batch_size, epochs=epochs,
              steps_per_epoch=-(-n // batch_size), verbose=0,
              callbacks=[keras.callbacks.TerminateOnNaN()])
    return float(model.evaluate(x_test.astype("float32"), y_test, verbose=0,
                                return_dict=True)["accuracy"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet_8")
    parser.add_argument("--steps", type=int, default=125)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = {
        "model": args.model, "steps": args.steps,
        "pretrained_accuracy": fine_tune(args.model, args.steps, seed=args.seed),
        "scratch_accuracy": fine_tune(args.model, args.steps, seed=args.seed, pretrained=False),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
