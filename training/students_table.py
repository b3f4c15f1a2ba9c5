"""The students' ablation table (markdown) from finished runs, same budget per row.

    python training/students_table.py resnet_8 5

Reads ``training/runs/<teacher>_<kind><N>x*/result.json`` (training/distill.py runs:
factorize + distillation, + plain fine-tune, same architecture from scratch, the
low-rank student) and the published ``kron_<family>`` / ``lowrank_<family>`` zoo models
(manifest), and prints one row each: parameters, compression, MACs, test accuracy and
its change against the teacher's accuracy measured in the same run. A run's MACs are
counted anew from its ``plan.json`` with today's execution plan (the run's
``result.json`` holds the count of the code it ran with).
"""

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kronecker_zoo import compress, models, report  # noqa: E402
from kronecker_zoo import weights as weight_registry  # noqa: E402
from kronecker_zoo.tables import markdown_table  # noqa: E402
from training.distill import DEFAULTS  # noqa: E402

# How a zoo model's recipe names its optimizer (training/train.py OPTIMIZERS).
OPTIMIZER_NAMES = {"adamw": "AdamW", "sgd": "SGD"}
RUNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs")


def _describe(result, run, config):
    if result["init"] == "scratch":
        how = "same architecture, trained from scratch"
    elif result["distillation"] is None:
        how = "factorize + plain fine-tune"
    else:
        d = result["distillation"]
        how = (f"factorize + distillation (T={d['temperature']:g}, "
               f"student weight {d['student_loss_weight']:g})")
    cap = config.get("max_relative_macs")
    capped = f", each layer's MACs capped at {cap:g}x the dense layer's" if cap else ""
    decay = config.get("weight_decay", DEFAULTS["weight_decay"])
    decay = f", weight decay {decay:g}" if decay != DEFAULTS["weight_decay"] else ""
    return f"`{run}`: {result['method']}{capped}, {how}, {result['epochs']} epochs{decay}"


def _student_macs(teacher, method, run_dir):
    """MACs per example of the run's student architecture, with today's execution plan."""
    with open(os.path.join(run_dir, "plan.json")) as f:
        overrides = json.load(f)
    dense = models.get(teacher)
    plan = compress.plan_factorization(dense, ratio=None, method=method,
                                       layer_overrides=overrides)
    return report.parameter_report(compress.factorize(dense, plan=plan)).macs


def rows(teacher, ratio):
    found = []
    paths = [p for kind in ("kron", "lowrank") for p in sorted(glob.glob(
        os.path.join(RUNS, f"{teacher}_{kind}{ratio}x*", "result.json")))]
    for path in paths:
        run = os.path.basename(os.path.dirname(path))
        with open(path) as f:
            result = json.load(f)
        with open(os.path.join(os.path.dirname(path), "config.json")) as f:
            config = json.load(f)
        macs = _student_macs(teacher, result["method"], os.path.dirname(path))
        found.append((_describe(result, run, config), result["params"],
                      result["teacher_params"], macs, result["test_accuracy"],
                      result["teacher_test_accuracy"]))
    if not found:
        raise SystemExit(f"no finished runs training/runs/{teacher}_(kron|lowrank){ratio}x*")
    teacher_params, teacher_accuracy = found[0][2], found[0][5]
    family = teacher.split("_", 1)[1]
    for zoo in (f"kron_resnet_{family}", f"lowrank_resnet_{family}"):
        entry = weight_registry.published(zoo).get("fashion_mnist")
        if entry:
            optimizer = OPTIMIZER_NAMES[entry.get("config", {}).get("optimizer", "adamw")]
            found.append((f"`{zoo}` (zoo model, {entry['epochs']} epochs {optimizer})",
                          entry["params"], teacher_params, entry["macs"],
                          entry["test_accuracy"], teacher_accuracy))
    return found


def markdown(teacher, ratio):
    return markdown_table(
        ["student", "params", "fewer params", "MACs", "test accuracy", "vs teacher"],
        [[what, f"{params:,}", f"{t_params / params:.1f}x", f"{macs / 1e6:.2f}M",
          f"{100 * acc:.2f}%", f"{100 * (acc - t_acc):+.2f}"]
         for what, params, t_params, macs, acc, t_acc in rows(teacher, ratio)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("ratio", help="the N of <teacher>_<kind><N>x")
    args = parser.parse_args(argv)
    print(markdown(args.teacher, args.ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
