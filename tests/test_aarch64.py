"""aarch64 / Android side of the delegate: the Java wrapper compiles, and the NEON kernels pass the
native kernel tests under qemu. Skips when the tools are absent (javac; g++-aarch64-linux-gnu +
qemu-user + cmake). delegate/tests/run_aarch64.sh is the full check (installs the tools as root,
also checks the .so exports and runs the JNI glue in a JVM); this file reuses its build directory,
so after that script has run the qemu test here costs ~10 s."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAVA_SOURCES = [
    "android/stubs/org/tensorflow/lite/Delegate.java",
    "android/src/main/java/ai/npas/NpasDelegate.java",
    "android/src/test/java/ai/npas/NpasDelegateSmoke.java",
]


def test_java_wrapper_compiles(tmp_path):
    javac = shutil.which("javac")
    if javac is None:
        pytest.skip("javac not installed")
    res = subprocess.run([javac, "-Xlint:all", "-Werror", "-d", str(tmp_path)]
                         + [os.path.join(ROOT, s) for s in JAVA_SOURCES],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ai" / "npas" / "NpasDelegate.class").exists()


def test_neon_kernels_under_qemu():
    tools = ["cmake", "aarch64-linux-gnu-g++", "qemu-aarch64"]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip("cross tools absent: " + ", ".join(missing)
                    + " (apt-get install g++-aarch64-linux-gnu qemu-user)")
    build = os.path.join(ROOT, "build", "aarch64")
    subprocess.run(["cmake", "-S", os.path.join(ROOT, "delegate"), "-B", build,
                    "-DCMAKE_BUILD_TYPE=Release",
                    "-DCMAKE_TOOLCHAIN_FILE=" + os.path.join(ROOT, "delegate", "cmake",
                                                             "aarch64-linux-gnu.cmake")],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", build, "-j2", "--target", "test_kernels"],
                   check=True, capture_output=True)
    res = subprocess.run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu",
                          os.path.join(build, "test_kernels")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "ISAs tested: scalar neon" in res.stdout
    assert " 0 failed" in res.stdout
