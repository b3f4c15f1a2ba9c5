"""runtime: which CPU kernels TensorFlow runs, read back from TensorFlow itself."""

import os
import platform
import subprocess
import sys

import pytest

from kronecker_zoo import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kernels_with(flag):
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=flag, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", "from kronecker_zoo import runtime; "
         "print(runtime.tensorflow_cpu_kernels()); print(runtime.describe())"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-2:]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="TF_ENABLE_ONEDNN_OPTS=1 forces oneDNN on x86 builds")
def test_the_environment_variable_switches_the_kernels():
    eigen, line = _kernels_with("0")
    assert eigen == "Eigen" and "Eigen (TF_ENABLE_ONEDNN_OPTS=0)" in line
    onednn, line = _kernels_with("1")
    assert onednn == "oneDNN" and "oneDNN (TF_ENABLE_ONEDNN_OPTS=1)" in line


def test_describe_names_the_cpu_and_cores():
    text = runtime.describe()
    assert runtime.cpu_model() in text and f"{os.cpu_count()} cores" in text
    assert runtime.tensorflow_cpu_kernels() in ("oneDNN", "Eigen")
