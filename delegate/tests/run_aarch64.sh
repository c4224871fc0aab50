#!/usr/bin/env bash
# Cross-builds the delegate for aarch64 Linux and tests the NEON kernels under qemu, plus the
# Android Java/JNI wrapper:
#   1. installs g++-aarch64-linux-gnu and qemu-user if missing (root only; otherwise prints a
#      SKIP line and exits 0),
#   2. builds npas_kernels, test_kernels, test_int8_kernels, npas_delegate and npas_jni for aarch64
#      with delegate/cmake/aarch64-linux-gnu.cmake into build/aarch64,
#   3. runs test_kernels under `qemu-aarch64 -L /usr/aarch64-linux-gnu` (every NEON kernel against
#      the double-precision reference, same grid as x86), and test_int8_kernels twice: with
#      `-cpu max` (has dot product: the sdot kernel) and `-cpu cortex-a57` (ARMv8.0, no dot product:
#      the vmull/vpadal fallback), each bit-exact against the int8 reference,
#   4. checks the .so files are AArch64 and export the delegate's C entry points,
#   5. compiles android/ Java sources with javac against the stub org.tensorflow.lite.Delegate,
#   6. builds libnpas_jni.so for the host (build/jni-host) and runs the JNI smoke test in a JVM
#      (NPAS_JNI_HOST_TEST=0 skips it).
# Exits non-zero on any failure. Env: BUILD_DIR (build/aarch64), JOBS (2), NPAS_JNI_HOST_TEST (1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build/aarch64}"
HOST_JNI_DIR="${HOST_JNI_DIR:-$ROOT/build/jni-host}"
JOBS="${JOBS:-2}"
SYSROOT=/usr/aarch64-linux-gnu
T0=$SECONDS
step() { echo "== run_aarch64: $* ($((SECONDS - T0)) s)"; }

# ---- 1. tools -------------------------------------------------------------------------------------
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    step "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "SKIP run_aarch64: missing ${missing[*]} and not root (or no apt-get): install them with"
    echo "     sudo apt-get install ${missing[*]}   and run this script again"
    exit 0
  fi
fi

