"""`to_tflite`: a zoo model (Keras 3 or tf_keras) -> a fixed-batch LiteRT (.tflite) file.

Choices, and why:

- Fixed batch. The model is traced as a `tf.function` with the fully static
  signature ``(batch_size, H, W, C)``. With a dynamic batch the converter lowers
  dilated convolutions to SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND, which mobile GPU
  delegates reject (and ReLU is no longer fused).
- Factored Kronecker layers. Tracing happens inside `forced_execution(model,
  "factored")`: every `KroneckerConv2D` runs as its cascade of small convolutions,
  so the file stores the factors. Traced materialised, the converter would
  constant-fold the full kernel and the file would be as large as a dense model's.
- Builtin ops only (``TFLITE_BUILTINS``; ``TFLITE_BUILTINS_INT8`` for "int8"), so a
  model that needs Flex (Select TF) ops fails to convert instead of producing a
  file that plain LiteRT cannot run. The result is checked with `check_tflite_ops`.
- Full-integer "int8" keeps **float32 input and output**: the file starts with a
  QUANTIZE and ends with a DEQUANTIZE and every op in between is int8. Callers feed
  the same raw 0..255 float pixels as to the Keras model and get float logits, so
  parity checks need no extra (de)quantization code. The input's scale comes from
  calibration on 0..255 pixels (about 1.0), so whole-number pixels quantize
  (nearly) losslessly. Quantized I/O can be had by converting with
  ``tf.lite.TFLiteConverter`` and ``inference_input_type=tf.int8`` yourself.
- "int8" traces a float-identical rewrite of the model (`int8_rewrites`): a
  BatchNormalization the converter cannot fold (after a KroneckerConv2D, a
  LowRankConv2D, ...) runs as a per-channel DEPTHWISE_CONV_2D instead of a MUL by a
  per-tensor-quantized vector and an ADD, with the Kronecker output's channel
  ranges equalised into the factors. With ``bias_correction`` the biases the file folds
  also cancel the mean shift of the int8 weights of Conv2D, Dense, depthwise,
  separable, Kronecker and low-rank layers on the calibration data
  (`int8_bias_correction`: not float-identical, by design); "auto" (default)
  converts with and without it and keeps the file closer to the model.
- The int8 range of the outputs (the logits) minimises their quantization error on the
  calibration data (`output_range`, "mse"), not the calibration's min and max: a few
  extreme logits would make the grid coarse for all the others.
- Calibration ("int8") needs ``representative_data``, always passed explicitly: no
  default is guessed (a fine-tuned zoo model keeps its name). For published weights
  `pretraining_calibration_data(name, tag)` gives their pretraining images. Data
  whose range cannot be the model's (e.g. scaled to [0, 1] for a zoo model, which
  takes raw 0..255 pixels) are refused (`check_calibration_range`).
"""

import contextlib
import dataclasses
import os
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from kronecker_zoo.export.bias_correction import (
    has_bias_correction_targets,
    int8_bias_correction,
)
from kronecker_zoo.export.calibration import MAX_CALIBRATION_EXAMPLES, check_calibration_range
from kronecker_zoo.export.execution import (
    check_execution,
    describe_execution,
    execution_layers,
    forced_execution,
    private_copy,
    resolve_execution,
)
from kronecker_zoo.export.inspect_tflite import (check_tflite_ops, tflite_ops,
                                                 tflite_quantization)
from kronecker_zoo.export.output_range import check_output_range, mse_range
from kronecker_zoo.export.runner import run_tflite
from kronecker_zoo.export.verify import sqnr_db
from kronecker_zoo.validation import positive_int
from kronecker_zoo.export.int8_rewrites import int8_rewrites
from kronecker_zoo.export.signature import (
    check_output_file,
    check_tensorflow_model,
    inference_function,
    static_input_shape,
    write_atomically,
)

QUANTIZATIONS = (None, "float16", "dynamic", "int8")


