"""What every experiment shares: its JSON file and its command line.

Each ``experiments/<name>.py`` has ``run(out_dir, tiny=False) -> dict`` (writing
``<out_dir>/<name>.json`` with `write_json` and its PNGs) and a ``main`` made by
`command` (or built on `parser` and `report` where it has options of its own).
"""

import argparse
import json
import os


def write_json(out_dir, name, result):
    """Write ``result`` to ``<out_dir>/<name>.json`` (indented, sorted keys); return it."""
    with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")
    return result


def parser(doc):
    """An argument parser with ``--out`` (default ``docs/experiments``) and ``--tiny``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--out", default="docs/experiments", help="output folder")
    p.add_argument("--tiny", action="store_true", help="small, fast run (tests)")
    return p


def report(out_dir, name, result):
    """Print an experiment's finding and the files it wrote."""
    print(result["finding"])
    print("wrote", os.path.join(out_dir, f"{name}.json"), *result["figures"])


def command(doc, name, run, scenes=None):
    """The ``main(argv=None)`` of an experiment: ``--out`` and ``--tiny`` (and ``--scenes``
    when ``scenes`` is its ``(full, tiny)`` default counts), then ``run`` and `report`."""

    def main(argv=None):
        cli = parser(doc)
        extra = {}
        if scenes is not None:
            cli.add_argument("--scenes", type=int, default=None,
                             help=f"number of test scenes (default {scenes[0]}, tiny {scenes[1]})")
        args = cli.parse_args(argv)
        if scenes is not None:
            extra["num_scenes"] = args.scenes
        report(args.out, name, run(args.out, tiny=args.tiny, **extra))

    return main
