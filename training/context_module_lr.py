"""Does a context module keep its identity start under an optimizer? A short probe.

    python training/context_module_lr.py context_net_large context_net_basic \
        --optimizers adamw:2e-3 adamw:2e-4 sgd:1e-3 --steps 40

Each model starts from the shared front end (``training/runs/context_front_end``, as the
ablation recipes' ``init_from``) with its module at the identity initialisation, then
takes ``--steps`` steps (batch 32, seed 0, no schedule) with each optimizer; prints mIoU
and pixel accuracy on the first ``--examples`` test scenes at the start and after the
steps. Why it exists: Adam moves every weight by about the learning rate per step, and
the large module's block-identity weights are ``C / c_out`` (1/32 in its widest layers),
so the learning rate that suits the basic module (weights 1) wipes out the large one's
start. Measured (AMD EPYC, 2 cores): see README, "Segmentation".
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from kronecker_zoo import data, models  # noqa: E402
from kronecker_zoo.metrics import confusion_matrix, mean_iou_from_confusion  # noqa: E402
from kronecker_zoo.tables import markdown_table  # noqa: E402
from training.train import init_from_run  # noqa: E402

FRONT_END_RUN = "training/runs/context_front_end"
OPTIMIZERS = {
    "adamw": lambda lr: keras.optimizers.AdamW(lr, weight_decay=1e-4),
    "sgd": lambda lr: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
    "lamb": lambda lr: keras.optimizers.Lamb(lr),
}


def optimizer_spec(text):
    """``"adamw:2e-3"`` -> ``("adamw", 0.002)``."""
    kind, _, lr = text.partition(":")
    try:
        rate = float(lr)
    except ValueError:
        rate = -1.0
    if kind not in OPTIMIZERS or not rate > 0:
        raise argparse.ArgumentTypeError(f"expected kind:learning_rate with kind in "
                                         f"{sorted(OPTIMIZERS)}, e.g. adamw:2e-3; got {text!r}")
    return kind, rate


def scores(model, images, masks):
    """(mIoU, pixel accuracy) of ``model`` on ``images``."""
    predicted = model.predict(images.astype("float32"), batch_size=64, verbose=0).argmax(-1)
    confusion = confusion_matrix(masks, predicted, model.output_shape[-1])
    return mean_iou_from_confusion(confusion), float((predicted == masks).mean())


def probe(names, optimizers, steps=40, examples=256, front_end_run=FRONT_END_RUN):
    """One row per (model, optimizer): mIoU and accuracy at the start and after ``steps``."""
    (x_train, y_train), (x_test, y_test) = data.fashion_scenes("train"), data.fashion_scenes("test")
    x_test, y_test = x_test[:examples], y_test[:examples]
    rows = []
    for name in names:
        start = None
        for kind, rate in optimizers:
            keras.utils.set_random_seed(0)
            model = models.get(name)
            init_from_run(model, front_end_run)
            start = start or scores(model, x_test, y_test)
            model.compile(OPTIMIZERS[kind](rate),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            batches = data.pixel_dataset(x_train, y_train, 32, shuffle=True, seed=0)
            model.fit(batches.take(steps), epochs=1, verbose=0)
            after = scores(model, x_test, y_test)
            rows.append((name, f"{kind} {rate:g}", start, after))
            print(f"{name} {kind} {rate:g}: mIoU {100 * start[0]:.2f}% -> "
                  f"{100 * after[0]:.2f}%", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help="context_net_* models")
    parser.add_argument("--optimizers", nargs="+", type=optimizer_spec,
                        default=[("adamw", 2e-3), ("adamw", 2e-4), ("sgd", 1e-3)])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--examples", type=int, default=256)
    args = parser.parse_args(argv)
    rows = probe(args.names, args.optimizers, args.steps, args.examples)
    print(markdown_table(
        ["model", "optimizer", "start mIoU / acc", f"after {args.steps} steps"],
        [[f"`{name}`", opt, f"{100 * a[0]:.2f}% / {100 * a[1]:.2f}%",
          f"{100 * b[0]:.2f}% / {100 * b[1]:.2f}%"] for name, opt, a, b in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
