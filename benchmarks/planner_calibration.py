"""Calibrate the execution planner's cost model: measured time of each execution.

    python benchmarks/planner_calibration.py --runtime litert        # LiteRT/XNNPACK, batch 1
    python benchmarks/planner_calibration.py --runtime litert_int8   # the same, int8 files
    python benchmarks/planner_calibration.py --runtime tensorflow    # tf.function, batch 64
    KERAS_BACKEND=jax python benchmarks/planner_calibration.py --runtime jax

For every distinct two-factor `KroneckerConv2D` of the given models (default: the zoo's
Kronecker students) and the headline 9x9 layer, one single-layer model per execution
(factored "batch": channel axes folded into the batch, transposes around the steps;
factored "channels": grouped/depthwise convolution and ``F (x) I``, no data moved;
"materialized": one convolution with the full kernel) is timed, interleaved.
A relative least-squares fit ``time = a * plain MACs + g * grouped MACs + b * moved + c``
(grouped: MACs of grouped/depthwise convolutions; moved: elements the transposes move;
MACs tiled as `kronecker_zoo.ops.tiled_macs` counts them, for every tile ``(k, n)`` of
``TILES``: the one with the smallest residual is kept) gives the ``tile`` and the weights
``g / a`` and ``b / a`` that `kronecker_zoo.ops.COST_WEIGHTS` holds for that runtime.
The table shows, per layer, the three times, the fastest, and what the planner
(``lowering="auto"``, ``execution="planned"``) picks with the current weights and with
the fitted ones. Wall-clock: keep the machine idle.
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
DEFAULT_MODELS = ("resnet_8_kron5x", "resnet_20_kron5x", "kron_resnet_8", "resnet_8_kron5x_lowmac",
                  "resnet_20_kron5x_lowmac")
# The tiles (reduction, output channels) tried by the fit; (1, 1): MACs as they are.
TILES = [(k, n) for k in (1, 2, 4, 8, 16) for n in (1, 2, 4, 8, 16)]
EXECUTIONS = kz_ops.LOWERINGS + ("materialized",)


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


def single_layer_model(case, execution):
    """The layer alone, run as ``execution`` (a lowering of the factored execution, or
    "materialized")."""
    factors, rank, strides, shape = case
    inputs = keras.Input(shape)
    factored = execution != "materialized"
    layer = KroneckerConv2D(
        int(np.prod([f[3] for f in factors])),
        (int(np.prod([f[0] for f in factors])), int(np.prod([f[1] for f in factors]))),
        factors, rank=rank, strides=strides,
        execution="factored" if factored else "materialized",
        lowering=execution if factored else "batch")
    return keras.Model(inputs, layer(inputs))


def cost_terms(case, execution, tile):
    """``(plain MACs, grouped MACs, moved)`` per example of the case run as ``execution``,
    MACs tiled by ``tile``."""
    factors, rank, strides, shape = case
    if execution == "materialized":
        kh = int(np.prod([f[0] for f in factors]))
        kw = int(np.prod([f[1] for f in factors]))
        cin, cout = int(np.prod([f[2] for f in factors])), int(np.prod([f[3] for f in factors]))
        macs = kz_ops.dense_conv_macs(shape[:2], (kh, kw), cin, cout, strides, "same")
        return kz_ops.tiled_macs(macs, kh * kw * cin, cout, tile), 0, 0
    return kz_ops.factored_conv_cost_terms(shape[:2], factors, rank, strides, "same",
                                           execution, tile)


def predicted_costs(case, weights):
    """``{execution: cost}`` under ``weights`` (a `COST_WEIGHTS` entry)."""
    out = {}
    for execution in EXECUTIONS:
        plain, grouped, moved = cost_terms(case, execution, weights["tile"])
        out[execution] = plain + weights["grouped_mac"] * grouped + weights["moved"] * moved
    return out


def planned_pick(case, weights):
    """The execution the planner picks: the cheaper lowering, then materialised where that
    is cheaper still (`kronecker_zoo.export.execution.planned_executions`)."""
    costs = predicted_costs(case, weights)
    lowering = min(kz_ops.LOWERINGS, key=costs.get)  # "batch" first: it wins ties
    return "materialized" if costs["materialized"] < costs[lowering] else lowering


def fit(cases, times, batch, tile):
    """``(a, g, b, c), relative RMS residual`` of the least-squares fit with ``tile``
    (each row divided by its time: small layers count as much as the headline one)."""
    x, y = [], []
    for case, ms in zip(cases, times):
        for execution in EXECUTIONS:
            x.append([batch * t for t in cost_terms(case, execution, tile)] + [1.0])
            y.append(ms[execution])
    x, y = np.array(x, dtype=float), np.array(y)
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    residual = float(np.sqrt(np.mean((x @ coef / y - 1.0) ** 2)))
    return coef, residual


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
        to_tflite(model, path, batch_size=batch, execution="as_built", **int8)
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
    times = []
    for case in cases:
        runs = {ex: timer(args.runtime, single_layer_model(case, ex), batch)
                for ex in EXECUTIONS}
        samples = {ex: [] for ex in runs}
        for _ in range(args.repeats):
            for ex, run in runs.items():
                samples[ex].append(run())
        times.append({ex: float(np.median(v)) * 1000 for ex, v in samples.items()})
    fits = {tile: fit(cases, times, batch, tile) for tile in TILES}
    tile = min(fits, key=lambda t: fits[t][1])
    (a, g, b, c), residual = fits[tile]
    current = kz_ops.COST_WEIGHTS[args.runtime]
    fitted = {"grouped_mac": round(float(g / a), 1), "moved": round(float(b / a), 1),
              "tile": tile}
    rows, totals = [], {"batch": 0.0, "channels": 0.0, "materialized": 0.0,
                        "planned (current)": 0.0, "planned (fitted)": 0.0, "fastest": 0.0}
    for case, ms in zip(cases, times):
        factors, rank, strides, shape = case
        picks = {"planned (current)": planned_pick(case, current),
                 "planned (fitted)": planned_pick(case, fitted)}
        for key in EXECUTIONS:
            totals[key] += ms[key]
        for key, pick in picks.items():
            totals[key] += ms[pick]
        totals["fastest"] += min(ms.values())
        rows.append([f"{factors[0]} (x) {factors[1]}", str(rank), f"{strides[0]}",
                     f"{shape[0]}x{shape[1]}x{shape[2]}",
                     *(f"{ms[ex]:.3f}" for ex in EXECUTIONS), min(ms, key=ms.get),
                     picks["planned (current)"], picks["planned (fitted)"]])
    print()
    print(markdown_table(["factors", "rank", "stride", "input", "batch ms", "channels ms",
                          "materialized ms", "fastest", "planner picks (current)",
                          "planner picks (fitted)"], rows, left=4))
    print()
    print("relative RMS residual of the fit per tile (k, n): " + ", ".join(
        f"{t}: {fits[t][1]:.3f}" for t in sorted(fits, key=lambda t: fits[t][1])[:6]))
    print(f"fit, tile {tile}: ms = {a:.3e} * plain MACs + {g:.3e} * grouped MACs "
          f"+ {b:.3e} * moved + {c:.4f}  (relative RMS residual {residual:.3f}; "
          f"untiled {fits[(1, 1)][1]:.3f})")
    print(f"COST_WEIGHTS[{args.runtime!r}] = {fitted}  (now {current})")
    print("total over the layers, ms: " + ", ".join(
        f"{key} {value:.3f}" for key, value in totals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
