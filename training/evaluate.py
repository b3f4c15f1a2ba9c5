"""Evaluate every published weight file on its test set; print the README table.

    python training/evaluate.py                 # all published weights
    python training/evaluate.py resnet_8 kron_resnet_8

Loads each model with `models.get(name, weights=tag)` (SHA-256 checked), measures
test accuracy (and mIoU for segmentation) on the full test split, and prints a
Markdown table with parameters and MACs from `report.parameter_report`.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kronecker_zoo import evaluation, models, report, weights  # noqa: E402


def evaluate(name, tag):
    """``{"accuracy", "miou" (segmentation), "params", "macs"}`` of published weights."""
    result = evaluation.evaluate_published(name, tag)
    r = report.parameter_report(models.get(name))
    result.update(params=r.params, macs=r.macs)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="models (default: every published one)")
    args = parser.parse_args(argv)
    published = weights.published()
    names = args.names or [n for n in models.list_models() if n in published]
    print("| model | weights | epochs | test accuracy | test mIoU | params | MACs |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in names:
        for tag in published.get(name, {}):
            r = evaluate(name, tag)
            miou = f"{100 * r['miou']:.2f}%" if "miou" in r else "-"
            print(f"| {name} | {tag} | {published[name][tag]['epochs']} | "
                  f"{100 * r['accuracy']:.2f}% | {miou} | "
                  f"{r['params']:,} | {r['macs'] / 1e6:.2f}M |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
