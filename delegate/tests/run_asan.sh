#!/usr/bin/env bash
# Builds libnpas_delegate.so with AddressSanitizer + UBSan (-DNPAS_SANITIZE=ON) and runs
# tests/test_delegate_asan.py against it inside the real LiteRT interpreter.
#   delegate/tests/run_asan.sh [extra pytest args]
# Env: PYTHON (default .venv/bin/python or python3), BUILD_DIR (default build/asan), JOBS (2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build/asan}"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

cmake -S "$ROOT/delegate" -B "$BUILD_DIR" -DNPAS_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j"${JOBS:-2}" --target npas_delegate

LIBASAN="$(${CXX:-c++} -print-file-name=libasan.so)"
if [[ ! -f "$LIBASAN" ]]; then
  echo "run_asan.sh: libasan.so not found (got '$LIBASAN'); install the compiler's asan runtime" >&2
  exit 2
fi

MODELS="$(mktemp -d)"
trap 'rm -rf "$MODELS"' EXIT
# Models come from TensorFlow's converter, which is not run under the sanitizer.
(cd "$ROOT" && PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" tests/test_delegate_asan.py --write-models "$MODELS")

cd "$ROOT"
export NPAS_ASAN=1 NPAS_ASAN_MODELS="$MODELS" NPAS_DELEGATE_LIB="$BUILD_DIR/libnpas_delegate.so"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Python and the interpreter's own libraries are not sanitized: no leak checking, and tolerate
# their allocator quirks; anything the delegate does wrong still aborts the run.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:alloc_dealloc_mismatch=0:detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
LD_PRELOAD="$LIBASAN" "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_delegate_asan.py "$@"
