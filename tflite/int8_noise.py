"""Where does a published model's int8 export lose agreement with Keras?

    python tflite/int8_noise.py context_net_frontend --examples 256
    python tflite/int8_noise.py resnet_20_kron5x --calibration test:200

Prints, for the full-integer file `to_tflite` writes with ``bias_correction=False``
(calibrated as `int8_parity.py` does), each quantized op's RMS error in int8 steps of
its output (`int8_op_noise`; rounding alone is 0.29, ops clearly above it are marked),
then the argmax agreement with Keras of three files on the first ``--examples`` test
images: float32, int8 weights with float activations ("dynamic") and full int8. Every
op at the floor and "dynamic" near 100% mean the activations' rounding noise, accumulated
over the ops, is what flips the low-margin predictions: no op is badly calibrated (the
step sizes are what is left: the output range of `to_tflite(output_range=)` fixed
context_net_frontend's parity).

``--float-op-gain`` adds, per op, the int8 file's SQNR and agreement with that op alone
left in float32 (`int8_float_op_gain`; one conversion per op): the ops worth keeping
in float, or fixing.

    python tflite/int8_noise.py resnet_8 --examples 2000 --float-op-gain
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kronecker_zoo import models  # noqa: E402
from kronecker_zoo.export import (ROUNDING_FLOOR_STEPS, int8_float_op_gain,  # noqa: E402
                                  int8_op_noise, pretraining_calibration_data, to_tflite,
                                  verify_tflite)
from tflite import zoo  # noqa: E402
from tflite.int8_parity import calibration_spec  # noqa: E402

NOISY = 1.5 * ROUNDING_FLOOR_STEPS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("name", help="a model with published weights")
    parser.add_argument("--calibration", type=calibration_spec, default=("train", 256),
                        help="split:count of the pretraining set (default train:256)")
    parser.add_argument("--examples", type=int, default=256,
                        help="first N test images to measure on (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="which calibration images")
    parser.add_argument("--float-op-gain", action="store_true",
                        help="also: SQNR and agreement with each op alone left in float32")
    args = parser.parse_args(argv)
    if args.name not in models.list_models(pretrained=True):
        parser.error(f"no published weights for {args.name!r}")
    tag = zoo.default_weights(args.name)
    model = zoo.load_model(args.name, tag)
    split, count = args.calibration
    calibration = pretraining_calibration_data(args.name, tag, count=count, seed=args.seed,
                                               split=split)
    images, labels = zoo.test_set(args.name, args.examples)
    print(f"{args.name} ({tag}), int8 calibrated on {count} {split} images, "
          f"{len(images)} test images")
    print(f"per-op noise, RMS in int8 steps (rounding alone: {ROUNDING_FLOOR_STEPS:.2f}):")
    for op in int8_op_noise(model, calibration, images):
        mark = "  <-- above the floor" if op.rmse_steps > NOISY else ""
        print(f"  {op}{mark}")
    with tempfile.TemporaryDirectory() as tmp:
        for quantization in (None, "dynamic", "int8"):
            path = os.path.join(tmp, f"{quantization}.tflite")
            # int8 as the per-op numbers see it: plain post-training, biases uncorrected
            extra = ({"representative_data": calibration, "bias_correction": False}
                     if quantization == "int8" else {})
            to_tflite(model, path, quantization=quantization, **extra)
            report = verify_tflite(model, path, images, labels)
            print(f"{quantization or 'float32':>8}: {100 * report.agreement:.2f}% agreement, "
                  f"SQNR {report.sqnr_db:.1f} dB")
    if args.float_op_gain:
        print("int8 with one op left in float32 (SQNR, agreement with Keras):")
        for row in int8_float_op_gain(model, calibration, images):
            print(f"  {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
