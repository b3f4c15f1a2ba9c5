"""`int8_op_noise`: which op of a full-integer export adds the quantization noise?

The converter `to_tflite` runs for ``quantization="int8"`` (same rewrites, same
calibration data; without `to_tflite`'s bias correction, i.e. ``bias_correction=False``)
is handed to LiteRT's `tf.lite.experimental.QuantizationDebugger`, which quantizes the
graph with NUMERIC_VERIFY ops: every quantized op is run twice on the same (dequantized)
inputs, once in int8 and once in float32, over ``images``. (The
debugger quantizes on its own: its calibrated ranges can differ from the file's by a
few percent.)
Per op the result is the RMS difference in units of its output's int8 step,

    rmse_steps = sqrt(mean((dequant(q_out) - float_out)^2)) / scale.

Rounding alone gives 1/sqrt(12) = 0.29 steps (`ROUNDING_FLOOR_STEPS`) on a tensor
whose calibrated range covers the data; clearly more means values clipped outside
the calibrated range, or a coarse intermediate rounding inside the op. When every op
sits at the floor, no op is badly calibrated: the disagreements with Keras come from the
rounding noise accumulated over the ops meeting small top-2 margins, and what is left to
choose is the size of the steps, e.g. the output's (`output_range`: a range that clips
its largest values on purpose, whose output op then shows more than rounding noise).

`int8_float_op_gain` asks the other question: how much closer to Keras would the file be
with one op left in float32 (LiteRT's selective quantization, the debugger's
``denylisted_nodes``)? An op whose noise is at the floor in its own steps can still
dominate the output's error, e.g. a fixed weight-rounding error that does not average out.
"""

import csv
import dataclasses
import io
import os
import tempfile

import numpy as np
import tensorflow as tf

from kronecker_zoo.export.signature import static_input_shape
from kronecker_zoo.export.tflite import prepared_converter, representative_batches
from kronecker_zoo.export.verify import sqnr_db

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
        batches = list(representative_batches(np.asarray(images, np.float32), shape, None))
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


@dataclasses.dataclass(frozen=True)
class FloatOpGain:
    """The int8 file with ``op`` (``None``: none) left in float32, against Keras."""

    op: str
    tensor: str
    sqnr_db: float
    agreement: float

    def __str__(self):
        return (f"{self.op or 'all int8':<18} {self.sqnr_db:5.1f} dB  "
                f"{100 * self.agreement:6.2f}%  {self.tensor}")


def _against(reference, outputs):
    """``(SQNR dB, argmax agreement over the last axis)`` of ``outputs`` vs ``reference``."""
    return sqnr_db(reference, outputs), float(np.mean(outputs.argmax(-1)
                                                      == reference.argmax(-1)))


def int8_float_op_gain(model, representative_data, images, batch_size=1, input_shape=None,
                       execution="factored"):
    """The int8 file's SQNR and argmax agreement against ``model`` with each quantized
    op in turn left in float32 (every other op int8; biases not bias-corrected).

    Args: as `int8_op_noise`. Converts the model once per quantized op.

    Returns:
        A list of `FloatOpGain`: first the all-int8 file (``op=None``), then one per op
        in the order the ops run.
    """
    from kronecker_zoo.export.runner import run_tflite

    reference = np.asarray(model.predict(np.asarray(images, np.float32), verbose=0),
                           np.float64)
    # read a one-shot iterable once, arrays and iterables alike up to to_tflite's limit
    shape = static_input_shape(model, batch_size, input_shape)
    representative_data = list(representative_batches(representative_data, shape))
    ops = int8_op_noise(model, representative_data, images[:1], batch_size, input_shape,
                        execution)
    rows = []
    with prepared_converter(model, "int8", representative_data, batch_size, input_shape,
                            execution) as (converter, shape), \
            tempfile.TemporaryDirectory() as tmp:
        batches = list(representative_batches(np.asarray(images, np.float32)[:1], shape))
        for op in [None] + ops:
            options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=[] if op is None else [op.tensor])
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=lambda: ([b] for b in batches),
                debug_options=options)
            path = os.path.join(tmp, "m.tflite")
            with open(path, "wb") as f:
                f.write(debugger.get_nondebug_quantized_model())
            sqnr, agreement = _against(reference, np.asarray(run_tflite(path, images),
                                                             np.float64))
            rows.append(FloatOpGain(op=None if op is None else op.op,
                                    tensor="" if op is None else op.tensor,
                                    sqnr_db=sqnr, agreement=agreement))
    return rows
