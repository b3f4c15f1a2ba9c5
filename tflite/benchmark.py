"""LiteRT latency of .tflite files, or a side-by-side comparison of registry models.

    python tflite/benchmark.py --tflite kron_resnet_8_int8.tflite resnet_8_int8.tflite
    python tflite/benchmark.py --compare kron_resnet_8 resnet_8
    python tflite/benchmark.py --compare kron_resnet_8 resnet_8 --examples 1000 --runs 50
    python tflite/benchmark.py --compare resnet_8 resnet_8_kron5x --input-size 224,224
    python tflite/benchmark.py --compare resnet_8 resnet_8_kron5x --execution factored planned

Latency: median over --runs invokes (after --warmup untimed ones) of the LiteRT
interpreter with its default XNNPACK delegate, at each of --threads (default 1 and 2).
--compare exports every model in float32 and int8 (published weights where there are),
verifies both against Keras on the test set and prints a Markdown table: file size,
latency per thread count, accuracy of the Keras model and of each export; exit status 1
when an export fails its parity check with Keras (the failures named on stderr).
Timings are wall-clock on this machine: other busy processes inflate them.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kronecker_zoo.export import benchmark_tflite, tflite_quantization  # noqa: E402
from kronecker_zoo.tables import markdown_table  # noqa: E402
from tflite import zoo  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--tflite", nargs="+", metavar="FILE", help=".tflite files to time")
    what.add_argument("--compare", nargs="+", metavar="NAME",
                      help="registry models to export, verify and time side by side")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--examples", type=int, default=None,
                        help="--compare: first N test images for accuracy (default: all)")
    parser.add_argument("--out-dir", default=None,
                        help="--compare: keep the .tflite files here (default: discard)")
    parser.add_argument("--input-size", type=_size, default=None, metavar="H,W",
                        help="--compare: export and time at H x W (e.g. 224,224); test and "
                             "calibration images are resized to it (nearest neighbour)")
    parser.add_argument("--execution", nargs="+", default=["factored"],
                        choices=("factored", "planned"),
                        help="--compare: Kronecker layers all factored (default), or "
                             "materialised where LiteRT's cost model finds that faster; "
                             "both: one column per execution, timed side by side")
    return parser


def _size(text):
    parts = text.replace("x", ",").split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected H,W (positive ints), got {text!r}")
    return tuple(int(p) for p in parts)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.tflite:
        body = []
        for path in args.tflite:
            result = benchmark_tflite(path, threads=args.threads, runs=args.runs,
                                      warmup=args.warmup)
            body.append([os.path.basename(path), tflite_quantization(path),
                         f"{os.path.getsize(path) / 1024:.1f} KiB"]
                        + [f"{result[t]['median_ms']:.3f} ms" for t in args.threads])
        print(markdown_table(["file", "quantization", "size"] + [
            f"{t} thread{'s' if t > 1 else ''}" for t in args.threads], body, left=2))
        return 0
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
    rows = zoo.compare_litert(args.compare, threads=args.threads, runs=args.runs,
                              warmup=args.warmup, examples=args.examples,
                              directory=args.out_dir, verbose=True, input_hw=args.input_size,
                              execution=args.execution)
    print()
    print(zoo.litert_table(rows))
    failed = [f"{r.get('column', r['model'])} {r['quantization']} "
              f"({100 * r['agreement']:.2f}% agreement, relative error {r['rel_error']:.2g})"
              for r in rows if not r["passed"]]
    if failed:
        print("parity with Keras FAILED: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
