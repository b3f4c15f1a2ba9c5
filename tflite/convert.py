"""Export a registry model to a fixed-batch LiteRT (.tflite) file.

    python tflite/convert.py --model kron_resnet_8 --weights fashion_mnist \
        --quantization int8 --out kron_resnet_8_int8.tflite
    python tflite/convert.py --model context_net_basic --out ctx.tflite --verify 256
    python tflite/convert.py --model kron_resnet_8 --weights mine.weights.h5 \
        --quantization int8 --calibration-data my_images.npy --out mine_int8.tflite
    python tflite/convert.py --model resnet_20_kron5x_lowmac_plain --quantization int8 \
        --materialize stage2_block1_conv1 --out lowmac_int8.tflite

Kronecker layers are exported factored, the batch is fixed (--batch-size, default 1),
only builtin LiteRT ops are allowed, and an existing file is kept unless --overwrite;
--materialize LAYER... stores those Kronecker layers' full kernels instead (the layers
`benchmarks/student_layers_litert.py` finds faster that way on the device);
--execution planned lets LiteRT's calibrated cost model pick those layers.
"int8" is full-integer with float32 input/output, calibrated on --calibration-data
(a .npy array of raw 0..255 images, N x H x W [x C]); with published weights and no
--calibration-data, on --calibration-examples of their pretraining images. Prints the
file's size and ops; --verify N also compares it with the Keras model on N test
images (exit status 1 if it fails).
"""

import argparse
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run from a checkout: prefer the library next to this folder over an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kronecker_zoo import models  # noqa: E402
from kronecker_zoo.export import (  # noqa: E402
    FORCED_EXECUTIONS,
    pretraining_calibration_data,
    tflite_ops_by_layer,
    to_tflite,
    verify_tflite,
)
from kronecker_zoo.export.calibration import DEFAULT_CALIBRATION_EXAMPLES  # noqa: E402
from kronecker_zoo.export.signature import check_output_file  # noqa: E402
from tflite import zoo  # noqa: E402

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
    parser.add_argument("--calibration-data", metavar="FILE.npy",
                        help="int8: images calibrating it, raw 0..255 pixels (default: the "
                             "pretraining images of published --weights)")
    parser.add_argument("--calibration-examples", type=int,
                        default=DEFAULT_CALIBRATION_EXAMPLES,
                        help="int8 without --calibration-data: pretraining images used "
                             "(default %(default)s)")
    parser.add_argument("--execution", default="factored",
                        choices=FORCED_EXECUTIONS,
                        help="Kronecker layers: factored (default), materialized kernels, "
                             "as built, or planned (factored except the layers LiteRT's "
                             "cost model finds faster materialised)")
    parser.add_argument("--materialize", nargs="+", metavar="LAYER",
                        help="materialise only these Kronecker layers, the others factored "
                             "(e.g. those benchmarks/student_layers_litert.py finds faster "
                             "materialised on the device)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--verify", type=int, default=0, metavar="N",
                        help="also verify against Keras on N test images (0: skip)")
    parser.add_argument("--ops-per-layer", action="store_true",
                        help="list the file's ops per Keras layer (what each layer costs)")
    return parser


def calibration_data(args, weights):
    """The int8 calibration images: --calibration-data, else published weights' own."""
    if args.calibration_data:
        return np.load(args.calibration_data)
    if weights is None or weights.endswith(".weights.h5"):
        raise ValueError(
            f"--quantization int8 with --weights {args.weights or 'none'} needs "
            "--calibration-data FILE.npy (images as the model sees them, raw 0..255 "
            "pixels): only published weights come with calibration images.")
    return pretraining_calibration_data(args.model, weights, count=args.calibration_examples)


def _exists(out):
    print(f"error: {out!r} already exists; not replacing it. Pass --overwrite to replace "
          "it, or choose another --out.", file=sys.stderr)
    return 2


def main(argv=None):
    args = build_parser().parse_args(argv)
    quantization = None if args.quantization == "float32" else args.quantization
    try:  # before the (slow) conversion
        check_output_file(args.out, args.overwrite)
    except FileExistsError:
        return _exists(args.out)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.calibration_data and quantization != "int8":
        print("error: --calibration-data calibrates --quantization int8 only.", file=sys.stderr)
        return 2
    execution = args.execution
    if args.materialize:
        if args.execution != "factored":
            print("error: --materialize names the layers to materialise, the others "
                  f"factored; it does not combine with --execution {args.execution}.",
                  file=sys.stderr)
            return 2
        execution = {name: "materialized" for name in args.materialize}
    weights = zoo.default_weights(args.model) if args.weights == "auto" else args.weights
    try:
        model = zoo.load_model(args.model, weights)
        representative = calibration_data(args, weights) if quantization == "int8" else None
        info = to_tflite(model, args.out, quantization=quantization,
                         representative_data=representative, batch_size=args.batch_size,
                         overwrite=args.overwrite, execution=execution)
    except FileExistsError:
        return _exists(args.out)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(info.summary())
    print("op check: OK (builtin ops only, no SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND)")
    if args.ops_per_layer:
        by_layer = tflite_ops_by_layer(info, [layer.name for layer in model.layers])
        for layer, ops in by_layer.items():
            print(f"  {layer:32s} " + ", ".join(f"{op} x{n}" if n > 1 else op
                                                 for op, n in ops.items()))
    if args.verify:
        images, labels = zoo.test_set(args.model, args.verify)
        report = verify_tflite(model, info, images, labels)
        print(report)
        return 0 if report.passed else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
