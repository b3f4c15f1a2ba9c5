"""kronecker_zoo: Kronecker-factored and dilated convolutions for Keras 3.

    import kronecker_zoo as kz
    layer = kz.layers.KroneckerConv2D(64, 9, factors=[(3, 3, 8, 8), (3, 3, 8, 8)])
    kz.kernels.kron(A, B)            # pure kernel math, NumPy in -> NumPy out
    model = kz.models.get("kron_resnet_8")
    print(kz.report.parameter_report(model))
"""

__version__ = "0.1.0"

from kronecker_zoo import (
    data,
    evaluation,
    finetune_examples,
    kernels,
    layers,
    models,
    ops,
    report,
)
from kronecker_zoo.kernels import collapse, dilate, kron, receptive_field
from kronecker_zoo.layers import (
    ContextModule,
    DilatedStack,
    KroneckerConv2D,
    KroneckerDense,
    LowRankConv2D,
)

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
    "finetune_examples",
    "kernels",
    "kron",
    "layers",
    "models",
    "ops",
    "receptive_field",
    "report",
]
