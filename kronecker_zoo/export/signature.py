"""The fixed input signature every export is traced with, and file-safety checks.

Exports are traced for one fully static input shape ``(batch_size, H, W, C)``:
with a dynamic batch TFLite lowers dilated convolutions to
SPACE_TO_BATCH_ND + CONV_2D + BATCH_TO_SPACE_ND (no fused ReLU, rejected by mobile
GPU delegates); with a static one they stay a single dilated CONV_2D. XLA needs
static shapes anyway.
"""

import os

import tensorflow as tf

from kronecker_zoo import runtime
from kronecker_zoo.validation import positive_int


def check_tensorflow_model(model, what="to_tflite"):
    """Raise unless ``model`` can be traced by TensorFlow (tf_keras, or Keras 3 on TF)."""
    import keras

    if isinstance(model, keras.Model):
        runtime.require_tensorflow_backend(what, "traces the model with TensorFlow")


def static_input_shape(model, batch_size=1, input_shape=None):
    """``(batch_size, H, W, C)`` for ``model``'s single input, every entry an int.

    ``input_shape`` ``(H, W, C)`` fills in (or must agree with) the model's own
    shape; it is needed when the model was built with ``None`` height/width.
    """
    batch_size = positive_int(batch_size, "batch_size")
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ValueError(f"Export supports single-input models; {model.name!r} has "
                             f"{len(shape)} inputs: {shape}")
        shape = shape[0]
    if shape is None or len(shape) < 2:
        raise ValueError(f"Cannot read the input shape of {getattr(model, 'name', model)!r}; "
                         "export a built functional model (e.g. from models.get).")
    shape = tuple(shape[1:])
    if input_shape is not None:
        given = tuple(input_shape)
        if len(given) != len(shape) or any(
                isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in given):
            raise ValueError(f"`input_shape` must be {len(shape)} positive ints (H, W, C), "
                             f"without the batch. Received: input_shape={input_shape!r}")
        clash = [(m, g) for m, g in zip(shape, given) if m is not None and m != g]
        if clash:
            raise ValueError(f"`input_shape` {given} disagrees with the model's input "
                             f"shape {shape}.")
        shape = given
    if any(d is None for d in shape):
        raise ValueError(
            f"The model's input shape {shape} has unknown dimensions; exports need a fully "
            "static shape. Pass input_shape=(H, W, C), e.g. input_shape=(64, 64, 1)."
        )
    return (batch_size,) + tuple(int(d) for d in shape)


def input_signature(shape):
    return [tf.TensorSpec(shape, tf.float32, name="images")]


def inference_function(model, shape, jit_compile=False, output_ranges=None):
    """A `tf.function` ``images -> logits`` (``training=False``) with a static signature.

    Works for Keras 3 (TensorFlow backend) and tf_keras models. Trace it (e.g.
    ``get_concrete_function()``) inside `forced_execution` to pin the execution.
    ``output_ranges``: ``[(low, high) or None, ...]``, one per (flattened) output, puts an
    8-bit fake-quant op with that range on each output (the range an int8 file gives it;
    None: none, the converter's calibration decides).
    """

    def serve(images):
        outputs = model(images, training=False)
        if output_ranges is None:
            return outputs
        flat = [y if bounds is None else tf.quantization.fake_quant_with_min_max_args(
            y, min=float(bounds[0]), max=float(bounds[1]), num_bits=8)
            for y, bounds in zip(tf.nest.flatten(outputs), output_ranges, strict=True)]
        return tf.nest.pack_sequence_as(outputs, flat)

    return tf.function(serve, input_signature=input_signature(shape),
                       jit_compile=jit_compile, autograph=False)


def check_output_file(path, overwrite):
    """Refuse to replace an existing file unless ``overwrite`` (nothing saved is lost)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"`path` must be a str or os.PathLike. Received: path={path!r}")
    if not isinstance(overwrite, bool):
        raise ValueError(f"`overwrite` must be True or False. Received: overwrite={overwrite!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"`path` {path!r} is a directory; give a file name ending in .tflite.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path!r} already exists; not replacing it. Pass overwrite=True to replace it, "
            "or choose another path."
        )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"The folder {parent!r} for {path!r} does not exist.")
    return path


def write_atomically(path, content, overwrite=True):
    """Write bytes to ``path`` through a temporary file, so a failure leaves no stub.
    With ``overwrite=False`` a file that appeared at ``path`` meanwhile is kept
    (`FileExistsError`): the new one is linked in only where nothing is."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(content)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path exists, unlike a rename
            except FileExistsError:
                raise FileExistsError(f"{os.fspath(path)!r} appeared while exporting; it is "
                                      "kept. Pass overwrite=True to replace it.") from None
            except OSError:  # a file system without hard links: check, then rename
                if os.path.exists(path):
                    raise FileExistsError(f"{os.fspath(path)!r} appeared while exporting; "
                                          "it is kept.") from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
