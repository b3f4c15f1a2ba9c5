"""The `kronecker-zoo` console command (also `python -m kronecker_zoo`).

    kronecker-zoo list [--task classification|segmentation] [--pretrained]
    kronecker-zoo info NAME [--input-shape 28,28,1] [--format text|markdown|json] [--all-layers]
    kronecker-zoo compare NAME [NAME ...] [--input-shape ...] [--format ...]
"""

import argparse
import os
import sys


def _input_shape(text):
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHT,WIDTH,CHANNELS (positive ints), got {text!r}")
    return shape


def _parser():
    parser = argparse.ArgumentParser(
        prog="kronecker-zoo", description="Kronecker-factored model zoo for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list registered models")
    p.add_argument("--task", choices=("classification", "segmentation"))
    p.add_argument("--pretrained", action="store_true", help="only models with weights")
    for name, helptext in (("info", "parameter report of one model"),
                           ("compare", "models side by side")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("names", nargs=1 if name == "info" else "+", metavar="NAME")
        p.add_argument("--input-shape", type=_input_shape,
                       help="HEIGHT,WIDTH,CHANNELS (default: the model's)")
        p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
        if name == "info":
            p.add_argument("--all-layers", action="store_true",
                           help="also show layers without weights or MACs")
    return parser


def _stdout_to_devnull():
    """After a broken pipe: point stdout at /dev/null so the exit flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # stdout without a file descriptor
        pass


def main(argv=None):
    """Run the command; 0 on success, 2 on a usage or model error, 1 if the reader of
    stdout went away (e.g. ``| head -1``), quietly, as Python's docs recommend."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kronecker_zoo import models, report

    try:
        if args.command == "list":
            for name in models.list_models(args.task, pretrained=args.pretrained):
                s = models.spec(name)
                tags = ", ".join(models.registry.weight_registry.published(name)) or "-"
                print(f"{name:26s} {s.task:15s} weights: {tags:16s} {s.description}")
        elif args.command in ("info", "compare"):
            built = [models.get(n, input_shape=args.input_shape) for n in args.names]
            if args.command == "compare":
                print(report.compare(built, format=args.format))
            else:
                r = report.parameter_report(built[0])
                if args.format == "json":
                    print(r.to_json())
                elif args.format == "markdown":
                    print(r.to_markdown(all_layers=args.all_layers))
                else:
                    print(r.to_text(all_layers=args.all_layers))
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
    except BrokenPipeError:
        _stdout_to_devnull()
        return 1
    except (ValueError, ImportError, OSError) as error:
        print(f"kronecker-zoo: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
