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


def pytest_collection_modifyitems(config, items):
    """The long tests (marked slow) first, otherwise collection order: parallel workers
    (``pytest -n``, as run.sh runs the suite) then never end waiting on one long test
    that started last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
