"""`verify_tflite`: does a .tflite file compute what its Keras model computes?

Runs the file with the LiteRT interpreter on real inputs and compares with the
Keras model, chunk by chunk (so 2,000 segmentation maps never sit in memory
twice). The error is reported relative to the output scale, ``max |keras output|``
over the whole set, so a tolerance means the same for logits of any size: loose
absolute tolerances are how peer zoos' exports drifted by 60% with tests passing.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from kronecker_zoo.export.execution import (
    check_execution,
    computes_below_float32,
    forced_execution,
    private_copy,
)
from kronecker_zoo.export.inspect_tflite import tflite_quantization
from kronecker_zoo.export.runner import TFLiteRunner
from kronecker_zoo.export.signature import check_tensorflow_model
from kronecker_zoo.metrics import confusion_matrix, mean_iou_from_confusion
from kronecker_zoo.models.registry import TASKS

# Pass thresholds per quantization: rel error for float files, argmax agreement
# (top-1, or per pixel) for quantized ones.
MAX_REL_ERROR = {"float32": 1e-4, "float16": 1e-2}
MIN_AGREEMENT = {"classification": 0.99, "segmentation": 0.98}
# ... and for quantized files an SQNR floor on the outputs themselves: agreement alone
# passes a file whose logits are scaled wrong but keep their argmax (a badly calibrated
# output, a lost rescale). Zoo int8 files sit at 20-32 dB; 15 dB is noise at 18% of the
# outputs' RMS.
MIN_SQNR_DB = {"dynamic": 15.0, "int8": 15.0}
QUANTIZATION_KINDS = ("float32", "float16", "dynamic", "int8")  # as `tflite_quantization` reads



def power_ratio_db(signal, noise):
    """``10 log10(signal / noise)``; infinite when ``noise`` is 0, minus infinity when
    ``signal`` is 0 (and ``noise`` is not)."""
    if noise <= 0:
        return float("inf")
    return float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def sqnr_db(reference, outputs):
    """SQNR of ``outputs`` against ``reference``: ``10 log10(sum ref^2 / sum (out - ref)^2)``."""
    reference = np.asarray(reference, np.float64)
    noise = np.asarray(outputs, np.float64) - reference
    return power_ratio_db(float(np.sum(reference ** 2)), float(np.sum(noise ** 2)))

@dataclasses.dataclass(frozen=True)
class VerificationReport:
    """Parity of a .tflite file with its Keras model on ``num_examples`` inputs."""

    path: str
    quantization: str
    task: str
    num_examples: int
    batch_size: int
    max_abs_error: float
    output_scale: float  # max |keras output|
    rel_error: float  # max_abs_error / output_scale
    agreement: float  # argmax agreement: top-1, or per pixel
    sqnr_db: float  # 10 log10(sum keras^2 / sum (tflite - keras)^2)
    keras_accuracy: float = None
    tflite_accuracy: float = None
    keras_miou: float = None
    tflite_miou: float = None
    max_rel_error: float = None  # the threshold applied, if any
    min_agreement: float = None  # the threshold applied, if any
    min_sqnr_db: float = None  # the threshold applied, if any
    passed: bool = False

    def __str__(self):
        what = "top-1" if self.task == "classification" else "per-pixel argmax"
        lines = [
            f"TFLite verification of {self.path} ({self.quantization}, {self.task}, "
            f"{self.num_examples:,} examples, file batch {self.batch_size}): "
            f"{'PASSED' if self.passed else 'FAILED'}",
            f"  max |tflite - keras| = {self.max_abs_error:.3g} over output scale "
            f"{self.output_scale:.3g}: relative error {self.rel_error:.3g}"
            + (f" (threshold {self.max_rel_error:g})" if self.max_rel_error is not None else "")
            + f"; SQNR {self.sqnr_db:.1f} dB"
            + (f" (threshold {self.min_sqnr_db:g} dB)" if self.min_sqnr_db is not None
               else ""),
            f"  {what} agreement {100 * self.agreement:.2f}%"
            + (f" (threshold {100 * self.min_agreement:g}%)"
               if self.min_agreement is not None else ""),
        ]
        if self.keras_accuracy is not None:
            lines.append(f"  accuracy: keras {100 * self.keras_accuracy:.2f}%, tflite "
                         f"{100 * self.tflite_accuracy:.2f}%")
        if self.keras_miou is not None:
            lines.append(f"  mean IoU: keras {100 * self.keras_miou:.2f}%, tflite "
                         f"{100 * self.tflite_miou:.2f}%")
        return "\n".join(lines)


def _decisions(outputs, threshold):
    """What a user reads off the outputs: the argmax over the last axis, or with a
    single unit (binary classification or mask), ``output > threshold``."""
    if outputs.shape[-1] == 1:
        return (outputs[..., 0] > threshold).astype(np.int64)
    return outputs.argmax(-1)


def _as_batch(images, sample_shape):
    images = np.asarray(images)
    if images.ndim == len(sample_shape) and sample_shape[-1] == 1:
        images = images[..., None]
    if images.shape[1:] != tuple(sample_shape):
        raise ValueError(f"`images` must have shape (N,) + {tuple(sample_shape)} to match the "
                         f"file's input. Received: {images.shape}")
    if len(images) == 0:
        raise ValueError("`images` is empty.")
    return images


def _thresholds(quantization, task, max_rel_error, min_agreement, min_sqnr_db):
    if max_rel_error is None and min_agreement is None and min_sqnr_db is None:
        if quantization in MAX_REL_ERROR:
            max_rel_error = MAX_REL_ERROR[quantization]
        else:
            min_agreement = MIN_AGREEMENT[task]
            min_sqnr_db = MIN_SQNR_DB[quantization]
    return max_rel_error, min_agreement, min_sqnr_db


def verify_tflite(model, path, images, labels=None, quantization=None, task=None,
                  max_rel_error=None, min_agreement=None, min_sqnr_db=None, num_threads=1,
                  chunk_size=256, reference_execution="as_built"):
    """Compare the .tflite file at ``path`` with ``model`` on ``images``.

    Args:
        model: the Keras 3 or tf_keras model the file was exported from.
        path: the .tflite file (or the `TFLiteExport` `to_tflite` returned).
        images: raw 0..255 pixels ``(N, H, W, C)`` (or ``(N, H, W)``), any N: they
            are batched to the file's fixed batch, the last batch padded.
        labels: optional ``(N,)`` class ids or ``(N, H, W)`` masks, for accuracies.
        quantization: how the file was quantized; read from the file by default
            (`tflite_quantization`). Picks the thresholds.
        task: `"classification"` or `"segmentation"`; by default from the output
            rank (``(N, classes)`` vs ``(N, H, W, classes)``). Agreement compares the
            argmax over classes; with a single output unit (a binary classifier or
            mask) it compares ``output > 0.5`` where the Keras outputs lie in [0, 1]
            (probabilities), else ``output > 0`` (logits).
        max_rel_error, min_agreement, min_sqnr_db: thresholds overriding the defaults
            (float32 rel error <= 1e-4, float16 <= 1e-2; int8/dynamic top-1 agreement
            >= 99%, per-pixel >= 98%, and the outputs' SQNR against Keras >= 15 dB).
            Passing any of them replaces all the defaults.
        num_threads: interpreter threads. Defaults to `1`.
        chunk_size: images compared at a time.
        reference_execution: execution of the Keras reference (see
            `forced_execution`): "as_built" (default), "factored" or "materialized".

    Returns:
        `VerificationReport`; ``report.passed`` tells whether the thresholds hold.
    """
    check_execution(reference_execution)
    check_tensorflow_model(model, "verify_tflite")
    if task is not None and task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS} or None. Received: task={task!r}")
    runner = TFLiteRunner(path, num_threads=num_threads)  # a missing file: a clear error
    if quantization is not None and quantization not in QUANTIZATION_KINDS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATION_KINDS} or None (read "
                         f"from the file). Received: quantization={quantization!r}")
    quantization = quantization or tflite_quantization(path)
    if len(runner.output_shapes) != 1:
        raise ValueError(f"verify_tflite compares files with one output; {os.fspath(path)!r} "
                         f"has {len(runner.output_shapes)}. run_tflite(path, images) returns "
                         "each of them, to compare with the model's outputs yourself.")
    images = _as_batch(images, runner.input_shape[1:])
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != len(images):
            raise ValueError(f"`labels` has {len(labels)} entries for {len(images)} images.")
    sample = tuple(int(d) for d in runner.input_shape[1:])
    if reference_execution != "as_built" or computes_below_float32(model):
        # switch executions (or compute in float32, as the file does) on a copy
        model = private_copy(model)
    reference = tf.function(lambda x: model(x, training=False), autograph=False,
                            input_signature=[tf.TensorSpec((None,) + sample, tf.float32)])
    with forced_execution(model, reference_execution):
        reference = reference.get_concrete_function()

    max_abs = scale = signal = noise = 0.0
    agree = keras_correct = tflite_correct = count = 0
    threshold = None  # for a single output unit: 0.5 (probabilities) or 0 (logits)
    confusion = {}
    for start in range(0, len(images), chunk_size):
        x = images[start:start + chunk_size].astype(np.float32)
        expected = reference(tf.constant(x)).numpy()
        got = runner(x)
        if got.shape != expected.shape:
            raise ValueError(f"the file's output has shape {got.shape[1:]} per example, the "
                             f"model's {expected.shape[1:]}: {os.fspath(path)!r} was not "
                             "exported from this model")
        if task is None:
            task = "classification" if expected.ndim == 2 else "segmentation"
        max_abs = max(max_abs, float(np.max(np.abs(got - expected))))
        scale = max(scale, float(np.max(np.abs(expected))))
        signal += float(np.sum(np.square(expected, dtype=np.float64)))
        noise += float(np.sum(np.square(got - expected, dtype=np.float64)))
        if threshold is None and expected.shape[-1] == 1:  # one unit: a yes/no decision
            threshold = 0.5 if 0.0 <= expected.min() and expected.max() <= 1.0 else 0.0
        keras_top, tflite_top = _decisions(expected, threshold), _decisions(got, threshold)
        agree += int((keras_top == tflite_top).sum())
        count += keras_top.size
        if labels is not None:
            y = labels[start:start + chunk_size].reshape(keras_top.shape)
            keras_correct += int((keras_top == y).sum())
            tflite_correct += int((tflite_top == y).sum())
            if task == "segmentation":
                classes = max(expected.shape[-1], 2)  # one unit: a two-class mask
                for key, top in (("keras", keras_top), ("tflite", tflite_top)):
                    confusion[key] = confusion.get(key, 0) + confusion_matrix(y, top, classes)

    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    agreement = agree / count
    max_rel_error, min_agreement, min_sqnr_db = _thresholds(
        quantization, task, max_rel_error, min_agreement, min_sqnr_db)
    sqnr = power_ratio_db(signal, noise)
    passed = ((max_rel_error is None or rel <= max_rel_error)
              and (min_agreement is None or agreement >= min_agreement)
              and (min_sqnr_db is None or sqnr >= min_sqnr_db))
    return VerificationReport(
        path=os.fspath(path),
        quantization=quantization,
        task=task,
        num_examples=len(images),
        batch_size=runner.batch_size,
        max_abs_error=max_abs,
        output_scale=scale,
        rel_error=rel,
        agreement=agreement,
        sqnr_db=sqnr,
        keras_accuracy=None if labels is None else keras_correct / count,
        tflite_accuracy=None if labels is None else tflite_correct / count,
        keras_miou=mean_iou_from_confusion(confusion["keras"]) if confusion else None,
        tflite_miou=mean_iou_from_confusion(confusion["tflite"]) if confusion else None,
        max_rel_error=max_rel_error,
        min_agreement=min_agreement,
        min_sqnr_db=min_sqnr_db,
        passed=bool(passed),
    )
