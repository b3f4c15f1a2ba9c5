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


# Files whose slow tests run longest (the JAX reruns of the model and layer tests, the
# tfmot fine-tunes, the fine-tuning and distributed runs): started first of all.
LONGEST_FIRST = ("test_jax_backend.py", "test_optimize.py", "test_pretrained.py",
                 "test_distributed.py")


def pytest_collection_modifyitems(config, items):
    """The long tests (marked slow) first, the longest files' first of those, otherwise
    collection order: parallel workers (``pytest -n``, which run.sh runs with
    ``--maxschedchunk 1``, i.e. one test at a time to whichever worker is free) then never
    end waiting on one long test that started last."""

    def key(item):
        slow = item.get_closest_marker("slow") is not None
        name = os.path.basename(str(item.fspath))
        rank = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return (not slow, rank if slow else 0)

    items.sort(key=key)
