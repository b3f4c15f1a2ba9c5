"""The context-module ablation (markdown) from finished runs: one front end, same budget.

    python training/context_ablation_table.py
    python training/context_ablation_table.py --extra study_context_net_basic_lr2e-4

Yu & Koltun's ablation on the fashion scenes: the front end alone, + basic, + large
context module, and their Kronecker twins. Every row starts from the same trained front
end (``training/runs/context_front_end``, recipe ``configs/context_front_end.json``) and
trains for the same epochs (``init_from``), so the front-end row is that front end trained
on for as long as the others; the learning rate column says where a recipe differs.
Reads each run's ``result.json`` and ``config.json`` (whole test split) and prints
parameters, MACs, learning rate, pixel accuracy, mIoU and the mIoU change against the
front end alone trained for as many joint epochs (a ``context_net_frontend`` run among the
rows, e.g. ``--extra study_context_net_frontend_e4`` for 4-epoch rows; of the same seed
where one is listed, else the first listed; "-" where none is); rows whose run has not
finished say so. ``--extra`` appends other runs from the same front end (e.g. a study at
another learning rate).
"""

import argparse
import json
import os
import sys

from kronecker_zoo import data, evaluation
from kronecker_zoo.tables import markdown_table

RUNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs")
SHARED_FRONT_END = "context_front_end"
ROWS = ("context_net_frontend", "context_net_basic", "context_net_large",
        "kron_context_net_basic", "kron_context_net_large")


def _result(run, file="result.json"):
    path = os.path.join(RUNS, run, file)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _is_front_end(run, result, config):
    """A run of the front end alone: by its result's model, else its recipe's, else its name."""
    return (result.get("model") or (config or {}).get("model") or run) == ROWS[0]


def table(extra=()):
    header = ["model", "epochs (front end + joint)", "params", "MACs", "learning rate",
              "pixel accuracy", "mIoU", "mIoU vs front end (same epochs)"]
    shared = _result(SHARED_FRONT_END)
    runs = ROWS + tuple(extra)
    results = {run: _result(run) for run in runs}
    configs = {run: _result(run, "config.json") for run in runs}
    # The front end alone trained as long (joint epochs): of the same seed where such a run
    # is listed, else the first listed.
    front_by_seed, front_by_epochs = {}, {}
    for run in runs:
        r, config = results[run], configs[run]
        if r is not None and _is_front_end(run, r, config):
            front_by_seed.setdefault((r["epochs"], (config or {}).get("seed")), r["test_miou"])
            front_by_epochs.setdefault(r["epochs"], r["test_miou"])
    lines = []
    for run in runs:
        r = results[run]
        if r is None:
            partial = os.path.isdir(os.path.join(RUNS, run + ".partial"))
            if run in extra and not partial:
                raise ValueError(f"no run {run!r} under {RUNS}")
            lines.append([f"`{run}`", "-", "-", "-", "-", "-", "-",
                          "training (resumable)" if partial else "not run"])
            continue
        if r.get("init_from", {}).get("run", "").rstrip("/").split("/")[-1] != SHARED_FRONT_END:
            raise ValueError(f"{run} did not start from {SHARED_FRONT_END}: not an ablation row")
        config = configs[run]
        if config is None:
            raise ValueError(f"{run} has a result.json but no config.json: not a train.py run")
        front = front_by_seed.get((r["epochs"], config.get("seed")),
                                  front_by_epochs.get(r["epochs"]))
        delta = ("-" if _is_front_end(run, r, config) or front is None
                 else f"{100 * (r['test_miou'] - front):+.2f}")
        epochs = f"{shared['epochs'] if shared else '?'} + {r['epochs']}"
        lr = config["learning_rate"]
        lines.append([f"`{run}`", epochs, f"{r['params']:,}", f"{r['macs'] / 1e6:.2f}M",
                      f"{lr:g}", f"{100 * r['test_accuracy']:.2f}%", f"{100 * r['test_miou']:.2f}%", delta])
    images, masks = data.fashion_scenes("test")
    trivial = evaluation.trivial_segmentation_baselines(images, masks, 11)
    note = ", ".join(f"{k} {100 * v:.2f}%" for k, v in trivial.items())
    return markdown_table(header, lines) + f"\n\nTrivial baselines (test mIoU): {note}."


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", nargs="*", default=[], metavar="RUN",
                        help="other runs under training/runs from the same front end")
    args = parser.parse_args(argv)
    print(table(args.extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
