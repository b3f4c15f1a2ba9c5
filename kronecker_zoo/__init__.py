"""kronecker_zoo: Kronecker-factored and dilated convolutions for Keras 3.

    import kronecker_zoo as kz
    layer = kz.layers.KroneckerConv2D(64, 9, factors=[(3, 3, 8, 8), (3, 3, 8, 8)])
    kz.kernels.kron(A, B)            # pure kernel math, NumPy in -> NumPy out
    model = kz.models.get("kron_resnet_8", weights="fashion_mnist")
    print(kz.report.parameter_report(model))
    kz.export.to_tflite(model, "kron_resnet_8.tflite", quantization="int8",
                        representative_data=kz.export.pretraining_calibration_data(
                            "kron_resnet_8", "fashion_mnist"))
    qat = kz.optimize.quantize_aware(model)   # tfmot QAT / pruning (tf_keras twin)

`export`, `optimize` and `tf_keras_bridge` are imported on first use (they load
TensorFlow Lite, tfmot and tf_keras). ``.keras`` files of zoo models load with
``keras.saving.load_model`` only after ``import kronecker_zoo`` (it registers the
zoo layers; without it Keras cannot locate classes such as ``KroneckerConv2D``).
"""

import importlib

__version__ = "0.1.0"

from kronecker_zoo import (
    data,
    evaluation,
    kernels,
    layers,
    models,
    ops,
    report,
    runtime,
)
from kronecker_zoo.kernels import collapse, dilate, kron, receptive_field
from kronecker_zoo.layers import (
    ContextModule,
    DilatedStack,
    KroneckerConv2D,
    KroneckerDense,
    LowRankConv2D,
)

_LAZY_MODULES = ("export", "optimize", "tf_keras_bridge")


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"kronecker_zoo.{name}")
    raise AttributeError(f"module 'kronecker_zoo' has no attribute {name!r}")


__all__ = [
    "ContextModule",
    "DilatedStack",
    "KroneckerConv2D",
    "KroneckerDense",
    "LowRankConv2D",
    "collapse",
    "data",
    "dilate",
    "evaluation",
    "export",
    "kernels",
    "kron",
    "layers",
    "models",
    "ops",
    "optimize",
    "receptive_field",
    "report",
    "runtime",
]
