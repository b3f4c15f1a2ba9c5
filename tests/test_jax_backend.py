"""Run the layer and kernel tests once more under KERAS_BACKEND=jax (subprocess).

The subprocess starts as soon as pytest has collected this test (tests/jax_rerun.py,
conftest), beside the rest of the suite; the test waits for it and checks it.
"""

import os

import pytest

from tests import jax_rerun


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="this is the outer (TensorFlow) run")
def test_layer_tests_pass_under_jax():
    if not jax_rerun.start():
        pytest.fail("jax is not installed: `pip install .[test]` installs it")
    code, output = jax_rerun.wait()
    tail = "\n".join(output.splitlines()[-40:])
    assert code == 0, f"layer tests failed under JAX:\n{tail}"
    assert " passed" in output, tail
