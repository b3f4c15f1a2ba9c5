"""The layer and kernel tests once more under KERAS_BACKEND=jax, in a subprocess.

`start` launches it (once per process; conftest does so as soon as the outer run has
collected ``test_layer_tests_pass_under_jax``, so it runs beside the other tests,
which leave a core idle most of the time); `wait` returns its exit code and output.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile

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
TIMEOUT = 1200
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_run = None  # (process, log file) once started


def start():
    """Start the subprocess unless it runs already; `False` when jax is not installed."""
    global _run
    if _run is None:
        if importlib.util.find_spec("jax") is None:
            return False
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
        log = tempfile.TemporaryFile(mode="w+")
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *LAYER_TESTS],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _run = (process, log)
    return True


def wait():
    """``(exit code, output)`` of the subprocess (started if needed)."""
    process, log = _run
    try:
        code = process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    log.seek(0)
    return code, log.read()


def stop():
    """Kill the subprocess if it still runs (an aborted outer run)."""
    if _run is not None and _run[0].poll() is None:
        _run[0].kill()
