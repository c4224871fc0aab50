#!/usr/bin/env bash
# The test suite: set up, native kernel tests, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S delegate -B build/native-tests -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/native-tests -j "$(nproc)" >/dev/null
for t in build/native-tests/test_*; do
  [ -x "$t" ] && echo "== $t" && "$t"
done
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
