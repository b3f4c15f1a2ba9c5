"""Run the layer and kernel tests once more under KERAS_BACKEND=jax (subprocess)."""

import importlib.util
import os
import subprocess
import sys

import pytest

LAYER_TESTS = [
    "tests/test_kernels.py",
    "tests/test_kronecker_conv.py",
    "tests/test_kronecker_dense.py",
    "tests/test_low_rank_conv.py",
    "tests/test_dilated_stack.py",
    "tests/test_context_module.py",
    "tests/test_backend_gradients.py",
    "tests/test_models.py",
]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="this is the outer (TensorFlow) run")
def test_layer_tests_pass_under_jax():
    if importlib.util.find_spec("jax") is None:
        pytest.fail("jax is not installed: `pip install .[test]` installs it")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *LAYER_TESTS],
        cwd=root, env=env, capture_output=True, text=True, timeout=1200,
    )
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
    assert result.returncode == 0, f"layer tests failed under JAX:\n{tail}"
    assert " passed" in result.stdout and "jax" in env["KERAS_BACKEND"], tail
