"""Run one test file once more under KERAS_BACKEND=jax, in a subprocess.

``LAYER_TESTS``: the kernel math, every layer, every registry model, compress
(factorize, the students' architecture, the distillation loss).

`tests/test_jax_backend.py` does so for every file of ``LAYER_TESTS``, one test per file,
so that pytest-xdist spreads them over its workers like any other test.
"""

import importlib.util
import os
import subprocess
import sys

LAYER_TESTS = [  # longest first (pytest-xdist hands them out in this order)
    "tests/test_models.py",
    "tests/test_kronecker_conv.py",
    "tests/test_dilated_stack.py",
    "tests/test_kronecker_dense.py",
    "tests/test_compress.py",
    "tests/test_low_rank_conv.py",
    "tests/test_context_module.py",
    "tests/test_backend_gradients.py",
    "tests/test_students.py",
    "tests/test_distillation_loss.py",
    "tests/test_kernels.py",
]
TIMEOUT = 1200
# These small tests spend most of their time compiling, not computing. On CPU, JAX's
# default (partitionable) threefry PRNG compiles for ~2 s per new weight shape, i.e. per
# layer built; the classic threefry lowering ~0.3 s (other random numbers, same
# distribution). XLA's backend optimisation level 0 compiles faster still; the tests
# compare values with references, not speed. Measured: tests/test_models.py under JAX
# 299 s -> 118 s, tests/test_students.py 92 s -> 30 s (2-core AMD EPYC).
COMPILE_FAST = {"JAX_THREEFRY_PARTITIONABLE": "0",
                "XLA_FLAGS": " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                    "--xla_backend_optimization_level=0"]))}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def available():
    return importlib.util.find_spec("jax") is not None


def run(test_file):
    """``(exit code, output)`` of ``pytest test_file`` with ``KERAS_BACKEND=jax``."""
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", **COMPILE_FAST)
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         test_file], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=TIMEOUT)
    return result.returncode, result.stdout
