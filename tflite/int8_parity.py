"""int8 parity of published models across calibration sets: the issue-13 measurement.

    python tflite/int8_parity.py resnet_8 kron_resnet_8 --calibration train:64 test:256
    python tflite/int8_parity.py --all-classifiers --calibration train:256 --examples 2000
    python tflite/int8_parity.py resnet_8 --calibration train:256 test:200 --bias-correction both
    python tflite/int8_parity.py context_net_frontend --output-range mse minmax

For each model (published weights) and each calibration set ``split:count`` (``count``
seeded-random images of that split of the model's pretraining set, drawn with
``--seed``), exports a full-integer int8 file with `to_tflite` and compares it with
the Keras model on the test split (the whole of it unless ``--examples``): top-1 (or
per-pixel) agreement, SQNR, Keras and int8 accuracy, and whether the agreement meets
the bar (99% classification, 98% per pixel). Exit status 1 if any row misses it.
``--bias-correction`` exports with `to_tflite`'s int8 bias correction ``auto`` (the
default, as `to_tflite` does: the file closer to Keras on the calibration images, the
table says which), ``on``, ``off``, or ``both`` (on and off, one row each).
``--output-range``: `to_tflite`'s int8 range of the outputs, ``mse`` (the default) and/or
``minmax`` (one row each).
"""

import argparse
import itertools
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kronecker_zoo import models  # noqa: E402
from kronecker_zoo.export import (MIN_AGREEMENT, pretraining_calibration_data,  # noqa: E402
                                  to_tflite, verify_tflite)
from kronecker_zoo.export.calibration import SPLITS  # noqa: E402
from kronecker_zoo.export.output_range import OUTPUT_RANGES  # noqa: E402
from kronecker_zoo.tables import markdown_table  # noqa: E402
from tflite import zoo  # noqa: E402


def calibration_spec(text):
    """``"train:256"`` -> ``("train", 256)``."""
    split, _, count = text.partition(":")
    if split not in SPLITS or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected split:count with split in {SPLITS} and a "
                                         f"positive count, e.g. train:256; got {text!r}")
    return split, int(count)


BIAS_CORRECTION = {"auto": ("auto",), "on": (True,), "off": (False,), "both": (False, True)}


def parity_rows(names, calibrations, examples=None, seed=0, directory=None,
                bias_corrections=("auto",), output_ranges=("mse",)):
    """One dict per (model, calibration set, bias correction, output range): agreement,
    SQNR, accuracies, passed."""
    rows = []
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            task = models.spec(name).task
            model = zoo.load_model(name)
            images, labels = zoo.test_set(name, examples)
            for (split, count), corrected, output_range in itertools.product(
                    calibrations, bias_corrections, output_ranges):
                suffix = {"auto": "", True: "_corrected", False: "_uncorrected"}[corrected]
                path = os.path.join(directory or tmp,
                                    f"{name}_int8_{split}{count}{suffix}_{output_range}.tflite")
                calibration = pretraining_calibration_data(
                    name, zoo.default_weights(name), count=count, seed=seed, split=split)
                info = to_tflite(model, path, quantization="int8",
                                 overwrite=directory is None,  # never a --keep file
                                 bias_correction=corrected, representative_data=calibration,
                                 output_range=output_range)
                r = verify_tflite(model, path, images, labels)
                kept = "on" if info.bias_corrected else "off"
                setting = f"auto ({kept})" if corrected == "auto" else kept
                rows.append({"model": name, "calibration": f"{count} {split}",
                             "bias_correction": setting, "output_range": output_range,
                             "examples": r.num_examples, "agreement": r.agreement,
                             "sqnr_db": r.sqnr_db, "keras_accuracy": r.keras_accuracy,
                             "int8_accuracy": r.tflite_accuracy,
                             "passed": r.agreement >= MIN_AGREEMENT[task]})
                print(f"{name} ({count} {split}, bias correction {setting}, output range "
                      f"{output_range}): "
                      f"{100 * r.agreement:.2f}% "
                      f"agreement, {r.sqnr_db:.1f} dB", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("names", nargs="*", metavar="NAME", help="published models")
    parser.add_argument("--all-classifiers", action="store_true",
                        help="every classifier with published weights")
    parser.add_argument("--calibration", nargs="+", type=calibration_spec,
                        default=[("train", 256)], help="split:count, e.g. train:256 test:200")
    parser.add_argument("--examples", type=int, default=None,
                        help="first N test images (default: the whole test split)")
    parser.add_argument("--seed", type=int, default=0, help="which calibration images")
    parser.add_argument("--keep", default=None,
                        help="directory to keep the .tflite files in (created if missing; "
                             "existing files are never replaced)")
    parser.add_argument("--bias-correction", choices=sorted(BIAS_CORRECTION), default="auto",
                        help="to_tflite's int8 bias correction: auto (default), on, off, "
                             "or both")
    parser.add_argument("--output-range", nargs="+", choices=OUTPUT_RANGES, default=["mse"],
                        help="to_tflite's int8 output range(s): mse (default), minmax")
    args = parser.parse_args(argv)
    names = list(args.names)
    if args.all_classifiers:
        names += [n for n in models.list_models("classification", pretrained=True)
                  if n not in names]
    if not names:
        parser.error("name at least one model, or pass --all-classifiers")
    published = models.list_models(pretrained=True)
    unpublished = [n for n in names if n not in published]
    if unpublished:
        parser.error(f"no published weights for {unpublished}")
    rows = parity_rows(names, args.calibration, args.examples, args.seed, args.keep,
                       BIAS_CORRECTION[args.bias_correction], args.output_range)
    print(markdown_table(
        ["model", "calibration", "test images", "agreement", "SQNR", "Keras accuracy",
         "int8 accuracy", ">= bar", "bias correction", "output range"],
        [[f"`{r['model']}`", r["calibration"], f"{r['examples']:,}",
          f"{100 * r['agreement']:.2f}%", f"{r['sqnr_db']:.1f} dB",
          f"{100 * r['keras_accuracy']:.2f}%", f"{100 * r['int8_accuracy']:.2f}%",
          "yes" if r["passed"] else "no", r["bias_correction"], r["output_range"]]
         for r in rows]))
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