@dataclasses.dataclass(frozen=True)
class TFLiteExport:
    """What `to_tflite` wrote. Usable as a path: ``os.fspath(info)``, ``str(info)``."""

    path: str
    size_bytes: int
    quantization: str  # "float32", "float16", "dynamic" or "int8"
    input_shape: tuple  # (batch, H, W, C), static
    params: int
    # "factored", "materialized", "as_built" or {layer name: execution} ("planned": the
    # layers it materialised, as such a dict, or "factored")
    execution: object
    ops: tuple
    kronecker_layers: int = 0  # layers whose execution was chosen (KroneckerConv2D)
    bias_corrected: bool = False  # int8: the weight-rounding bias correction was kept
    output_range: str = None  # int8 of a Keras 3 model: "mse" or "minmax" (`output_range`)

    def __fspath__(self):
        return self.path

    def __str__(self):
        return self.path

    @property
    def bytes_per_param(self):
        return self.size_bytes / max(self.params, 1)

    def summary(self):
        """One line; names the execution only when the model has Kronecker layers."""
        execution = (f"{describe_execution(self.execution)} execution of "
                     f"{self.kronecker_layers} Kronecker "
                     f"layer{'s' if self.kronecker_layers != 1 else ''}, "
                     if self.kronecker_layers else "")
        return (f"{self.path}: {self.size_bytes:,} bytes ({self.bytes_per_param:.2f} B/param, "
                f"{self.params:,} params), {self.quantization}, input {self.input_shape}, "
                f"{execution}ops: {', '.join(self.ops)}")


def _check_quantization(quantization):
    if quantization == "float32":
        return None
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            "`quantization` must be one of None (float32), 'float16', 'dynamic' (int8 "
            "weights, float activations) or 'int8' (full integer, calibrated). "
            f"Received: quantization={quantization!r}"
        )
    return quantization


# -- representative data ---------------------------------------------------------------


def _fits(shape, sample):
    """Whether ``shape`` is ``sample``'s (a ``None`` in ``sample`` matches any size)."""
    return len(shape) == len(sample) and all(d is None or d == n for n, d in zip(shape, sample))


def _as_images(batch, sample_shape):
    """One batch of representative data -> float32 ``(n,) + sample_shape``."""
    if isinstance(batch, dict):
        raise ValueError("representative_data must yield arrays or (images, labels) tuples, "
                         "not dicts")
    if isinstance(batch, tuple) and len(batch) in (1, 2):
        batch = batch[0]  # (images,) or (images, labels), as tf.data yields them
    elif isinstance(batch, list) and len(batch) == 1:
        batch = batch[0]  # [images]: the form TFLiteConverter.representative_dataset takes
    try:
        array = np.asarray(batch, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"representative_data must hold numeric images; a batch of it "
                         f"could not be read as float32 ({error})") from None
    sample = tuple(sample_shape)
    if _fits(array.shape, sample):  # a single example
        array = array[None]
    elif sample[-1] == 1 and _fits(array.shape, sample[:-1]):  # one example, no channel axis
        array = array[None, ..., None]
    elif sample[-1] == 1 and _fits(array.shape[1:], sample[:-1]):  # a batch, no channel axis
        array = array[..., None]
    if not _fits(array.shape[1:], sample):
        raise ValueError(
            f"representative_data examples must have shape {sample} (raw 0..255 pixels, "
            f"channels last) to match the model input. Received a batch of shape "
            f"{array.shape}."
        )
    return array


