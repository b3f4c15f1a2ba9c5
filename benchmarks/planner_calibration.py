"""Calibrate the execution planner's cost model: measured time of each lowering.

    python benchmarks/planner_calibration.py --runtime litert        # LiteRT/XNNPACK, batch 1
    python benchmarks/planner_calibration.py --runtime litert_int8   # the same, int8 files
    python benchmarks/planner_calibration.py --runtime tensorflow    # tf.function, batch 64
    KERAS_BACKEND=jax python benchmarks/planner_calibration.py --runtime jax

For every distinct two-factor `KroneckerConv2D` of the given models (default: the zoo's
Kronecker students) and the headline 9x9 layer, one single-layer model per lowering
("batch": channel axes folded into the batch, transposes around the steps; "channels":
grouped/depthwise convolution and ``F (x) I``, no data moved) is timed, interleaved.
A relative least-squares fit ``time = a * plain MACs + g * grouped MACs + b * moved + c``
(grouped: MACs of grouped/depthwise convolutions; moved: elements the transposes move)
gives the weights ``g / a`` and ``b / a`` that `kronecker_zoo.ops.COST_WEIGHTS` holds for
that runtime. The table shows, per layer, both times, which is faster, and what
``lowering="auto"`` picks with the current constant. Wall-clock: keep the machine idle.
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
from kronecker_zoo import ops as kz_ops  # noqa: E402
from kronecker_zoo.layers import KroneckerConv2D  # noqa: E402
from kronecker_zoo.tables import markdown_table  # noqa: E402

HEADLINE = ([(3, 3, 8, 8), (3, 3, 8, 8)], 1, (1, 1), (64, 64, 64))
DEFAULT_MODELS = ("resnet_8_kron5x", "resnet_20_kron5x", "kron_resnet_8")


def layer_cases(names):
    """Distinct (factors, rank, strides, input (H, W, C)) of the models' 2-factor layers."""
    cases = [HEADLINE]
    for name in names:
        model = models.get(name)
        for layer in model.layers:
            if isinstance(layer, KroneckerConv2D) and len(layer.factors) == 2:
                case = ([tuple(f) for f in layer.factors], layer.rank, tuple(layer.strides),
                        tuple(int(d) for d in layer.input.shape[1:]))
                if case not in cases:
                    cases.append(case)
    return cases


def single_layer_model(case, lowering):
    factors, rank, strides, shape = case
    inputs = keras.Input(shape)
    layer = KroneckerConv2D(
        int(np.prod([f[3] for f in factors])),
        (int(np.prod([f[0] for f in factors])), int(np.prod([f[1] for f in factors]))),
        factors, rank=rank, strides=strides, execution="factored", lowering=lowering)
    return keras.Model(inputs, layer(inputs))


