#!/usr/bin/env bash
# The test suite: set up, native kernel tests (host, then aarch64 under qemu), the delegate under
# AddressSanitizer, then pytest. NPAS_SKIP_NATIVE=1 skips the aarch64 and sanitizer stages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S delegate -B build/native-tests -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/native-tests -j "$(nproc)" >/dev/null
for t in build/native-tests/test_*; do
  if [ -x "$t" ]; then echo "== $t"; "$t"; fi
done
if [ "${NPAS_SKIP_NATIVE:-0}" != 1 ]; then
  echo "== aarch64 cross build, NEON kernel tests under qemu"
  bash delegate/tests/run_aarch64.sh
  echo "== delegate under AddressSanitizer"
  bash delegate/tests/run_asan.sh
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