def representative_batches(representative_data, shape,
                           max_examples=MAX_CALIBRATION_EXAMPLES):
    """Yield float32 arrays of exactly ``shape`` (the file's fixed batch; a ``None`` in
    ``shape[1:]`` takes the data's size) from the first ``max_examples`` examples of
    ``representative_data``: an array of images, an iterable of batches (or of
    ``(images, labels)`` tuples, or of one-element lists ``[images]`` as
    `tf.lite.TFLiteConverter` takes them), or a callable returning one, as `to_tflite`
    takes it (also ``(images, labels)``, as ``fit`` takes them). Reading stops there (a
    repeated, endless dataset is fine), with a warning when data were left unread
    (``max_examples=None``: read all). The last examples, short of a batch, are repeated
    to fill one.

    Raises:
        ValueError: naming what does not fit (no examples, a wrong shape, dicts, NaN or
            inf values).
    """
    batch_size, sample_shape = shape[0], tuple(shape[1:])
    source = representative_data() if callable(representative_data) else representative_data
    if (isinstance(source, tuple) and len(source) == 2
            and np.ndim(source[1]) < np.ndim(source[0])):  # (images, labels), as fit takes
        source = source[0]
    if isinstance(source, np.ndarray):
        source = [source]
    try:
        source = iter(source)
    except TypeError:
        raise ValueError(
            "representative_data must be an array of images, an iterable of batches (or of "
            f"(images, labels) tuples), or a callable returning one. Received: {source!r}"
        ) from None
    if max_examples is None:
        max_examples = float("inf")
    else:
        max_examples = positive_int(max_examples, "max_calibration_examples")
    pending, emitted, taken = [], 0, 0
    for number, batch in enumerate(source):
        images = _as_images(batch, sample_shape)
        if not np.all(np.isfinite(images)):
            raise ValueError(f"representative_data holds NaN or inf (batch {number}): int8 "
                             "calibration needs finite images")
        left_over = len(images) > max_examples - taken
        if left_over:
            images = images[:int(max_examples - taken)]
        taken += len(images)
        pending.extend(images)
        while len(pending) >= batch_size:
            yield np.stack(pending[:batch_size])
            pending = pending[batch_size:]
            emitted += 1
        if taken >= max_examples:
            if left_over or next(source, None) is not None:
                warnings.warn(f"representative_data: calibrating on its first "
                              f"{max_examples:,} examples (max_calibration_examples); the "
                              "rest is not read", stacklevel=3)
            break
    if pending:  # the last examples, short of a batch: repeat them to fill one
        reps = -(-batch_size // len(pending))
        yield np.stack((pending * reps)[:batch_size])
        emitted += 1
    if not emitted:
        raise ValueError("representative_data is empty: int8 calibration needs at least one "
                         "example.")


# -- conversion ------------------------------------------------------------------------


def _converter(model, shape, execution, runtime="litert", output_ranges=None):
    function = inference_function(model, shape, output_ranges=output_ranges)
    with forced_execution(model, execution, runtime=runtime):
        concrete = function.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    # Freeze the variables into the graph (the saved-model route keeps them as
    # resource variables that a plain interpreter never initialises).
    converter.experimental_lower_to_saved_model = False
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


BIAS_CORRECTIONS = ("auto", True, False)
# The cost table int8 files plan their Kronecker lowerings for (int8 kernels differ).
_INT8_RUNTIME = "litert_int8"


def _runtime(quantization):
    """The `COST_WEIGHTS` entry a file of ``quantization`` is planned for."""
    return _INT8_RUNTIME if _check_quantization(quantization) == "int8" else "litert"


def _check_bias_correction(bias_correction):
    if not (isinstance(bias_correction, bool) or bias_correction == "auto"):
        raise ValueError(f"`bias_correction` must be one of {BIAS_CORRECTIONS}. "
                         f"Received: bias_correction={bias_correction!r}")
    return bias_correction


def convert_tflite(model, quantization=None, representative_data=None, batch_size=1,
                   input_shape=None, execution="factored", bias_correction="auto",
                   output_range="mse", max_calibration_examples=MAX_CALIBRATION_EXAMPLES):
    """The .tflite bytes of ``model`` (see `to_tflite`, which also writes them)."""
    content, shape, _ = _convert(model, quantization, representative_data, batch_size,
                                 input_shape, execution, bias_correction, output_range,
                                 max_calibration_examples=max_calibration_examples)
    return content, shape


def _convert(model, quantization, representative_data, batch_size, input_shape, execution,
             bias_correction, output_range="mse", copy=None,
             max_calibration_examples=None):
    """``(content, shape, bias_corrected)``; "auto" converts with and without the int8
    bias correction and keeps the file closer to ``model`` on the calibration images.
    ``copy``: the private copy of ``model`` to trace (`private_copy`; made here when
    None). Every rewrite of a conversion is undone on exit, so "auto"'s two conversions
    and its check share one copy. ``max_calibration_examples``: how much of
    ``representative_data`` is read (`None`: all)."""
    _check_bias_correction(bias_correction)
    if _check_quantization(quantization) != "int8":
        bias_correction = False
    elif representative_data is not None:
        representative_data = _calibration_batches(model, representative_data, batch_size,
                                                   input_shape, max_calibration_examples)
    if bias_correction == "auto":
        if representative_data is not None and isinstance(model, keras.Model):
            copy = private_copy(model) if copy is None else copy
            if _has_targets(copy, execution):
                shape = static_input_shape(model, batch_size, input_shape)
                batches = representative_data  # already read, in batches of ``shape``
                files = [_convert(model, quantization, batches, batch_size, input_shape,
                                  execution, choice, output_range, copy)[0]
                         for choice in (False, True)]
                images = np.concatenate(batches)
                reference = model_outputs(model, images)
                best = int(np.argmax([_file_sqnr_db(content, images, reference)
                                      for content in files]))
                return files[best], shape, bool(best)
        bias_correction = False
    with _prepared_converter(model, copy, quantization, representative_data, batch_size,
                             input_shape, execution, bias_correction,
                             output_range) as (converter, shape, copy):
        content = converter.convert()
    check_tflite_ops(content)
    return content, shape, bool(bias_correction) and _has_targets(copy, execution)


def _calibration_batches(model, representative_data, batch_size, input_shape, max_examples):
    """The list of batches of the file's fixed input shape that int8 calibration reads:
    the first ``max_examples`` examples of ``representative_data`` (`None`: all), read
    once (it may be one-shot, or endless)."""
    check_tensorflow_model(model)
    shape = static_input_shape(model, batch_size, input_shape)
    return list(representative_batches(representative_data, shape, max_examples))


def _has_targets(copy, execution):
    """Whether the int8 bias correction changes anything in ``copy`` (a `private_copy`:
    its layers are switched while this runs) traced as the file is (its forced execution:
    which BatchNormalizations fold or are rewritten depends on it)."""
    if not isinstance(copy, keras.Model):
        return False
    with forced_execution(copy, execution, runtime=_INT8_RUNTIME):
        return has_bias_correction_targets(copy)


def model_outputs(model, images, chunk=64):
    """``model``'s outputs on ``images`` as a list of arrays, flattened as the file's
    outputs are (`tf.nest.flatten`: a list in order, a dict by sorted key). Eager calls
    in chunks of ``chunk``: no ``predict`` function is cached on the model, and a
    rewritten copy runs as it is now."""
    chunks = [tf.nest.flatten(model(images[i:i + chunk], training=False))
              for i in range(0, len(images), chunk)]
    return [np.concatenate([np.asarray(c[k]) for c in chunks]) for k in range(len(chunks[0]))]


def _file_sqnr_db(content, images, reference):
    """SQNR (dB) of the .tflite bytes ``content`` on ``images`` against ``reference``
    (a list of arrays, `model_outputs`), all outputs at once."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "candidate.tflite")
        with open(path, "wb") as f:
            f.write(content)
        got = run_tflite(path, images)
        got = got if isinstance(got, list) else [got]
        return sqnr_db(np.concatenate([np.ravel(r) for r in reference]),
                       np.concatenate([np.ravel(g) for g in got]))


@contextlib.contextmanager
def prepared_converter(model, quantization=None, representative_data=None, batch_size=1,
                       input_shape=None, execution="factored", bias_correction=False,
                       output_range="mse"):
    """Yields ``(converter, shape)``: the `tf.lite.TFLiteConverter` `convert_tflite` runs.

    Convert within the block: the converter reads the variables of a private, rewritten
    copy of ``model`` (the user's model is never touched). ``bias_correction`` is a bool
    here (`int8_bias_correction` applied or not); "auto" is `convert_tflite`'s.
    ``output_range``: as `to_tflite`'s. ``representative_data``: its first
    `MAX_CALIBRATION_EXAMPLES` examples, as `to_tflite` reads it by default.
    """
    if _check_quantization(quantization) == "int8" and representative_data is not None:
        representative_data = _calibration_batches(model, representative_data, batch_size,
                                                   input_shape, MAX_CALIBRATION_EXAMPLES)
    with _prepared_converter(model, None, quantization, representative_data, batch_size,
                             input_shape, execution, bias_correction,
                             output_range) as (converter, shape, _):
        yield converter, shape


@contextlib.contextmanager
def _prepared_converter(model, copy, quantization, representative_data, batch_size,
                        input_shape, execution, bias_correction, output_range="mse"):
    """`prepared_converter` tracing ``copy`` (a `private_copy` of ``model``; made here
    when None); yields ``(converter, shape, copy)``."""
    quantization = _check_quantization(quantization)
    check_execution(execution)
    check_output_range(output_range)
    check_tensorflow_model(model)
    shape = static_input_shape(model, batch_size, input_shape)
    if representative_data is not None and quantization != "int8":
        raise ValueError(
            "`representative_data` calibrates full-integer quantization and is only used "
            f"with quantization='int8'. Received quantization={quantization!r}"
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "quantization='int8' needs `representative_data`: a few hundred images as the "
            "model sees them in use (an array (N, H, W, C) of raw pixels, an iterable of "
            "batches or of (images, labels) tuples). No default is guessed. For published "
            "zoo weights not fine-tuned since, pass representative_data="
            "kronecker_zoo.export.pretraining_calibration_data(name, tag)."
        )
    batches = None
    if quantization == "int8":
        # Read (and check) all of it now: errors surface before tracing, and a one-shot
        # generator or dataset is consumed once.
        batches = list(representative_batches(representative_data, shape, None))
        check_calibration_range(model, batches)
    # Executions are forced and int8 rewrites applied on a copy, never the user's model.
    model = private_copy(model) if copy is None else copy
    # Full integer: trace and freeze the int8-friendly, float-identical form (see
    # `int8_rewrites`); the converter reads the variables when it converts.
    with contextlib.ExitStack() as rewrites:
        if quantization == "int8":
            # the execution the file is traced with, which bias correction emulates
            rewrites.enter_context(forced_execution(model, execution, runtime=_INT8_RUNTIME))
            rewrites.enter_context(int8_rewrites(model))
            if bias_correction:
                rewrites.enter_context(int8_bias_correction(model, batches))
        converter = _configured_converter(model, shape, execution, quantization, batches,
                                          output_range)
        yield converter, shape, model


def _output_ranges(model, batches, output_range):
    """The int8 ranges `_converter` puts on the outputs of ``model`` (a Keras 3 model; a
    tf_keras QAT twin keeps the ranges it learnt): `mse_range` over the calibration
    images for "mse" (None for an output that is always 0), none (the converter's
    min/max) for "minmax". ``model`` runs eagerly, as the file is about to be traced
    (rewritten, bias-corrected: a cached ``predict`` function would miss the changes)."""
    if output_range == "minmax" or not isinstance(model, keras.Model):
        return None
    ranges = [mse_range(values) for values in model_outputs(model, np.concatenate(batches))]
    return [None if low == high else (low, high) for low, high in ranges]


def _configured_converter(model, shape, execution, quantization, batches,
                          output_range="mse"):
    """The converter `convert_tflite` runs (``model`` already a rewritten private copy)."""
    ranges = _output_ranges(model, batches, output_range) if quantization == "int8" else None
    # Kronecker layers planned for the runtime's measured costs.
    converter = _converter(model, shape, execution, _runtime(quantization), ranges)
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":

        def representative_dataset():
            for batch in batches:
                yield [batch]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
    return converter


def to_tflite(model, path, quantization=None, representative_data=None, batch_size=1,
              overwrite=False, input_shape=None, execution="factored", bias_correction="auto",
              output_range="mse", max_calibration_examples=MAX_CALIBRATION_EXAMPLES):
    """Export ``model`` to a LiteRT flatbuffer with a fixed input shape.

    Args:
        model: a built single-input functional model, Keras 3 (TensorFlow backend)
            or tf_keras (e.g. a tfmot QAT model from `kronecker_zoo.optimize`), taking
            raw 0..255 float pixels. The file's input is float32 whatever the model's
            input dtype (a ``uint8`` or ``int32`` input is cast inside the file).
        path: str or os.PathLike. The .tflite file to write.
        quantization: `None` (float32), `"float16"` (float16 weights), `"dynamic"`
            (int8 weights, float activations) or `"int8"` (full integer, calibrated;
            float32 input and output, see the module docstring).
        representative_data: images for "int8" calibration: an array
            ``(N, H, W, C)`` (or ``(N, H, W)`` for one channel), an iterable of such
            batches or of ``(images, labels)`` tuples (e.g. a `tf.data.Dataset`), or a
            callable returning one, in the model's input range. Required for "int8"
            (no default; see `pretraining_calibration_data`). Only its first
            ``max_calibration_examples`` examples are read.
        batch_size: int. The file's fixed batch. Defaults to `1`.
        overwrite: bool. Replace an existing file. Defaults to `False` (raise
            `FileExistsError`).
        input_shape: `(H, W, C)` for a model built with unknown height/width.
        execution: `"factored"` (default: Kronecker layers stored as factors),
            `"materialized"` (full kernels constant-folded: for comparisons),
            `"as_built"` (each layer's own choice), or a dict ``{layer name:
            "factored" | "materialized"}`` (the layers it does not name factored): e.g.
            the layers `benchmarks/student_layers_litert.py` finds faster materialised
            on your device, at the cost of their full kernels in the file; or
            `"planned"`: factored except the layers LiteRT's cost model (calibrated on
            XNNPACK, float32 and int8 apart) finds faster materialised, within the
            file-size budget (`planned_plan`, `extra_weights_budget`: counted in
            bytes, so an int8 file holds four times the extra weights of a float32
            one; ``TFLiteExport.execution`` names them).
        bias_correction: `"auto"`, `True` or `False`. "int8" only: `True` folds into
            the file's biases the mean output shift that int8 weight rounding of
            Conv2D, Dense, depthwise, separable, Kronecker and low-rank layers causes on
            ``representative_data``
            (`bias_correction.int8_bias_correction`); `False` exports the biases as
            they are; `"auto"` (default) converts both ways and keeps the file whose
            outputs are closer to ``model``'s on ``representative_data`` (SQNR): the
            correction usually helps, but where a constant background's rounding
            dominates it can hurt. ``TFLiteExport.bias_corrected`` says which was kept.
        output_range: `"mse"` or `"minmax"`. "int8" only, Keras 3 models: the int8 range
            of the model's outputs (the logits), `"mse"` (default) the one minimising
            their quantization error on ``representative_data``
            (`output_range.mse_range`; the largest values are clipped) rather than
            the calibration's min and max (`"minmax"`), whose few extreme logits make
            the grid coarse for the rest. A tf_keras QAT twin keeps the ranges it learnt.
        max_calibration_examples: int or `None`. "int8" only: the examples of
            ``representative_data`` read (a warning says when some are left unread; an
            endless dataset is fine); `None` reads all. Defaults to 1,024: calibration
            time grows with it (about 20 s for 256 images of `kron_resnet_8` on 2 cores),
            and a few hundred images are what it needs.

    Returns:
        `TFLiteExport` (``path``, ``size_bytes``, ``quantization`` (as read from the
        file: "dynamic" gives a float32 file, with a warning, where no weight tensor is
        large enough for the converter to quantize), ``input_shape``, ``params``,
        ``execution``, ``ops``, ``kronecker_layers``, ``bias_corrected``,
        ``output_range``); ``os.fspath()`` of it is the path. A model with several
        outputs gives a file with several, in `tf.nest.flatten` order (a list's order;
        a dict's by sorted key), which `run_tflite` returns.

    Raises:
        ValueError: bad arguments (naming the valid choices), missing or
            out-of-range ``representative_data``; `FileExistsError`:
            ``path`` exists and ``overwrite`` is False; `TFLiteOpsError`: the
            converted graph holds Flex/custom or SPACE_TO_BATCH_ND ops.
    """
    path = check_output_file(path, overwrite)
    content, shape, corrected = _convert(model, quantization, representative_data,
                                         batch_size, input_shape, execution, bias_correction,
                                         output_range,
                                         max_calibration_examples=max_calibration_examples)
    executed = resolve_execution(model, execution, _runtime(quantization))
    write_atomically(path, content, overwrite)
    asked = _check_quantization(quantization) or "float32"
    written = tflite_quantization(path)
    if written != asked:
        warnings.warn(f"to_tflite: asked for {asked!r}, the converter wrote a {written!r} "
                      f"file ({os.fspath(path)}): " + (
                          "dynamic-range quantization leaves weight tensors under 1,024 "
                          "elements in float, and this model has no larger one"
                          if asked == "dynamic" else "see the converter's log"),
                      stacklevel=2)
    return TFLiteExport(
        path=path,
        size_bytes=len(content),
        quantization=written,
        input_shape=shape,
        params=int(model.count_params()),
        execution=dict(executed) if isinstance(executed, dict) else executed,
        ops=tuple(tflite_ops(content)),
        kronecker_layers=len(execution_layers(model)),
        bias_corrected=corrected,
        output_range=(output_range if quantization == "int8" and isinstance(model, keras.Model)
                      else None),
    )


def file_size_bound(params):
    """The size a float32 export should stay under: ``1.2 * 4 B * params + 64 KiB``."""
    return int(1.2 * 4 * params) + 64 * 1024
