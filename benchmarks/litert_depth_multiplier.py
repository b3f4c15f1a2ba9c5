"""LiteRT (XNNPACK) time of depthwise convolutions with and without a channel multiplier.

    python benchmarks/litert_depth_multiplier.py [--rounds 10] [--runs 30]

The "channels" lowering runs a factor with one input channel per group as a depthwise
convolution; when each group has several outputs (``(3x3, 1 -> m)`` factors), that is a
DEPTHWISE_CONV_2D with ``depth_multiplier = m`` (a Keras grouped Conv2D with one input per
group converts to the same). This times, at 28x28, batch 1, 1 thread, float32 and int8,
3x3 depthwise convolutions of ``c`` channels x ``m`` against plain convolutions, so that
`kronecker_zoo.ops` prices them as measured (`_step_tiled_macs`). Every file is timed in
the same interleaved rounds (`benchmark_tflite_interleaved`). Wall-clock: keep the
machine idle.
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kronecker_zoo import runtime  # noqa: E402
from kronecker_zoo.export import to_tflite, tflite_op_counts  # noqa: E402
from kronecker_zoo.export.runner import benchmark_tflite_interleaved  # noqa: E402

SIZE = 28
# (name, input channels, layer factory, MACs per example)
CASES = [
    ("depthwise 16 x 1", 16, lambda: keras.layers.DepthwiseConv2D(3, padding="same"), 16 * 9),
    ("depthwise 32 x 1", 32, lambda: keras.layers.DepthwiseConv2D(3, padding="same"), 32 * 9),
    ("depthwise 8 x 2", 8,
     lambda: keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2), 16 * 9),
    ("depthwise 4 x 4", 4,
     lambda: keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=4), 16 * 9),
    ("depthwise 16 x 2", 16,
     lambda: keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2), 32 * 9),
    ("grouped Conv2D 16 groups 1 -> 2", 16,
     lambda: keras.layers.Conv2D(32, 3, padding="same", groups=16), 32 * 9),
    ("Conv2D 16 -> 16", 16, lambda: keras.layers.Conv2D(16, 3, padding="same"), 16 * 16 * 9),
    ("Conv2D 16 -> 32", 16, lambda: keras.layers.Conv2D(32, 3, padding="same"), 16 * 32 * 9),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    paths = {}
    with tempfile.TemporaryDirectory() as directory:
        for name, channels, layer, _ in CASES:
            inputs = keras.Input((SIZE, SIZE, channels), batch_size=1)
            model = keras.Model(inputs, layer()(inputs))
            calibration = rng.uniform(0, 255, (16, SIZE, SIZE, channels)).astype("float32")
            for quantization in (None, "int8"):
                path = os.path.join(directory, f"{len(paths)}.tflite")
                to_tflite(model, path, quantization=quantization,
                          representative_data=calibration if quantization else None)
                paths[name, quantization] = path
        times = benchmark_tflite_interleaved(list(paths.values()), threads=(1,),
                                             rounds=args.rounds, runs=args.runs)
        print(f"# {runtime.describe()}; LiteRT XNNPACK, batch 1, 1 thread, {SIZE}x{SIZE}, "
              f"3x3 'same'; median of {args.rounds} interleaved rounds of {args.runs} runs")
        print("| convolution | MACs per pixel | ops | float32 us | int8 us |")
        print("|---|---:|---|---:|---:|")
        for name, _, _, macs in CASES:
            ops = ", ".join(sorted(k for k in tflite_op_counts(paths[name, None])))
            print(f"| {name} | {macs:,} | {ops} | {times[paths[name, None]][1] * 1000:.1f} "
                  f"| {times[paths[name, 'int8']][1] * 1000:.1f} |")


if __name__ == "__main__":
    main()
