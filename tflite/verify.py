"""Check a .tflite file against its Keras model on the real test set.

    python tflite/verify.py --model kron_resnet_8 --tflite kron_resnet_8_int8.tflite
    python tflite/verify.py --model context_net_basic --tflite ctx.tflite --examples 500

Runs the file with the LiteRT interpreter (batched to the file's fixed batch) and
the Keras model on the test split of the model's pretraining set (Fashion-MNIST /
Fashion scenes), prints the op check and the parity report (relative error, argmax
agreement, accuracies) and exits with status 1 if a threshold fails: float32 relative
error <= 1e-4, float16 <= 1e-2, int8/dynamic agreement >= 99% (classification) or
98% per pixel (segmentation). The quantization is read from the file.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kronecker_zoo import models  # noqa: E402
from kronecker_zoo.export import (  # noqa: E402
    check_tflite_ops,
    tflite_op_counts,
    verify_tflite,
)
from tflite import zoo  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--model", required=True, choices=models.list_models(), metavar="NAME")
    parser.add_argument("--weights", default="auto",
                        help="'auto' (default), 'none', a published tag or a .weights.h5 path "
                             "- the weights the file was exported with")
    parser.add_argument("--tflite", required=True, help="the .tflite file")
    parser.add_argument("--examples", type=int, default=None,
                        help="first N test images (default: the whole test split)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    weights = None if args.weights.lower() == "none" else args.weights
    counts = tflite_op_counts(args.tflite)
    print("ops:", ", ".join(f"{op} x{n}" for op, n in counts.items()))
    bad = check_tflite_ops(args.tflite, raise_error=False)
    print("op check:", "OK" if not bad else f"FAILED ({', '.join(bad)})")
    model = zoo.load_model(args.model, weights)
    images, labels = zoo.test_set(args.model, args.examples)
    report = verify_tflite(model, args.tflite, images, labels, num_threads=args.threads)
    print(report)
    return 0 if report.passed and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
