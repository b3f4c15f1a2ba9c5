"""Factorization plans capped by LiteRT's cost model against the low-rank and uncapped plans.

    python benchmarks/capped_plans_litert.py resnet_20 --ratio 10 --caps 0.5 0.4 0.3

For a pretrained zoo teacher, `plan_factorization` at ``--ratio``: the low-rank plan,
the uncapped Kronecker plan, and Kronecker plans with ``max_relative_cost=cap,
runtime=--runtime`` (each layer's factored cost on LiteRT, float32 or int8, at most
``cap`` of its dense cost, as `kronecker_zoo.ops` prices it). Each is exported (float32 and int8, 256
training images as calibration, ``execution="planned"``) straight from `factorize`, before
any training: latency does not depend on the weights, and the plans' mean relative
approximation error is what fine-tuning starts from. Timed side by side in interleaved
rounds (`benchmark_tflite_interleaved`, 1 thread, batch 1). Wall-clock: keep the
machine idle.
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from kronecker_zoo import data, models, runtime  # noqa: E402
from kronecker_zoo.compress import factorize, plan_factorization  # noqa: E402
from kronecker_zoo.export import to_tflite, tflite_op_counts  # noqa: E402
from kronecker_zoo.export.runner import benchmark_tflite_interleaved  # noqa: E402

SHOWN_OPS = ("TRANSPOSE", "DEPTHWISE_CONV_2D")


def plans(teacher, ratio, caps, exclude, runtime="litert"):
    """``{label: plan}``: low rank, uncapped Kronecker, Kronecker capped on ``runtime``."""
    result = {"low rank": plan_factorization(teacher, ratio, "lowrank", exclude),
              "Kronecker": plan_factorization(teacher, ratio, "kronecker", exclude)}
    for cap in caps:
        result[f"Kronecker, {runtime} cost <= {cap:g}"] = plan_factorization(
            teacher, ratio, "kronecker", exclude, max_relative_cost=cap, runtime=runtime)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("--ratio", type=float, default=10.0)
    parser.add_argument("--caps", type=float, nargs="+", default=[0.5, 0.4, 0.3])
    parser.add_argument("--runtime", default="litert", choices=["litert", "litert_int8"],
                        help="the cost model that prices the capped plans")
    parser.add_argument("--exclude", nargs="*", default=["stem_conv", "predictions"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    teacher = models.get(args.teacher, weights="fashion_mnist")
    calibration = data.fashion_mnist("train")[0][:256]
    chosen = plans(teacher, args.ratio, args.caps, args.exclude, args.runtime)
    students = {"teacher": teacher}
    students.update({label: factorize(teacher, plan=plan) for label, plan in chosen.items()})
    with tempfile.TemporaryDirectory() as directory:
        paths = {}
        for label, model in students.items():
            for quantization in (None, "int8"):
                path = os.path.join(directory, f"{len(paths)}.tflite")
                to_tflite(model, path, quantization=quantization,
                          representative_data=calibration if quantization else None,
                          execution="planned")
                paths[label, quantization] = path
        times = benchmark_tflite_interleaved(list(paths.values()), threads=(1,),
                                             rounds=args.rounds, runs=args.runs)
        print(f"# {runtime.describe()}; LiteRT XNNPACK, batch 1, 1 thread, execution='planned'; "
              f"median of {args.rounds} interleaved rounds of {args.runs} runs")
        print(f"# {args.teacher} at ratio {args.ratio:g}, excluding {args.exclude}; plans "
              "before training (factorize of the pretrained teacher)")
        print("| plan | params | MACs | mean rel. error | layers kept dense | float32 ms | "
              "int8 ms | float32 ops |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for label, model in students.items():
            plan = chosen.get(label)
            error = "-" if plan is None else f"{np.mean([c.relative_error for c in plan.layers]):.3f}"
            kept = "-" if plan is None else str(sum(
                s.reason != "excluded by the caller" for s in plan.skipped))
            macs = "-" if plan is None else f"{plan.macs_after / 1e6:.2f}M"
            counts = tflite_op_counts(paths[label, None])
            ops = ", ".join(f"{counts[k]} {k}" for k in SHOWN_OPS if counts.get(k)) or "-"
            print(f"| {label} | {model.count_params():,} | {macs} | {error} | {kept} | "
                  f"{times[paths[label, None]][1]:.3f} | {times[paths[label, 'int8']][1]:.3f} "
                  f"| {ops} |")


if __name__ == "__main__":
    main()
