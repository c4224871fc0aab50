"""The delegate built with AddressSanitizer/UBSan, run inside the real interpreter.

Skipped unless NPAS_ASAN=1: run it through delegate/tests/run_asan.sh, which builds the
sanitized library, writes the models with the normal interpreter (TensorFlow is not loaded under
ASan) and runs this module with LD_PRELOAD=libasan.so. Only ai_edge_litert is imported here.
"""
from __future__ import annotations

import glob
import os
import sys

import numpy as np
import pytest

from test_delegate_support import run as _run  # numpy-only module: safe under ASan

pytestmark = pytest.mark.skipif(os.environ.get("NPAS_ASAN") != "1",
                                reason="sanitizer run: use delegate/tests/run_asan.sh")


def _models():
    directory = os.environ.get("NPAS_ASAN_MODELS", "")
    return sorted(glob.glob(os.path.join(directory, "*.tflite")))


@pytest.mark.parametrize("kernel", ["row_block", "pixel_vector", "dense", "auto"])
def test_models_under_sanitizers(kernel):
    from npas_keras import runtime

    models = _models()
    assert models, "no models: NPAS_ASAN_MODELS must name a folder of .tflite files"
    for path in models:
        content = open(path, "rb").read()
        # NPAS custom-op models come with their standard-op twin (".ref") for the reference
        ref_content = open(path + ".ref", "rb").read() if os.path.exists(path + ".ref") else content
        stock = runtime.Interpreter(model_content=ref_content, delegate=False)
        rng = np.random.default_rng(0)
        for resize in (False, True):
            shapes = []
            for d in stock.get_input_details():
                s = list(d["shape"])
                if resize:
                    s[0] = 2
                    if len(s) == 4 and ref_content is content:  # (custom model: Flatten+Dense)
                        s[1] += 1
                        s[2] += 2
                shapes.append(s)
            inputs = [rng.normal(size=s).astype(np.float32) for s in shapes]
            want = _run(runtime.Interpreter(model_content=ref_content, delegate=False), inputs,
                        resize)
            options = {"kernel": kernel, "min_sparsity": 0, "num_threads": 2}
            if kernel == "auto":
                options = {"min_speedup": 0.01, "num_threads": 2}
            interp = runtime.Interpreter(model_content=content, delegate_options=options)
            got = _run(interp, inputs, resize)
            for i, (g, w) in enumerate(zip(got, want)):
                err = float(np.abs(g - w).max())
                assert err <= 1e-5 * max(1.0, float(np.abs(w).max())), (
                    f"{os.path.basename(path)} output {i} resize={resize} kernel={kernel}: "
                    f"max abs err {err}")
            assert runtime.delegate_stats(interp)["claimed"] >= 1
            del interp


def test_bad_options_under_sanitizers():
    from npas_keras import runtime

    for _ in range(50):
        with pytest.raises(ValueError):
            runtime.load_delegate({"schemes": "bcr"} | {"kernel": "dense"} | {"verbose": 3})


def write_models(directory):
    """Writes the delegate test models (needs TensorFlow; run without the sanitizer)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import test_delegate

    os.makedirs(directory, exist_ok=True)
    for kind in ("fc", "conv", "dw"):
        with open(os.path.join(directory, f"{kind}.tflite"), "wb") as f:
            f.write(test_delegate.group_model(kind))
    standard, custom = test_delegate._exported_pair("block_punched")
    with open(os.path.join(directory, "custom.tflite"), "wb") as f:
        f.write(custom)
    with open(os.path.join(directory, "custom.tflite.ref"), "wb") as f:
        f.write(standard)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--write-models":
        sys.exit("usage: test_delegate_asan.py --write-models DIR")
    write_models(sys.argv[2])
