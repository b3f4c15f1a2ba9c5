"""Optional features name the extra that installs what they miss."""

import os
import subprocess
import sys

import pytest

from kronecker_zoo import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_require_extra_names_the_package_and_the_extra(monkeypatch):
    runtime.require_extra("export", "kronecker_zoo.export")  # installed here: no error
    real = runtime.importlib.util.find_spec
    monkeypatch.setattr(runtime.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ai_edge_litert" else real(name, *a))
    with pytest.raises(ImportError, match=r"kronecker_zoo.export needs ai-edge-litert, which "
                                          r"is not installed\. Install it with: pip install "
                                          r"'kronecker-zoo\[export\]'"):
        runtime.require_extra("export", "kronecker_zoo.export")


@pytest.mark.parametrize("module, missing, extra", [
    ("kronecker_zoo.export", "ai_edge_litert", "export"),
    ("kronecker_zoo.optimize", "tensorflow_model_optimization", "optimize"),
    ("kronecker_zoo.tf_keras_bridge", "tf_keras", "optimize"),
])
def test_importing_a_feature_without_its_packages_says_which_extra(module, missing, extra):
    """In a fresh interpreter where ``missing`` cannot be found, importing ``module`` fails
    with the extra's name; the layers and models still import."""
    code = (f"import importlib.util, sys\n"
            f"real = importlib.util.find_spec\n"
            f"importlib.util.find_spec = lambda n, *a: None if n == {missing!r} else real(n, *a)\n"
            f"sys.modules[{missing!r}] = None\n"
            f"import kronecker_zoo, kronecker_zoo.layers, kronecker_zoo.models\n"
            f"try:\n    import {module}\nexcept ImportError as e:\n    print('ERR', e)\n")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300).stdout
    assert f"pip install 'kronecker-zoo[{extra}]'" in out, out[-2000:]
