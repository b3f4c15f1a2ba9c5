"""Shared pytest setup: backend, markers, hypothesis profile."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import warnings  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests (still part of the default suite)")
    config.addinivalue_line(
        "markers",
        "training: gradients, fit, fine-tuning, distributed and optimize tests; run.sh runs "
        "them a second time with TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's Eigen CPU kernels)")


def pytest_report_header(config):
    from kronecker_zoo import runtime

    return f"machine: {runtime.describe()}"


@pytest.fixture(autouse=True)
def _keep_working_directory(request):
    """Put the working directory back if a test (or a library under it) moved it."""
    before = os.getcwd()
    yield
    try:
        moved = os.getcwd() != before
    except FileNotFoundError:  # moved into a directory that is gone since
        moved = True
    if moved:
        os.chdir(before)
        warnings.warn(f"{request.node.nodeid} changed the working directory; restored")


def pytest_collection_finish(session):
    """Start the JAX rerun (tests/jax_rerun.py) early, beside the other tests."""
    if session.config.option.collectonly:
        return
    if os.environ["KERAS_BACKEND"] == "tensorflow" and any(
            item.nodeid.endswith("test_jax_backend.py::test_layer_tests_pass_under_jax")
            for item in session.items):
        from tests import jax_rerun

        jax_rerun.start()


def pytest_unconfigure(config):
    """Never leave the JAX rerun running behind an aborted run (-x, Ctrl-C)."""
    import sys

    jax_rerun = sys.modules.get("tests.jax_rerun")
    if jax_rerun is not None:
        jax_rerun.stop()
