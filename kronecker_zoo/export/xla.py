"""`to_xla`: an XLA-compiled SavedModel with a fixed input shape, plus its HLO text.

Under the TensorFlow backend (and for tf_keras models) the SavedModel's serving
function is a ``tf.function(jit_compile=True)`` over the model's forward pass with
the static signature ``(batch_size, H, W, C)``, saved from a `tf.Module` that
tracks the model's variables (not the Keras objects, so loading needs neither
Keras nor kronecker_zoo). Next to it: the function's HLO (``model.hlo.txt``) and
StableHLO (``model.stablehlo.mlir``) as TensorFlow's XLA bridge emits them.

Under the JAX backend the SavedModel is written by Keras' `ExportArchive` (jax2tf:
the function is embedded as StableHLO and compiled by XLA when run), and the HLO /
StableHLO text comes from ``jax.jit(...).lower(...)``.

Kronecker layers are traced factored, as for TFLite (see `forced_execution`).
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from kronecker_zoo.export.execution import check_execution, forced_execution, private_copy
from kronecker_zoo.export.signature import input_signature, static_input_shape

HLO_FILE = "model.hlo.txt"
STABLEHLO_FILE = "model.stablehlo.mlir"
INFO_FILE = "xla_export.json"


@dataclasses.dataclass(frozen=True)
class XLAExport:
    """What `to_xla` wrote; ``tf.saved_model.load(info.directory).serve(images)``."""

    directory: str
    input_shape: tuple
    backend: str
    hlo_path: str = None
    stablehlo_path: str = None
    notes: tuple = ()

    def __fspath__(self):
        return self.directory

    def __str__(self):
        return self.directory


def _check_directory(directory):
    if not isinstance(directory, (str, os.PathLike)):
        raise ValueError(f"`directory` must be a str or os.PathLike. Received: {directory!r}")
    directory = os.fspath(directory)
    if os.path.isfile(directory):
        raise ValueError(f"{directory!r} is a file; to_xla writes a SavedModel directory.")
    if os.path.isdir(directory) and os.listdir(directory):
        raise FileExistsError(f"{directory!r} is not empty; not writing into it (nothing saved "
                              "there is replaced). Choose a new or empty directory.")
    return directory


def _is_keras3(model):
    return isinstance(model, keras.Model)


def _tf_variables(model):
    return [v if isinstance(v, tf.Variable) else v.value for v in model.variables]


def _export_tensorflow(model, directory, shape, execution):
    module = tf.Module()
    module.model_variables = _tf_variables(model)

    def serve(images):
        return model(images, training=False)

    module.serve = tf.function(serve, input_signature=input_signature(shape), jit_compile=True,
                               autograph=False)
    notes = []
    with forced_execution(model, execution):
        concrete = module.serve.get_concrete_function()
        tf.saved_model.save(module, directory, signatures={"serving_default": concrete})
        ir = module.serve.experimental_get_compiler_ir(tf.TensorSpec(shape, tf.float32))
        paths = {}
        for stage, name in (("hlo", HLO_FILE), ("stablehlo", STABLEHLO_FILE)):
            try:
                text = ir(stage=stage)
            except Exception as error:  # noqa: BLE001 - optional artefact, say why it is missing
                notes.append(f"{stage} not written: {type(error).__name__}: {error}")
                continue
            paths[stage] = os.path.join(directory, name)
            with open(paths[stage], "w") as f:
                f.write(text)
    return paths.get("hlo"), paths.get("stablehlo"), notes


def _export_jax(model, directory, shape, execution):
    import jax

    from keras.export import ExportArchive

    notes = []
    with forced_execution(model, execution):
        archive = ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda images: model(images, training=False),
                             input_signature=input_signature(shape))
        archive.write_out(directory, verbose=False)
        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def forward(images):
            return model.stateless_call(trainable, frozen, images, training=False)[0]

        lowered = jax.jit(forward).lower(jax.ShapeDtypeStruct(shape, np.float32))
    paths = {"stablehlo": os.path.join(directory, STABLEHLO_FILE),
             "hlo": os.path.join(directory, HLO_FILE)}
    with open(paths["stablehlo"], "w") as f:
        f.write(lowered.as_text())
    try:
        text = lowered.as_text(dialect="hlo")
    except Exception as error:  # noqa: BLE001 - optional artefact
        notes.append(f"hlo not written: {type(error).__name__}: {error}")
        paths.pop("hlo")
    else:
        with open(paths["hlo"], "w") as f:
            f.write(text)
    notes.append("JAX backend: SavedModel written by keras.export.ExportArchive (jax2tf); "
                 "its serving function runs the embedded StableHLO through XLA.")
    return paths.get("hlo"), paths.get("stablehlo"), notes


def to_xla(model, directory, batch_size=1, input_shape=None, execution="factored"):
    """Save ``model`` as an XLA-compiled SavedModel with a fixed input shape.

    Args:
        model: a built single-input model (Keras 3 or tf_keras) on raw 0..255 pixels.
        directory: a new or empty directory (a non-empty one is refused).
        batch_size: int. The fixed batch of the serving signature. Defaults to `1`.
        input_shape: `(H, W, C)` for a model built with unknown height/width.
        execution: `"factored"` (default), `"materialized"` or `"as_built"` for
            layers with an execution choice, a per-layer dict ``{layer name:
            "factored" | "materialized"}``, or `"planned"` (factored except the layers
            the cost model of Keras' backend finds faster materialised; see
            `forced_execution`).

    Returns:
        `XLAExport`. Reload with ``tf.saved_model.load(directory)``: ``.serve(images)``
        (or the ``"serving_default"`` signature) returns the model's logits.
    """
    check_execution(execution)
    directory = _check_directory(directory)
    shape = static_input_shape(model, batch_size, input_shape)
    backend = keras.backend.backend() if _is_keras3(model) else "tensorflow"
    if backend not in ("tensorflow", "jax"):
        raise ValueError(f"to_xla supports the TensorFlow and JAX backends; Keras runs on "
                         f"{backend!r}.")
    os.makedirs(directory, exist_ok=True)
    export = _export_jax if backend == "jax" else _export_tensorflow
    hlo, stablehlo, notes = export(private_copy(model), directory, shape, execution)
    info = XLAExport(directory=directory, input_shape=shape, backend=backend, hlo_path=hlo,
                     stablehlo_path=stablehlo, notes=tuple(notes))
    with open(os.path.join(directory, INFO_FILE), "w") as f:
        json.dump({"model": getattr(model, "name", None), "input_shape": list(shape),
                   "input_dtype": "float32", "backend": backend, "jit_compile": True,
                   "execution": execution, "hlo": hlo and os.path.basename(hlo),
                   "stablehlo": stablehlo and os.path.basename(stablehlo),
                   "notes": list(notes)}, f, indent=2)
    return info
