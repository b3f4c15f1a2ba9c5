"""How much does the int8 grid of the normalised input cost, and what does rewrite 4 win?

The zoo normalises raw pixels ``p`` (0..255) with ``x = p / 127.5 - 1``. The int8 grid
of ``x`` would need a zero point of -0.5, so every pixel lands half a step off
(``p - 127.5`` rounded to an integer, ties either way). This measures, per published
classifier, on the Fashion-MNIST test set (the whole of it unless ``--examples``):

* ``half step (ties away / to even)``: the Keras model alone, fed the pixels moved by
  that half step, against the Keras model on the true pixels (top-1 agreement): the
  answers the input grid alone changes;
* ``int8, pixels centred`` / ``int8, as before``: `to_tflite` int8 files with and
  without int8 rewrite 4 (`kronecker_zoo.export.int8_rewrites`: the centred pixels
  ``p - 128`` held exactly), each verified against Keras (`verify_tflite`): agreement
  and SQNR. Calibration: 256 seeded train images (`pretraining_calibration_data`).

    PYTHONPATH=. python experiments/int8_pixel_grid.py resnet_20_kron5x kron_resnet_8
"""

import argparse
import os
import sys
import tempfile
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from kronecker_zoo import data, models  # noqa: E402
from kronecker_zoo.export import (int8_rewrites, pretraining_calibration_data,  # noqa: E402
                                  to_tflite, verify_tflite)
from kronecker_zoo.tables import markdown_table  # noqa: E402


def half_step_pixels(images, ties):
    """``images`` (0..255) as the int8 grid of ``p / 127.5 - 1`` holds them:
    ``p - 127.5`` rounded (``"away"`` from zero or to ``"even"``), clipped to int8."""
    centred = np.asarray(images, np.float64) - 127.5
    rounded = (np.sign(centred) * np.floor(np.abs(centred) + 0.5) if ties == "away"
               else np.round(centred))
    return (np.clip(rounded, -128, 127) + 127.5).astype(np.float32)


def rows_for(name, images, labels):
    model = models.get(name, weights="fashion_mnist")
    reference = model.predict(images, batch_size=512, verbose=0).argmax(-1)
    rows = []
    for ties in ("away", "even"):
        moved = model.predict(half_step_pixels(images, ties), batch_size=512,
                              verbose=0).argmax(-1)
        rows.append([f"`{name}`", f"half step (ties {ties})",
                     f"{100 * np.mean(moved == reference):.2f}%", "-"])
    calibration = pretraining_calibration_data(name, "fashion_mnist")
    with tempfile.TemporaryDirectory() as tmp:
        for label, centred in (("int8, pixels centred", True), ("int8, as before", False)):
            with mock.patch.object(
                    int8_rewrites, "_pixel_rescaling_into_conv",
                    int8_rewrites._pixel_rescaling_into_conv if centred else
                    (lambda *args: None)):
                path = to_tflite(model, os.path.join(tmp, f"{centred}.tflite"),
                                 quantization="int8", representative_data=calibration)
            report = verify_tflite(model, path, images, labels)
            rows.append([f"`{name}`", label, f"{100 * report.agreement:.2f}%",
                         f"{report.sqnr_db:.1f} dB"])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help="published classifiers")
    parser.add_argument("--examples", type=int, default=None, help="first N test images")
    args = parser.parse_args(argv)
    images, labels = data.fashion_mnist("test")
    images = images.astype(np.float32)[:args.examples]
    labels = labels[:args.examples]
    rows = [row for name in args.names for row in rows_for(name, images, labels)]
    print(markdown_table(["model", "input", "top-1 agreement with Keras", "SQNR"], rows))


if __name__ == "__main__":
    main()
