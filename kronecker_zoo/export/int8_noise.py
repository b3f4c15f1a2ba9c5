"""`int8_op_noise`: which op of a full-integer export adds the quantization noise?

The converter `to_tflite` runs for ``quantization="int8"`` (same rewrites, same
calibration data) is handed to LiteRT's `tf.lite.experimental.QuantizationDebugger`,
which quantizes the graph with NUMERIC_VERIFY ops: every quantized op is run twice on
the same (dequantized) inputs, once in int8 and once in float32, over ``images``. (The
debugger quantizes on its own: its calibrated ranges can differ from the file's by a
few percent.)
Per op the result is the RMS difference in units of its output's int8 step,

    rmse_steps = sqrt(mean((dequant(q_out) - float_out)^2)) / scale.

Rounding alone gives 1/sqrt(12) = 0.29 steps (`ROUNDING_FLOOR_STEPS`) on a tensor
whose calibrated range covers the data; clearly more means values clipped outside
the calibrated range, or a coarse intermediate rounding inside the op. When every op
sits at the floor, no calibration choice is left to fix: the disagreements with Keras
come from the rounding noise accumulated over the ops meeting small top-2 margins.
"""

import csv
import dataclasses
import io

import numpy as np
import tensorflow as tf

from kronecker_zoo.export.tflite import _batches, prepared_converter

ROUNDING_FLOOR_STEPS = 1.0 / np.sqrt(12.0)


@dataclasses.dataclass(frozen=True)
class OpNoise:
    """One quantized op: its output tensor, int8 step and RMS error in steps."""

    op: str
    tensor: str
    scale: float
    rmse_steps: float

    def __str__(self):
        return f"{self.op:<18} {self.rmse_steps:6.3f} steps (step {self.scale:.4g})  {self.tensor}"


def int8_op_noise(model, representative_data, images, batch_size=1, input_shape=None,
                  execution="factored"):
    """Per-op quantization noise of ``model``'s int8 export.

    Args:
        model, representative_data, batch_size, input_shape, execution: as for
            `to_tflite(..., quantization="int8")`.
        images: the inputs to measure on, ``(N, H, W, C)`` raw pixels (or ``(N, H, W)``).

    Returns:
        A list of `OpNoise`, in the order the ops run.
    """
    with prepared_converter(model, "int8", representative_data, batch_size, input_shape,
                            execution) as (converter, shape):
        batches = list(_batches(np.asarray(images, np.float32), shape))
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([b] for b in batches))
        debugger.run()
    text = io.StringIO()
    debugger.layer_statistics_dump(text)
    rows = text.getvalue().splitlines()
    noise = []
    for row in csv.DictReader(rows):
        scale = float(row["scale"])
        noise.append(OpNoise(op=row["op_name"], tensor=row["tensor_name"], scale=scale,
                             rmse_steps=float(np.sqrt(float(row["mean_squared_error"]))) / scale))
    return noise
