"""Export a registry model to a fixed-batch LiteRT (.tflite) file.

    python tflite/convert.py --model kron_resnet_8 --weights fashion_mnist \
        --quantization int8 --out kron_resnet_8_int8.tflite
    python tflite/convert.py --model context_net_basic --out ctx.tflite --verify 256

Kronecker layers are exported factored, the batch is fixed (--batch-size, default 1),
only builtin LiteRT ops are allowed, and an existing file is kept unless --overwrite.
"int8" is full-integer with float32 input/output, calibrated on the model's pretraining
images (--calibration-examples of them). Prints the file's size and ops; --verify N
also compares it with the Keras model on N test images (exit status 1 if it fails).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run from a checkout: prefer the library next to this folder over an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kronecker_zoo import models  # noqa: E402
from kronecker_zoo.export import to_tflite, verify_tflite  # noqa: E402
from kronecker_zoo.export import tflite as tflite_export  # noqa: E402
from kronecker_zoo.export import zoo  # noqa: E402

QUANTIZATION_CHOICES = ("float32", "float16", "dynamic", "int8")


def weights_arg(value):
    """'auto' (published weights if any), 'none' (fresh), a tag or a .weights.h5 path."""
    return None if value.lower() == "none" else value


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--model", required=True, choices=models.list_models(), metavar="NAME",
                        help="registry name, e.g. kron_resnet_8")
    parser.add_argument("--weights", default="auto", type=weights_arg,
                        help="'auto' (published weights of its pretraining set, else fresh), "
                             "'none', a published tag or a .weights.h5 path")
    parser.add_argument("--quantization", default="float32", choices=QUANTIZATION_CHOICES)
    parser.add_argument("--out", required=True, help="the .tflite file to write")
    parser.add_argument("--batch-size", type=int, default=1, help="fixed batch (default 1)")
    parser.add_argument("--calibration-examples", type=int,
                        default=tflite_export.DEFAULT_CALIBRATION_EXAMPLES,
                        help="pretraining images calibrating int8 (default %(default)s)")
    parser.add_argument("--execution", default="factored",
                        choices=("factored", "materialized", "as_built"),
                        help="Kronecker layers: factored (default) or materialized kernels")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--verify", type=int, default=0, metavar="N",
                        help="also verify against Keras on N test images (0: skip)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    quantization = None if args.quantization == "float32" else args.quantization
    model = zoo.load_model(args.model, args.weights)
    representative = None
    if quantization == "int8":
        representative = tflite_export.default_representative_data(
            model, count=args.calibration_examples)
    try:
        info = to_tflite(model, args.out, quantization=quantization,
                         representative_data=representative, batch_size=args.batch_size,
                         overwrite=args.overwrite, execution=args.execution)
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(info.summary())
    print("op check: OK (builtin ops only, no SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND)")
    if args.verify:
        images, labels = zoo.test_set(args.model, args.verify)
        report = verify_tflite(model, info, images, labels)
        print(report)
        return 0 if report.passed else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
