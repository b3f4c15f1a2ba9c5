"""Exporting zoo models: LiteRT (.tflite) files and XLA SavedModels.

    from kronecker_zoo import models
    from kronecker_zoo.export import (to_tflite, verify_tflite, check_tflite_ops, to_xla,
                                      pretraining_calibration_data)

    model = models.get("kron_resnet_8", weights="fashion_mnist")
    calibration = pretraining_calibration_data("kron_resnet_8", "fashion_mnist")
    info = to_tflite(model, "kron_resnet_8_int8.tflite", quantization="int8",
                     representative_data=calibration)  # never guessed: always passed
    check_tflite_ops(info)                        # no Flex, no SPACE_TO_BATCH_ND
    print(verify_tflite(model, info, images, labels))
    to_xla(model, "kron_resnet_8_xla")            # SavedModel (jit_compile) + HLO text

One idea per module: `execution` (Kronecker layers traced factored), `signature`
(the fixed input shape), `calibration` (int8 calibration images, their range
check), `tflite` (conversion), `int8_rewrites` (float-exact int8-friendly
rewrites), `bias_correction` (int8 weight rounding's mean shift folded into the
biases), `inspect_tflite` (ops and quantization read from the file), `int8_noise`
(the int8 noise each op adds), `runner` (LiteRT interpreter, latency), `verify`
(parity with Keras), `xla` (XLA SavedModel and HLO).
"""

from kronecker_zoo import runtime

runtime.require_extra("export", "kronecker_zoo.export")

from kronecker_zoo.export.calibration import (
    MAX_CALIBRATION_EXAMPLES,
    calibration_images,
    check_calibration_range,
    model_input_range,
    pretraining_calibration_data,
)
from kronecker_zoo.export.execution import FORCED_EXECUTIONS, execution_layers, forced_execution
from kronecker_zoo.export.int8_noise import (
    ROUNDING_FLOOR_STEPS,
    FloatOpGain,
    OpNoise,
    int8_float_op_gain,
    int8_op_noise,
)
from kronecker_zoo.export.inspect_tflite import (
    FORBIDDEN_OPS,
    TFLiteOpsError,
    check_tflite_ops,
    tflite_io,
    tflite_op_counts,
    tflite_ops,
    tflite_ops_by_layer,
    tflite_quantization,
)
from kronecker_zoo.export.runner import (
    TFLiteRunner,
    benchmark_tflite,
    benchmark_tflite_interleaved,
    run_tflite,
)
from kronecker_zoo.export.tflite import (
    QUANTIZATIONS,
    TFLiteExport,
    convert_tflite,
    file_size_bound,
    representative_batches,
    to_tflite,
)
from kronecker_zoo.export.verify import (
    MAX_REL_ERROR,
    MIN_AGREEMENT,
    MIN_SQNR_DB,
    VerificationReport,
    verify_tflite,
)
from kronecker_zoo.export.xla import XLAExport, to_xla

__all__ = [
    "FORCED_EXECUTIONS",
    "FORBIDDEN_OPS",
    "FloatOpGain",
    "MAX_CALIBRATION_EXAMPLES",
    "MAX_REL_ERROR",
    "MIN_AGREEMENT",
    "MIN_SQNR_DB",
    "OpNoise",
    "QUANTIZATIONS",
    "ROUNDING_FLOOR_STEPS",
    "TFLiteExport",
    "TFLiteOpsError",
    "TFLiteRunner",
    "VerificationReport",
    "XLAExport",
    "benchmark_tflite",
    "benchmark_tflite_interleaved",
    "calibration_images",
    "check_calibration_range",
    "check_tflite_ops",
    "int8_float_op_gain",
    "convert_tflite",
    "execution_layers",
    "file_size_bound",
    "forced_execution",
    "int8_op_noise",
    "model_input_range",
    "pretraining_calibration_data",
    "representative_batches",
    "run_tflite",
    "tflite_io",
    "tflite_op_counts",
    "tflite_ops",
    "tflite_ops_by_layer",
    "tflite_quantization",
    "to_tflite",
    "to_xla",
    "verify_tflite",
]
