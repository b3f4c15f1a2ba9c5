"""Run the seed note's claims as experiments; numbers (JSON) and figures (PNG) into one folder.

    python experiments/run_all.py                      # all six, into docs/experiments
    python experiments/run_all.py pareto borders --out /tmp/exp --tiny

Experiments, in the order of the README's "What the experiments show":
cascade_identity, kronecker_expressivity, parameter_scaling, translation_equivariance,
borders, pareto. Each is also runnable alone: ``python experiments/<name>.py --out DIR``.
"""

import argparse
import importlib
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

EXPERIMENTS = ("cascade_identity", "kronecker_expressivity", "parameter_scaling",
               "translation_equivariance", "borders", "pareto")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"experiments to run (default: all): {', '.join(EXPERIMENTS)}")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "experiments"))
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (seconds; for tests)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; choose from {', '.join(EXPERIMENTS)}")
    os.makedirs(args.out, exist_ok=True)
    for name in args.names or EXPERIMENTS:
        start = time.time()
        module = importlib.import_module(f"experiments.{name}")
        result = module.run(args.out, tiny=args.tiny)
        print(f"== {name} ({time.time() - start:.0f} s): {result.get('finding', '')}")
        print(f"   figures: {', '.join(result.get('figures', []))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
