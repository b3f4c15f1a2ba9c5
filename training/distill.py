"""Compress a trained zoo model into a student and fine-tune it (distillation or plain fit).

    python training/distill.py --config training/configs/resnet_20_kron5x.json --out training/runs/resnet_20_kron5x
    python training/distill.py --teacher resnet_8 --ratio 5 --epochs 1 --subset 2000 --out /tmp/s
    python training/distill.py --config ... --out ... --resume       # continue a cut-off run

The student is `kronecker_zoo.compress.factorize(teacher, ratio, method)` of the teacher's
published (or given) weights. ``init="scratch"`` keeps the student's architecture but starts
from fresh initial weights (the ablation's "same architecture from scratch").
``distillation`` set: `keras.distillation.Distiller` with
`compress.logits_distillation(temperature)` (Keras' `LogitsDistillation` with an exact
KL on logits) and ``student_loss_weight``; ``None``: plain ``fit`` on the labels. The optimizer,
schedule, augmentation and run directory protocol (``<out>.partial``, checkpoints,
``--resume``, nothing overwritten) are train.py's.

Writes ``config.json``, ``plan.json`` (the student's per-layer factors and ranks:
``layer_overrides`` that rebuild its architecture), ``plan.txt`` (the report), ``log.csv``,
``student.weights.h5`` and ``result.json`` (test accuracy of teacher and student, params,
MACs, time).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kronecker_zoo import compress, data, models, report  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import train as recipe  # noqa: E402
from training.train import recipe_from_args  # noqa: E402

DEFAULTS = {
    "teacher": None,  # a registry classification model
    "teacher_weights": "fashion_mnist",  # published tag, or a .weights.h5 path
    "dataset": "fashion_mnist",
    "method": "kronecker",  # or "lowrank"
    "ratio": 5.0,
    "exclude": [],  # layers kept dense (names)
    "max_relative_macs": None,  # per layer, factored MACs / original MACs at most this
    "max_relative_cost": None,  # or: per layer, factored / dense cost on `runtime` at most
    "runtime": None,  # the cost model of max_relative_cost ("litert", ...; None: backend)
    "init": "factorized",  # or "scratch": the student's architecture, fresh weights
    "distillation": {"temperature": 4.0, "student_loss_weight": 0.5},  # None: plain fit
    "epochs": 10,
    "batch_size": 128,
    "optimizer": "sgd",
    "learning_rate": 0.05,
    "weight_decay": 5e-4,
    "augment": "crop_flip",
    "crop_padding": 2,
    "jit_compile": False,
    "seed": 0,
    "subset": None,
    "test_subset": None,
    "steps_per_epoch": None,
}
INITS = ("factorized", "scratch")


def distill(config, out, verbose=1, resume=False):
    """Runs one student recipe; returns the result dict written to ``out/result.json``."""

    def prepare(config):
        spec = models.spec(config["teacher"])
        if spec.task != "classification":
            raise ValueError(f"distill.py compresses classification models; "
                             f"{config['teacher']} is a {spec.task} model")
        if config["init"] not in INITS:
            raise ValueError(f"init must be one of {INITS}. Received: {config['init']!r}")
        distillation = config["distillation"]
        if distillation is not None and set(distillation) != {"temperature",
                                                              "student_loss_weight"}:
            raise ValueError("distillation must be None or a dict with 'temperature' and "
                             f"'student_loss_weight'. Received: {distillation!r}")
        return config

    return recipe.managed_run(config, out, resume, DEFAULTS, prepare,
                              lambda config, work: _run(config, work, verbose))


def _teacher(config):
    weights = config["teacher_weights"]
    if weights and os.path.isfile(str(weights)):
        model = models.get(config["teacher"])
        model.load_weights(weights)
        return model
    return models.get(config["teacher"], weights=weights)


def _student(config, teacher, work):
    """The student of the recipe; its plan is fixed in ``work/plan.json`` on first use."""
    path = os.path.join(work, "plan.json")
    if os.path.isfile(path):  # a resumed run: exactly the architecture it started with
        with open(path) as f:
            overrides = json.load(f)
        plan = compress.plan_factorization(teacher, ratio=None, method=config["method"],
                                           layer_overrides=overrides)
    else:
        plan = compress.plan_factorization(teacher, ratio=config["ratio"],
                                           method=config["method"],
                                           exclude=config["exclude"],
                                           max_relative_macs=config["max_relative_macs"],
                                           max_relative_cost=config["max_relative_cost"],
                                           runtime=config["runtime"])
        with open(path, "w") as f:
            json.dump(plan.layer_overrides(), f, indent=1)
        with open(os.path.join(work, "plan.txt"), "w") as f:
            f.write(str(plan) + "\n")
    student = compress.factorize(teacher, plan=plan)
    if config["init"] == "scratch":
        student = keras.models.clone_model(student)  # same layers, fresh initial weights
    return student, plan


def _run(config, work, verbose):
    with open(os.path.join(work, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    keras.utils.set_random_seed(config["seed"])
    (x, y), (xt, yt) = recipe.load_data(config["dataset"], config["subset"],
                                        config["test_subset"])
    teacher = _teacher(config)
    student, plan = _student(config, teacher, work)
    steps = config["steps_per_epoch"] or int(np.ceil(len(x) / config["batch_size"]))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    distillation = config["distillation"]
    if distillation is None:
        trainee = student
    else:
        trainee = keras.distillation.Distiller(
            teacher=teacher, student=student,
            distillation_losses=compress.logits_distillation(distillation["temperature"]),
            student_loss_weight=distillation["student_loss_weight"])
    trainee.compile(optimizer=recipe.make_optimizer(config, steps), loss=loss,
                    metrics=["accuracy"], jit_compile=bool(config["jit_compile"]))
    if not trainee.built:  # BackupAndRestore needs built variables to restore into
        trainee(x[:1].astype("float32"))
    train_ds = data.pixel_dataset(x, y, config["batch_size"], shuffle=True,
                                  seed=config["seed"], augment=config["augment"],
                                  crop_padding=config["crop_padding"])
    recipe.fit_with_checkpoints(trainee, train_ds, config, work, verbose)
    test_ds = data.pixel_dataset(xt, yt, 256)
    accuracy = {}
    for role, model in (("teacher", teacher), ("student", student)):
        model.compile(loss=loss, metrics=["accuracy"])
        accuracy[role] = float(model.evaluate(test_ds, return_dict=True, verbose=0)["accuracy"])
    student.save_weights(os.path.join(work, "student.weights.h5"))
    before, after = report.parameter_report(teacher), report.parameter_report(student)
    result = {
        "teacher": config["teacher"],
        "method": config["method"],
        "init": config["init"],
        "distillation": distillation,
        "epochs": config["epochs"],
        "train_seconds": round(recipe._logged_seconds(os.path.join(work, "log.csv")), 1),
        "test_examples": len(xt),
        "teacher_test_accuracy": round(accuracy["teacher"], 4),
        "test_accuracy": round(accuracy["student"], 4),
        "params": after.params,
        "teacher_params": before.params,
        "compression": round(before.params / after.params, 2),
        "macs": after.macs,
        "teacher_macs": before.macs,
        "weights": "student.weights.h5",
    }
    with open(os.path.join(work, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="JSON recipe (keys as in DEFAULTS)")
    parser.add_argument("--out", required=True, help="new output directory")
    parser.add_argument("--verbose", type=int, default=1)
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run of --out from its last checkpoint")
    for key in ("teacher", "teacher_weights", "method", "init", "optimizer", "augment"):
        parser.add_argument("--" + key.replace("_", "-"), default=None)
    for key in ("ratio", "learning_rate", "weight_decay"):
        parser.add_argument("--" + key.replace("_", "-"), type=float, default=None)
    for key in ("epochs", "batch_size", "subset", "test_subset", "steps_per_epoch", "seed"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    parser.add_argument("--no-distillation", action="store_true",
                        help="plain fit on the labels instead of distillation")
    args = parser.parse_args(argv)
    config = recipe_from_args(args, DEFAULTS, parser)
    if args.no_distillation:
        config["distillation"] = None
    if not config.get("teacher") and not args.resume:
        parser.error("give --teacher or a --config with a teacher")
    result = distill(config, args.out, args.verbose, resume=args.resume)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
