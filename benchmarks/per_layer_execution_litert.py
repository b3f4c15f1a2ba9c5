"""A student exported with some Kronecker layers materialised, against all factored and a twin.

    python benchmarks/per_layer_execution_litert.py resnet_20_kron5x_lowmac_plain \\
        --materialize stage2_block1_conv1 --twin resnet_20_lowrank5x_plain

`benchmarks/student_layers_litert.py` finds the layers that run faster materialised; this
exports the whole model (float32 and int8, published weights, int8 calibrated with
`pretraining_calibration_data`) with every Kronecker layer factored, as
``execution="planned"`` materialises them (LiteRT's cost model), with the
``--materialize`` layers materialised (``to_tflite(..., execution={name:
"materialized"})``), and ``--twin`` as it is; checks each file against Keras on the
first ``--examples`` test images and times them interleaved (``--rounds`` rounds of
`benchmark_tflite`, 1 and 2 threads; min and median of the rounds' medians). Wall-clock: keep the machine idle.
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from kronecker_zoo import data, models, runtime  # noqa: E402
from kronecker_zoo.export import (  # noqa: E402
    benchmark_tflite,
    pretraining_calibration_data,
    to_tflite,
    verify_tflite,
)
from kronecker_zoo.export.execution import describe_execution  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--materialize", nargs="+", default=None, metavar="LAYER")
    parser.add_argument("--twin", default=None)
    parser.add_argument("--weights", default="fashion_mnist")
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    x, y = data.fashion_mnist("test")
    x, y = x[:args.examples].astype("float32"), y[:args.examples]
    ways = [(args.model, "factored"), (args.model, "planned")]
    if args.materialize:
        ways.append((args.model, {name: "materialized" for name in args.materialize}))
    if args.twin:
        ways.append((args.twin, "factored"))
    print(runtime.describe())
    files = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, execution in ways:
            model = models.get(name, weights=args.weights)
            calibration = pretraining_calibration_data(name, args.weights)
            for precision in ("float32", "int8"):
                extra = ({"quantization": "int8", "representative_data": calibration}
                         if precision == "int8" else {})
                info = to_tflite(model, os.path.join(folder, f"{len(files)}.tflite"),
                                 execution=execution, **extra)
                report = verify_tflite(model, info, x, labels=y)
                if isinstance(execution, dict):
                    how = f"materialised: {', '.join(sorted(execution))}"
                elif execution == "planned":
                    how = f"planned ({describe_execution(info.execution)})"
                else:
                    how = "all factored" if info.kronecker_layers else "as published"
                key = f"{name}, {precision}, {how}"
                print(f"{key}: {info.size_bytes:,} B, agreement with Keras "
                      f"{report.agreement:.2%}", flush=True)
                files[key] = info
        samples = {key: {1: [], 2: []} for key in files}
        for _ in range(args.rounds):
            for key, info in files.items():
                latency = benchmark_tflite(info, threads=(1, 2), runs=100, warmup=20)
                for threads in (1, 2):
                    samples[key][threads].append(latency[threads]["median_ms"])
    print()
    for key, by_threads in samples.items():
        print(f"{key}: " + "; ".join(
            f"{t} thread{'s' if t > 1 else ''}: min {min(v):.3f}, median {np.median(v):.3f} ms"
            for t, v in by_threads.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
