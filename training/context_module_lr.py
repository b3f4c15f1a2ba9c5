"""Does a context module keep its identity start under an optimizer? A short probe.

    python training/context_module_lr.py context_net_large context_net_basic \
        --optimizers adamw:2e-3 adamw:2e-4 sgd:1e-3 --steps 40

Each model starts from the shared front end (``training/runs/context_front_end``, as the
ablation recipes' ``init_from``) with its module at the identity initialisation, then
takes ``--steps`` steps (batch 32, seed 0, constant learning rate; SGD with Nesterov
momentum 0.9 and no weight decay, AdamW with the recipes' 1e-4) with each optimizer; prints
mIoU and pixel accuracy (`evaluation.evaluate`) on the first ``--examples`` test scenes at
the start and after the steps. Why it exists: Adam moves every weight by about the learning rate per step, and
the large module's block-identity weights are ``C / c_out`` (1/32 in its widest layers),
so the learning rate that suits the basic module (weights 1) wipes out the large one's
start. Measured (AMD EPYC, 2 cores): README, "Segmentation: Yu & Koltun's context-module
ablation".
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from kronecker_zoo import data, evaluation, models  # noqa: E402
from kronecker_zoo.tables import markdown_table  # noqa: E402
from kronecker_zoo.validation import positive_int  # noqa: E402
from training.train import init_from_run  # noqa: E402

FRONT_END_RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs",
                             "context_front_end")
FAMILIES = ("context_net", "kron_context_net")
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
    result = evaluation.evaluate(model, images, masks, batch_size=64)
    return result["miou"], result["accuracy"]


def probe(names, optimizers, steps=40, examples=256, front_end_run=FRONT_END_RUN):
    """One row per (model, optimizer): mIoU and accuracy at the start and after ``steps``."""
    for name in names:
        if models.spec(name).family not in FAMILIES:
            raise ValueError(f"{name!r} has no context module; choose a model of "
                             f"{', '.join(FAMILIES)}")
    positive_int(steps, "steps")
    positive_int(examples, "examples")
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
    try:
        rows = probe(args.names, args.optimizers, args.steps, args.examples)
    except ValueError as error:
        parser.error(str(error))
    print(markdown_table(
        ["model", "optimizer", "start mIoU / acc", f"after {args.steps} steps"],
        [[f"`{name}`", opt, f"{100 * a[0]:.2f}% / {100 * a[1]:.2f}%",
          f"{100 * b[0]:.2f}% / {100 * b[1]:.2f}%"] for name, opt, a, b in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
