"""Evaluate every published weight file on its test set; print the README table.

    python training/evaluate.py                 # all published weights
    python training/evaluate.py resnet_8 kron_resnet_8

Loads each model with `models.get(name, weights=tag)` (SHA-256 checked), measures
test accuracy (and mIoU for segmentation) on the full test split, and prints a
Markdown table with parameters and MACs from `report.parameter_report`.
`evaluate_published(name, tag, num_examples)` is what `publish.py` records and the
tests reproduce.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kronecker_zoo import data, evaluation, models, report  # noqa: E402
from kronecker_zoo import weights as weight_registry  # noqa: E402

TEST_SETS = {
    "fashion_mnist": lambda: data.fashion_mnist("test"),
    "fashion_scenes": lambda: data.fashion_scenes("test"),
}


def evaluate_published(name, tag, num_examples=None):
    """Metrics of the published ``tag`` weights of ``name`` on its test split: all of it,
    or its first ``num_examples`` examples (the manifest's ``check`` records those).

    The model is built with the recipe's overrides (the manifest's ``config``), as the
    published metric was measured: e.g. ``execution="materialized"`` for the Kronecker
    ResNets, the same function as the factored execution and faster on CPUs.
    """
    if tag not in TEST_SETS:
        raise ValueError(f"No test set known for weights tag {tag!r}; known: {sorted(TEST_SETS)}")
    images, labels = TEST_SETS[tag]()
    if num_examples is not None:
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or not (
                0 < num_examples <= len(images)):
            raise ValueError(f"num_examples must be an int in [1, {len(images)}]. "
                             f"Received: {num_examples!r}")
        images, labels = images[:num_examples], labels[:num_examples]
    entry = weight_registry.published(name).get(tag, {})
    overrides = entry.get("config", {}).get("overrides") or {}
    return evaluation.evaluate(models.get(name, weights=tag, **overrides), images, labels)


def evaluate(name, tag):
    """``{"accuracy", "miou" (segmentation), "params", "macs"}`` of published weights."""
    result = evaluate_published(name, tag)
    r = report.parameter_report(models.get(name))
    result.update(params=r.params, macs=r.macs)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="models (default: every published one)")
    args = parser.parse_args(argv)
    published = weight_registry.published()
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
