"""`python examples/demo.py` command line: --help prints usage without running."""

import os
import subprocess
import sys
import time

import pytest

from examples import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_demo_steps(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a demo step ran")
    monkeypatch.setattr(demo.kz.data, "fashion_mnist", fail)
    monkeypatch.setattr(demo, "seed_identity", fail)


def test_help_prints_usage_and_steps_without_running(capsys, no_demo_steps):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python examples/demo.py")
    assert "9. That pretrained model exported" in out


def test_unknown_argument_is_a_usage_error(capsys, no_demo_steps):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_script_help_exits_quickly():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.monotonic()
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "demo.py"), "--help"],
                            cwd=os.path.dirname(ROOT), env=env, capture_output=True, text=True,
                            timeout=300)
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: python examples/demo.py")
    assert "== 1." not in result.stdout  # no demo step ran
    # Importing Keras/TensorFlow dominates (about 8 s here); the demo itself takes minutes.
    assert seconds < 120, seconds