def timer(runtime_name, model, batch):
    """A function returning one wall-clock time (seconds) of the model's forward pass."""
    shape = (batch,) + tuple(model.input_shape[1:])
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    if runtime_name.startswith("litert"):
        from kronecker_zoo.export import to_tflite
        from kronecker_zoo.export.runner import TFLiteRunner

        path = tempfile.mktemp(suffix=".tflite")
        int8 = {}
        if runtime_name == "litert_int8":
            int8 = {"quantization": "int8", "representative_data": np.random.default_rng(1)
                    .standard_normal((32,) + shape[1:]).astype("float32")}
        to_tflite(model, path, batch_size=batch, **int8)
        runner = TFLiteRunner(path, num_threads=1)
        os.remove(path)
        runner.invoke(x)
        fn = lambda t: runner.interpreter.invoke()  # noqa: E731  (input already set)
    elif runtime_name == "tensorflow":
        import tensorflow as tf

        graph = tf.function(lambda t: model(t, training=False))
        fn = lambda t: graph(t).numpy()  # noqa: E731
    else:
        import jax

        jitted = jax.jit(lambda t: model(t, training=False))
        fn = lambda t: jitted(t).block_until_ready()  # noqa: E731

    def run():
        start = time.perf_counter()
        fn(x)
        return time.perf_counter() - start

    for _ in range(5):
        run()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=("litert", "litert_int8", "tensorflow", "jax"),
                        required=True)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--batch", type=int, default=None,
                        help="examples per call (default: 1 for litert, 64 otherwise)")
    args = parser.parse_args(argv)
    if args.runtime != "jax" and keras.backend.backend() != "tensorflow":
        parser.error(f"--runtime {args.runtime} needs KERAS_BACKEND=tensorflow")
    if args.runtime == "jax" and keras.backend.backend() != "jax":
        parser.error("--runtime jax needs KERAS_BACKEND=jax")
    batch = args.batch or (1 if args.runtime.startswith("litert") else 64)
    print(runtime.describe())
    print(f"runtime {args.runtime}, batch {batch}, median of {args.repeats} interleaved runs")
    cases = layer_cases(args.models)
    rows, fit_x, fit_y, totals = [], [], [], {"batch": 0.0, "channels": 0.0, "auto": 0.0,
                                              "fastest": 0.0}
    for case in cases:
        factors, rank, strides, shape = case
        runs = {lw: timer(args.runtime, single_layer_model(case, lw), batch)
                for lw in kz_ops.LOWERINGS}
        samples = {lw: [] for lw in runs}
        for _ in range(args.repeats):
            for lw, run in runs.items():
                samples[lw].append(run())
        ms = {lw: float(np.median(v)) * 1000 for lw, v in samples.items()}
        features = {}
        for lw in kz_ops.LOWERINGS:
            terms = kz_ops.factored_conv_cost_terms(shape[:2], factors, rank, strides,
                                                    "same", lw)
            features[lw] = [batch * t for t in terms]
            fit_x.append([*features[lw], 1.0])
            fit_y.append(ms[lw])
        picked = min(kz_ops.LOWERINGS, key=lambda lw: kz_ops.factored_conv_cost(
            shape[:2], factors, rank, strides, "same", lw, backend=args.runtime))
        for key, value in (("batch", ms["batch"]), ("channels", ms["channels"]),
                           ("auto", ms[picked]), ("fastest", min(ms.values()))):
            totals[key] += value
        batch_terms, channel_terms = features["batch"], features["channels"]
        rows.append([f"{factors[0]} (x) {factors[1]}", str(rank), f"{strides[0]}",
                     f"{shape[0]}x{shape[1]}x{shape[2]}",
                     f"{batch_terms[0] / batch / 1e6:.2f}M / {batch_terms[2] / batch / 1e3:.0f}k",
                     f"{channel_terms[0] / batch / 1e6:.2f}M + {channel_terms[1] / batch / 1e6:.2f}M",
                     f"{ms['batch']:.3f}", f"{ms['channels']:.3f}",
                     min(ms, key=ms.get), picked])
    # Relative least squares (each row divided by its time): small layers count as much
    # as the headline one.
    fit_x, fit_y = np.array(fit_x), np.array(fit_y)
    (a, g, b, c), *_ = np.linalg.lstsq(fit_x / fit_y[:, None], np.ones_like(fit_y), rcond=None)
    print()
    print(markdown_table(["factors", "rank", "stride", "input", "batch: MACs / moved",
                          "channels: plain + grouped MACs", "batch ms", "channels ms", "faster",
                          "auto picks"], rows, left=4))
    print()
    print(f"fit: ms = {a:.3e} * plain MACs + {g:.3e} * grouped MACs + {b:.3e} * moved "
          f"+ {c:.4f}")
    print(f'COST_WEIGHTS[{args.runtime!r}] = {{"grouped_mac": {g / a:.1f}, "moved": {b / a:.1f}}}'
          f"  (now {kz_ops.COST_WEIGHTS[args.runtime]})")
    print("total over the layers, ms: " + ", ".join(
        f"{key} {value:.3f}" for key, value in totals.items())
        + "  (auto: each layer's pick with the current weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
