"""What this machine runs: CPU model and vector extensions, TensorFlow's CPU kernels.

Speed (and, before this library worked around it, trainability) depends on which
CPU kernels TensorFlow uses: oneDNN where it is enabled (by default only on x86
CPUs with AVX-512 VNNI/BF16, AVX-VNNI or AMX, or with ``TF_ENABLE_ONEDNN_OPTS=1``),
Eigen everywhere else. Benchmarks and bug reports print `describe()`.
"""

import importlib.util
import os
import platform


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else ``platform`` info."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_vector_extensions():
    """The x86 vector extensions that decide TensorFlow's kernels, e.g. ``["AVX2"]``.

    Empty where ``/proc/cpuinfo`` has no x86 flags (other OSes, ARM).
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return []
    wanted = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI",
              "avx512_bf16": "AVX-512 BF16", "avx_vnni": "AVX-VNNI", "amx_tile": "AMX"}
    return [name for flag, name in wanted.items() if flag in flags]


def tensorflow_cpu_kernels():
    """``"oneDNN"`` or ``"Eigen"``: the CPU kernels TensorFlow runs in this process.

    ``None`` when TensorFlow is not installed. Reads TensorFlow's own runtime check
    where it exists, else infers it from ``TF_ENABLE_ONEDNN_OPTS`` and the CPU.
    """
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port

        return "oneDNN" if _pywrap_util_port.IsMklEnabled() else "Eigen"
    except (ImportError, AttributeError):
        pass
    flag = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if flag is not None:
        return "oneDNN" if flag.strip().lower() in ("1", "true") else "Eigen"
    nn = {"AVX-512 VNNI", "AVX-512 BF16", "AVX-VNNI", "AMX"}
    return "oneDNN" if nn & set(cpu_vector_extensions()) else "Eigen"


def describe():
    """One line: CPU, its vector extensions, cores and TensorFlow's CPU kernels."""
    extensions = cpu_vector_extensions()
    if extensions and "AVX-512" not in extensions:
        extensions.append("no AVX-512")
    kernels = tensorflow_cpu_kernels()
    flag = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    text = f"{cpu_model()}"
    if extensions:
        text += f" ({', '.join(extensions)})"
    text += f", {os.cpu_count()} cores"
    if kernels is not None:
        text += (f"; TensorFlow CPU kernels: {kernels} "
                 f"(TF_ENABLE_ONEDNN_OPTS={flag if flag is not None else 'unset'})")
    return text


def require_tensorflow_backend(what, needs):
    """ValueError unless Keras 3 runs on TensorFlow: ``f"{what} {needs}, but ..."``.

    For the features that hand a model to TensorFlow itself (TFLite conversion, the
    tf_keras bridge and tfmot); the message says how to switch backends.
    """
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            f"{what} {needs}, but Keras runs on the {backend!r} backend. Set "
            "KERAS_BACKEND=tensorflow (before Keras is imported), rebuild the model and load "
            "its weights, then call it again.")


# What each optional feature imports, and the extra of setup.cfg that installs it.
EXTRAS = {
    "tensorflow": ("tensorflow",),
    "export": ("tensorflow", "ai_edge_litert"),
    "optimize": ("tensorflow", "tf_keras", "tensorflow_model_optimization"),
}
_PIP_NAMES = {"ai_edge_litert": "ai-edge-litert", "tf_keras": "tf-keras",
              "tensorflow_model_optimization": "tensorflow-model-optimization"}


def require_extra(extra, feature):
    """ImportError naming the missing package and ``pip install 'kronecker-zoo[extra]'``
    unless every package of ``EXTRAS[extra]`` is installed (found, not imported: importing
    tfmot changes the process environment); ``feature`` says who needs them."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            raise ImportError(
                f"{feature} needs {_PIP_NAMES.get(module, module)}, which is not installed. "
                f"Install it with: pip install 'kronecker-zoo[{extra}]'")
