"""Publish a finished training run as a package weight file + manifest entry.

    python training/publish.py training/runs/kron_resnet_8-fashion_mnist

Copies ``<model>.weights.h5`` to ``kronecker_zoo/weights/<model>-<tag>.weights.h5``
(the tag is the dataset) and records its SHA-256, dataset, recipe, epochs, test
metrics, parameters and MACs in ``kronecker_zoo/weights/manifest.json``. An
existing, different file of the same name is never overwritten.
"""

import argparse
import json
import os
import shutil
import sys

from kronecker_zoo import models, report
from kronecker_zoo import weights as weight_registry


def publish(run_dir, recipe=None):
    with open(os.path.join(run_dir, "result.json")) as f:
        result = json.load(f)
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    model, tag = result["model"], result["dataset"]
    source = os.path.join(run_dir, result["weights"])
    digest = weight_registry.sha256_of(source)
    name = f"{model}-{tag}.weights.h5"
    target = weight_registry.file_path(name)
    if os.path.exists(target) and weight_registry.sha256_of(target) != digest:
        raise FileExistsError(f"{target} exists with different contents; remove it first "
                              "if you really mean to replace the published weights")
    shutil.copyfile(source, target)
    entry = {
        "file": name,
        "sha256": digest,
        "dataset": tag,
        "recipe": recipe or f"python training/train.py --config training/configs/{model}.json",
        "config": config,
        "epochs": result["epochs"],
        "params": result["params"],
        "macs": result["macs"],
        "test_accuracy": result["test_accuracy"],
        "train_seconds": result["train_seconds"],
    }
    if "test_miou" in result:
        entry["test_miou"] = result["test_miou"]
    # Params and MACs of the model users get (default execution), whatever the
    # execution the recipe trained with.
    default = report.parameter_report(models.get(model))
    entry["params"], entry["macs"] = default.params, default.macs
    manifest = weight_registry.manifest()
    manifest.setdefault(model, {})[tag] = entry
    with open(weight_registry.MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    return entry


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    args = parser.parse_args(argv)
    for run in args.run_dirs:
        entry = publish(run)
        print(f"{run}: {entry['file']} sha256={entry['sha256'][:12]}... "
              f"acc={entry['test_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
