"""Publish a finished training run as a package weight file + manifest entry.

    python training/publish.py training/runs/kron_resnet_8-fashion_mnist
    python training/publish.py training/runs/resnet_8_kron5x     # a distill.py student

A student run (``training/distill.py``) is published under its run directory's name,
which must be registered in ``kronecker_zoo/models/students.py``; its entry names the
teacher (model, weights tag, SHA-256, accuracy), the method and the distillation.

Copies ``<model>.weights.h5`` to ``kronecker_zoo/weights/<model>-<tag>.weights.h5``
(the tag is the dataset) and records its SHA-256, dataset, recipe, epochs, test
metrics, parameters and MACs in ``kronecker_zoo/weights/manifest.json``. An
existing, different file of the same name is never overwritten.

Each entry also gets a ``check``: the metrics of the published file on the first
``CHECK_EXAMPLES`` test examples, which the test suite reproduces exactly (a fifth to a
tenth of the cost of the whole test split; ``python training/evaluate.py`` re-measures
the whole split). ``--checks-only`` re-records the checks of entries already published.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kronecker_zoo import models, report  # noqa: E402
from kronecker_zoo import weights as weight_registry  # noqa: E402
from training.evaluate import evaluate_published  # noqa: E402

# Test examples behind each entry's "check" (a tenth of each test split).
CHECK_EXAMPLES = {"fashion_mnist": 1000, "fashion_scenes": 200}
# A segmentation model is published only if its test mIoU beats the better of the
# trivial baselines (`evaluation.trivial_segmentation_baselines`) by this much.
MIOU_MARGIN = 0.15


def check_beats_trivial(model, tag, miou):
    """Raises unless ``miou`` (whole test split) clearly beats the trivial baselines."""
    from kronecker_zoo import evaluation
    from training.evaluate import TEST_SETS

    images, masks = TEST_SETS[tag]()
    baselines = evaluation.trivial_segmentation_baselines(
        images, masks, models.get(model).output_shape[-1])
    best = max(baselines.values())
    if miou < best + MIOU_MARGIN:
        raise ValueError(f"{model} is not published: test mIoU {miou:.4f} does not beat the "
                         f"trivial baselines {baselines} by {MIOU_MARGIN} (needs "
                         f">= {best + MIOU_MARGIN:.4f})")
    return baselines


def weights_only(name, overrides, source, target):
    """Writes to ``target`` the weights of registered model ``name`` in ``source``, without
    the optimizer state that ``save_weights`` of a compiled model adds (two thirds of an
    Adam-trained file)."""
    model = models.get(name, **overrides)
    model.load_weights(source)
    model.save_weights(target)


def check_publishable(run_dir, config):
    """ValueError for a run that is not a full recipe run: unfinished (a ``.partial``
    directory), trained or tested on a subset, or with a cap on the steps per epoch."""
    if os.path.abspath(run_dir).rstrip(os.sep).endswith(".partial"):
        raise ValueError(f"{run_dir} is an unfinished run's working directory; publish the "
                         "finished run")
    shortened = {k: config[k] for k in ("subset", "test_subset", "steps_per_epoch")
                 if config.get(k)}
    if shortened:
        raise ValueError(f"{run_dir} is not a full run ({shortened}): "
                         "published weights come from the whole recipe, tested on the "
                         "whole test split")


def publish(run_dir, recipe=None):
    with open(os.path.join(run_dir, "result.json")) as f:
        result = json.load(f)
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    check_publishable(run_dir, config)
    student = "teacher" in result  # a training/distill.py run
    model = _run_name(run_dir) if student else result["model"]
    tag = config["dataset"] if student else result["dataset"]
    if student and model not in models.MODELS:
        raise ValueError(f"{model!r} is not registered: add this entry to STUDENTS in "
                         "kronecker_zoo/models/students.py first:\n" + student_entry(run_dir))
    if "test_miou" in result:
        check_beats_trivial(model, tag, result["test_miou"])
    name = f"{model}-{tag}.weights.h5"
    target = weight_registry.file_path(name)
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, name)
        weights_only(model, config.get("overrides", {}) if not student else {},
                     os.path.join(run_dir, result["weights"]), source)
        digest = weight_registry.sha256_of(source)
        if os.path.exists(target) and weight_registry.sha256_of(target) != digest:
            raise FileExistsError(f"{target} exists with different contents; remove it first "
                                  "if you really mean to replace the published weights")
        shutil.copyfile(source, target + ".tmp")
        if weight_registry.sha256_of(target + ".tmp") != digest:
            os.remove(target + ".tmp")
            raise OSError(f"copying {name} into the package changed it; nothing published")
        os.replace(target + ".tmp", target)
    entry = {
        "file": name,
        "sha256": digest,
        "dataset": tag,
        "recipe": recipe or (f"python training/distill.py --config training/configs/{model}.json"
                             if student else default_recipe(run_dir, model)),
        "config": config,
        "epochs": result["epochs"],
        "params": result["params"],
        "macs": result["macs"],
        "test_accuracy": result["test_accuracy"],
        "train_seconds": result["train_seconds"],
    }
    if student:
        teacher_entry = weight_registry.published(result["teacher"])[config["teacher_weights"]]
        entry["teacher"] = {"model": result["teacher"], "weights": config["teacher_weights"],
                            "sha256": teacher_entry["sha256"],
                            "test_accuracy": result["teacher_test_accuracy"]}
        entry["method"], entry["distillation"] = result["method"], result["distillation"]
    if "test_miou" in result:
        entry["test_miou"] = result["test_miou"]
    # Params and MACs of the model users get (default execution), whatever the
    # execution the recipe trained with.
    default = report.parameter_report(models.get(model))
    entry["params"], entry["macs"] = default.params, default.macs
    _write_entry(model, tag, entry)
    return record_check(model, tag)


def student_entry(run_dir):
    """The ``STUDENTS`` entry (Python source) of a distill.py run: its plan as layer specs."""
    from kronecker_zoo import compress

    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(run_dir, "plan.json")) as f:
        overrides = json.load(f)
    teacher = models.get(config["teacher"], weights=config["teacher_weights"])
    plan = compress.plan_factorization(teacher, ratio=None, method=config["method"],
                                       layer_overrides=overrides)
    lines = [f'    "{_run_name(run_dir)}": ("{config["teacher"]}", "{config["method"]}", {{']
    for name, spec in plan.layer_specs().items():
        factors = ("" if spec["layer"] == "LowRankConv2D"
                   else f',\n{" " * 12}"factors": {spec["factors"]}')
        lines.append(f'        "{name}": {{"layer": "{spec["layer"]}"{factors}, '
                     f'"rank": {spec["rank"]}}},')
    return "\n".join(lines + ["    }),"])


def _run_name(run_dir):
    return os.path.basename(os.path.normpath(run_dir))


def default_recipe(run_dir, model):
    """The train.py command of the config named like the run directory, else the model."""
    run_name = _run_name(run_dir)
    for name in (run_name, model):
        config = os.path.join("training", "configs", f"{name}.json")
        if os.path.exists(os.path.join(ROOT, config)):
            return f"python training/train.py --config {config}"
    raise FileNotFoundError(f"no training/configs/<name>.json for run {run_dir!r} "
                            f"(tried {run_name!r} and {model!r}): pass --recipe")


def record_check(model, tag):
    """Measure and store the ``check`` of the published ``model``/``tag``; the entry."""
    count = CHECK_EXAMPLES[tag]
    metrics = evaluate_published(model, tag, num_examples=count)
    check = {"test_examples": count, "test_accuracy": round(metrics["accuracy"], 4)}
    if "miou" in metrics:
        check["test_miou"] = round(metrics["miou"], 4)
    entry = dict(weight_registry.published(model)[tag], check=check)
    _write_entry(model, tag, entry)
    return entry


def _write_entry(model, tag, entry):
    manifest = weight_registry.manifest()
    manifest.setdefault(model, {})[tag] = entry
    with open(weight_registry.MANIFEST + ".tmp", "w") as f:  # then renamed: never half-written
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(weight_registry.MANIFEST + ".tmp", weight_registry.MANIFEST)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*")
    parser.add_argument("--recipe", help="the command that made the run (default: train.py "
                        "with training/configs/<run dir name or model>.json)")
    parser.add_argument("--checks-only", action="store_true",
                        help="re-record the check of every published entry (no run dirs)")
    args = parser.parse_args(argv)
    if args.checks_only:
        for model, tags in weight_registry.published().items():
            for tag in tags:
                print(model, tag, record_check(model, tag)["check"], flush=True)
        return 0
    if not args.run_dirs:
        parser.error("give run directories, or --checks-only")
    for run in args.run_dirs:
        entry = publish(run, recipe=args.recipe)
        print(f"{run}: {entry['file']} sha256={entry['sha256'][:12]}... "
              f"acc={entry['test_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