# jni.h for the aarch64 libnpas_jni.so: the host JDK's (architecture-independent; jni_md.h of
# linux serves aarch64 Linux too).
JNI_HOME=""
for cand in "${JAVA_HOME:-}" /usr/lib/jvm/*; do
  if [[ -n "$cand" && -f "$cand/include/jni.h" && -f "$cand/include/linux/jni_md.h" ]]; then
    JNI_HOME="$cand"
    break
  fi
done
JNI_ARGS=(-DNPAS_JNI=OFF)
TARGETS=(npas_kernels test_kernels test_int8_kernels npas_delegate)
if [[ -n "$JNI_HOME" ]]; then
  JNI_ARGS=(-DNPAS_JNI=ON "-DNPAS_JNI_INCLUDE_DIRS=$JNI_HOME/include;$JNI_HOME/include/linux")
  TARGETS+=(npas_jni)
else
  echo "SKIP (part) run_aarch64: no JDK with include/jni.h (set JAVA_HOME): libnpas_jni.so not built"
fi

# ---- 2. cross build -------------------------------------------------------------------------------
step "configuring $BUILD_DIR"
cmake -S "$ROOT/delegate" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$ROOT/delegate/cmake/aarch64-linux-gnu.cmake" "${JNI_ARGS[@]}" >/dev/null
step "building ${TARGETS[*]}"
cmake --build "$BUILD_DIR" -j"$JOBS" --target "${TARGETS[@]}"

# ---- 3. NEON kernels under qemu -------------------------------------------------------------------
step "test_kernels under qemu-aarch64"
out="$(qemu-aarch64 -L "$SYSROOT" "$BUILD_DIR/test_kernels")" || { echo "$out"; echo "FAIL: test_kernels (aarch64)"; exit 1; }
echo "$out" | tail -n 3
grep -q "ISAs tested:.* neon" <<<"$out" || { echo "FAIL: test_kernels did not test the NEON kernels"; exit 1; }
for cpu_kernel in "max neon-dotprod" "cortex-a57 neon"; do
  read -r cpu kernel <<<"$cpu_kernel"
  step "test_int8_kernels under qemu-aarch64 -cpu $cpu"
  out="$(qemu-aarch64 -cpu "$cpu" -L "$SYSROOT" "$BUILD_DIR/test_int8_kernels")" ||
    { echo "$out"; echo "FAIL: test_int8_kernels (aarch64, -cpu $cpu)"; exit 1; }
  echo "$out" | tail -n 3
  grep -q "int8 kernels tested:.* $kernel\$" <<<"$out" ||
    { echo "FAIL: test_int8_kernels (-cpu $cpu) did not test the $kernel kernel"; exit 1; }
done

# ---- 4. binaries ----------------------------------------------------------------------------------
step "checking the aarch64 binaries"
for so in "$BUILD_DIR/libnpas_delegate.so" ${JNI_HOME:+"$BUILD_DIR/libnpas_jni.so"}; do
  aarch64-linux-gnu-readelf -h "$so" | grep -q "Machine:.*AArch64" || { echo "FAIL: $so is not AArch64"; exit 1; }
done
syms="$(aarch64-linux-gnu-readelf --dyn-syms -W "$BUILD_DIR/libnpas_delegate.so")"
for s in tflite_plugin_create_delegate tflite_plugin_destroy_delegate; do
  grep -q " $s\$" <<<"$syms" || { echo "FAIL: libnpas_delegate.so (aarch64) does not export $s"; exit 1; }
done
if [[ -n "$JNI_HOME" ]]; then
  jsyms="$(aarch64-linux-gnu-readelf --dyn-syms -W "$BUILD_DIR/libnpas_jni.so")"
  for s in Java_ai_npas_NpasDelegate_nativeCreate Java_ai_npas_NpasDelegate_nativeDestroy; do
    grep -q " $s\$" <<<"$jsyms" || { echo "FAIL: libnpas_jni.so does not export $s"; exit 1; }
  done
  aarch64-linux-gnu-readelf -d "$BUILD_DIR/libnpas_jni.so" | grep -q "NEEDED.*libnpas_delegate.so" ||
    { echo "FAIL: libnpas_jni.so does not link libnpas_delegate.so"; exit 1; }
fi
echo "ok: AArch64 .so files export the delegate entry points${JNI_HOME:+ and the JNI methods}"

# ---- 5. Java sources ------------------------------------------------------------------------------
JAVAC="${JNI_HOME:+$JNI_HOME/bin/javac}"
[[ -x "${JAVAC:-}" ]] || JAVAC="$(command -v javac || true)"
if [[ -z "$JAVAC" ]]; then
  echo "SKIP (part) run_aarch64: no javac: Java sources not compiled"
  echo "run_aarch64: OK ($((SECONDS - T0)) s)"
  exit 0
fi
step "javac android/ sources"
CLASSES="$(mktemp -d)"
trap 'rm -rf "$CLASSES"' EXIT
"$JAVAC" -Xlint:all -d "$CLASSES" \
  "$ROOT/android/stubs/org/tensorflow/lite/Delegate.java" \
  "$ROOT/android/src/main/java/ai/npas/NpasDelegate.java" \
  "$ROOT/android/src/test/java/ai/npas/NpasDelegateSmoke.java"
echo "ok: NpasDelegate.java compiles against org.tensorflow.lite.Delegate"

# ---- 6. JNI glue in a host JVM --------------------------------------------------------------------
if [[ "${NPAS_JNI_HOST_TEST:-1}" != 0 && -n "$JNI_HOME" ]] && command -v c++ >/dev/null; then
  JAVA="$JNI_HOME/bin/java"
  [[ -x "$JAVA" ]] || JAVA="$(command -v java)"
  step "host libnpas_jni.so + JVM smoke test"
  cmake -S "$ROOT/delegate" -B "$HOST_JNI_DIR" -DCMAKE_BUILD_TYPE=Release -DNPAS_JNI=ON \
    "-DNPAS_JNI_INCLUDE_DIRS=$JNI_HOME/include;$JNI_HOME/include/linux" >/dev/null
  cmake --build "$HOST_JNI_DIR" -j"$JOBS" --target npas_jni
  "$JAVA" -Xcheck:jni -Djava.library.path="$HOST_JNI_DIR" -cp "$CLASSES" ai.npas.NpasDelegateSmoke
fi

echo "run_aarch64: OK ($((SECONDS - T0)) s)"
