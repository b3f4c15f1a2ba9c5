"""Run the layer, kernel and model tests once more under KERAS_BACKEND=jax (one
subprocess per test file, tests/jax_rerun.py)."""

import os

import pytest

from tests import jax_rerun


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="this is the outer (TensorFlow) run")
@pytest.mark.parametrize("test_file", jax_rerun.LAYER_TESTS,
                         ids=[os.path.basename(f)[:-3] for f in jax_rerun.LAYER_TESTS])
def test_layer_tests_pass_under_jax(test_file):
    if not jax_rerun.available():
        pytest.fail("jax is not installed: `pip install .[test]` installs it")
    code, output = jax_rerun.run(test_file)
    tail = "\n".join(output.splitlines()[-40:])
    assert code == 0, f"{test_file} failed under JAX:\n{tail}"
    assert " passed" in output, tail
