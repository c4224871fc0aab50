"""Fuzzing the NPAS custom-op decoder and the delegate with corrupted models, each in a
SUBPROCESS (tests/npas_fuzz_worker.py): no crash (no negative return code / sanitizer report), every
corruption reported as an error, C++ and Python decoders agreeing on every input."""
import os
import subprocess
import sys

import numpy as np
import pytest

import npas_decoder_shim as shim  # tests/ is on sys.path (pytest rootdir-less import)

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "npas_fuzz_worker.py")


def _asan_runtime():
    try:
        out = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out if os.path.isabs(out) and os.path.exists(out) else None


def _worker(args, env=None, timeout=300):
    proc = subprocess.run([sys.executable, WORKER, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()
    assert proc.returncode >= 0, f"worker killed by signal {-proc.returncode}:\n{tail}"
    return proc, tail


def test_decoder_fuzz_no_crash_and_agrees_with_python(tmp_path):
    asan = _asan_runtime()
    try:
        lib = shim.build(str(tmp_path), sanitize=asan is not None)
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot build the decoder shim: {exc}")
    env = {"LD_PRELOAD": asan, "ASAN_OPTIONS": "detect_leaks=0:exitcode=99"} if asan else {}
    proc, tail = _worker(["decoder", lib, "7", "4000"], env)
    assert proc.returncode != 99, f"AddressSanitizer report:\n{tail}"
    assert proc.returncode == 0, tail
    assert '"disagree": 0' in proc.stdout


@pytest.fixture(scope="module")
def npas_model(tmp_path_factory):
    from test_export import apply_scheme, small_cnn, _scheme_for
    import npas_keras
    path = str(tmp_path_factory.mktemp("fuzz") / "model.tflite")
    npas_keras.export(apply_scheme(small_cnn(), _scheme_for("unstructured")), path,
                      format="npas")
    np.save(path + ".x.npy", np.random.default_rng(0).standard_normal((1, 8, 8, 16))
            .astype(np.float32))
    return path


@pytest.mark.parametrize("seed", [1, 2])
def test_corrupted_npas_model_through_the_delegate(npas_model, seed):
    from npas_keras import runtime
    try:
        runtime.delegate_path()
    except FileNotFoundError as exc:
        pytest.skip(f"the npas delegate is not built: {exc}")
    proc, tail = _worker(["model", npas_model, str(seed), "25"])
    assert proc.returncode == 0, tail
    assert '"wrong_output": 0' in proc.stdout
    # every flipped byte is caught by a checksum: the run ends in a reported error
    assert proc.stdout.count("  error ") == 25, tail


def test_inspect_on_corrupted_files_raises_only_value_error(npas_model):
    """Random byte changes and truncations anywhere in the file: inspect() either works (a
    harmless byte) or raises ValueError; has_npas_custom_ops never raises."""
    from npas_keras.export import has_npas_custom_ops, inspect
    data = open(npas_model, "rb").read()
    rng = np.random.default_rng(3)
    outcomes = {"ok": 0, "ValueError": 0}
    for it in range(200):
        b = bytearray(data)
        if it % 5 == 0:
            b = b[: int(rng.integers(0, len(b)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        try:
            inspect(bytes(b))
            outcomes["ok"] += 1
        except ValueError:
            outcomes["ValueError"] += 1
        assert has_npas_custom_ops(bytes(b)) in (True, False)
    assert outcomes["ValueError"] > 100, outcomes
