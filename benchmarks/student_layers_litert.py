"""Where a compressed student spends its LiteRT time, layer by layer, against a twin.

    python benchmarks/student_layers_litert.py resnet_20_kron5x_lowmac resnet_20_lowrank5x
    python benchmarks/student_layers_litert.py resnet_20_kron5x_lowmac resnet_20_lowrank5x \\
        --precision int8 --input-size 224,224

Every convolution of ``student`` and the layer of the same name in ``twin`` (e.g. the
low-rank student of the same teacher and size) is exported alone, at the input shape it
sees in the model (batch 1), as LiteRT float32 or int8 (calibrated on 32 random
activations, no bias correction: only time is measured), and run with XNNPACK at one
thread; the pairs are timed interleaved (median of ``--repeats``). A Kronecker layer is
also timed materialised (one CONV_2D with its full kernel, the execution an exporter could
choose for it at the cost of a larger file). Each row: the layer, its plan, the ops of its
file, the three times and the student / twin ratio; the last row sums them. Then the
per-layer ``execution`` to give `to_tflite` for the layers that ran more than 5% faster
materialised on this machine. Layers the
two models share exactly (same class and configuration) are listed once, not timed.
Wall-clock: keep the machine idle.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kronecker_zoo import models, runtime  # noqa: E402
from kronecker_zoo.export import to_tflite  # noqa: E402
from kronecker_zoo.export.runner import TFLiteRunner  # noqa: E402
from kronecker_zoo.tables import markdown_table  # noqa: E402

CONVOLUTIONS = ("Conv2D", "KroneckerConv2D", "LowRankConv2D")


def layer_alone(layer, input_shape, **overrides):
    """A one-layer model running a copy of ``layer`` (its weights) on ``input_shape``."""
    config = dict(layer.get_config(), **overrides)
    copy = layer.__class__.from_config(config)
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, copy(inputs))
    copy.set_weights(layer.get_weights())
    return model


def litert_timer(model, precision, execution):
    """``(run, ops)``: a function timing one invoke (seconds) and the file's op names."""
    shape = (1,) + tuple(model.input_shape[1:])
    rng = np.random.default_rng(0)
    int8 = {}
    if precision == "int8":
        data = np.maximum(rng.standard_normal((32,) + shape[1:]), 0).astype("float32")
        int8 = {"quantization": "int8", "representative_data": data,
                "bias_correction": False}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "layer.tflite")
        export = to_tflite(model, path, execution=execution, **int8)
        runner = TFLiteRunner(path, num_threads=1)
    runner.invoke(np.maximum(rng.standard_normal(shape), 0).astype("float32"))
    invoke = runner.interpreter.invoke

    def run():
        start = time.perf_counter()
        invoke()
        return time.perf_counter() - start

    for _ in range(10):
        run()
    ops = sorted(set(export.ops) - {"QUANTIZE", "DEQUANTIZE"})
    return run, ops


def plan_string(layer):
    name = layer.__class__.__name__
    if name == "KroneckerConv2D":
        factors = " (x) ".join(f"({f[0]}x{f[1]}, {f[2]}->{f[3]})" for f in layer.factors)
        return f"{factors} r{layer.rank}"
    if name == "LowRankConv2D":
        return f"low rank r{layer.rank}"
    return f"dense {layer.kernel_size[0]}x{layer.kernel_size[1]}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student")
    parser.add_argument("twin")
    parser.add_argument("--precision", choices=("float32", "int8"), default="int8")
    parser.add_argument("--input-size", default=None,
                        help="H,W of the models' input (default: as built, 28x28)")
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args(argv)
    size = None
    if args.input_size:
        size = tuple(int(v) for v in args.input_size.split(","))
    student, twin = (models.get(name, input_shape=size + (1,) if size else None)
                     for name in (args.student, args.twin))
    twin_layers = {layer.name: layer for layer in twin.layers}
    print(runtime.describe())
    print(f"LiteRT {args.precision}, XNNPACK, 1 thread, batch 1, median of {args.repeats} "
          f"interleaved runs; {args.student} against {args.twin}")
    rows, totals, shared, faster_materialized = [], np.zeros(3), [], []
    for layer in student.layers:
        other = twin_layers.get(layer.name)
        if layer.__class__.__name__ not in CONVOLUTIONS or other is None:
            continue
        if (other.__class__ is layer.__class__
                and other.get_config() == layer.get_config()):
            shared.append(layer.name)
            continue
        shape = tuple(int(d) for d in layer.input.shape[1:])
        runs = {"student": litert_timer(layer_alone(layer, shape), args.precision, "factored"),
                "twin": litert_timer(layer_alone(other, shape), args.precision, "factored")}
        if layer.__class__.__name__ == "KroneckerConv2D":
            runs["materialized"] = litert_timer(
                layer_alone(layer, shape, execution="materialized"), args.precision,
                "as_built")
        samples = {key: [] for key in runs}
        for _ in range(args.repeats):
            for key, (run, _) in runs.items():
                samples[key].append(run())
        ms = {key: float(np.median(v)) * 1000 for key, v in samples.items()}
        row = [ms["student"], ms["twin"], ms.get("materialized", ms["student"])]
        if row[2] < 0.95 * row[0]:
            faster_materialized.append(layer.name)
        totals += row
        rows.append([layer.name, f"{shape[0]}x{shape[1]}x{shape[2]}", plan_string(layer),
                     " ".join(runs["student"][1]), plan_string(other),
                     f"{row[0]:.4f}", f"{row[1]:.4f}", f"{row[2]:.4f}",
                     f"{row[0] / row[1]:.2f}"])
    rows.append(["total", "", "", "", "", f"{totals[0]:.4f}", f"{totals[1]:.4f}",
                 f"{totals[2]:.4f}", f"{totals[0] / totals[1]:.2f}"])
    print()
    print(markdown_table(["layer", "input", "student plan", "student ops", "twin plan",
                          "student ms", "twin ms", "student materialised ms",
                          "student / twin"], rows, left=5))
    if shared:
        print(f"\nidentical in both (not timed): {', '.join(shared)}")
    if faster_materialized:  # what to pass to to_tflite on this device
        choice = {name: "materialized" for name in faster_materialized}
        print(f"\nfaster materialised here (by more than 5%): to_tflite(..., "
              f"execution={choice!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
