"""npas_keras.runtime: finding the library, Interpreter construction, stats, benchmark helper."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from test_delegate_support import (assert_close, convert, patch_model, prune_layer, reference,
                                   require_delegate, run)


@functools.lru_cache(maxsize=None)
def small_model():
    import tf_keras as keras

    model = keras.Sequential([keras.Input((6, 6, 8), batch_size=1),
                              keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    rng = np.random.default_rng(0)
    prune_layer(model.layers[0], "block_punched", rng)
    prune_layer(model.layers[2], "unstructured", rng)
    return convert(model, [(1, 6, 6, 8)])


def test_delegate_path_env_override(monkeypatch, tmp_path):
    from npas_keras import runtime

    fake = tmp_path / "libfake.so"
    fake.write_bytes(b"")
    monkeypatch.setenv("NPAS_DELEGATE_LIB", str(fake))
    assert runtime.delegate_path() == str(fake)
    monkeypatch.setenv("NPAS_DELEGATE_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(FileNotFoundError, match="NPAS_DELEGATE_LIB"):
        runtime.delegate_path()


def test_missing_library_says_how_to_build(monkeypatch, tmp_path):
    from npas_keras import runtime

    monkeypatch.delenv("NPAS_DELEGATE_LIB", raising=False)
    monkeypatch.setattr(runtime, "__file__", str(tmp_path / "__init__.py"))
    with pytest.raises(FileNotFoundError, match=r"pip install \."):
        runtime.delegate_path()
    with pytest.raises(FileNotFoundError):
        runtime.Interpreter(model_content=b"x")


def test_interpreter_argument_errors():
    from npas_keras import runtime

    with pytest.raises(ValueError, match="exactly one"):
        runtime.Interpreter()
    with pytest.raises(ValueError, match="exactly one"):
        runtime.Interpreter(model_path="a.tflite", model_content=b"x")
    with pytest.raises(ValueError, match="num_threads"):
        runtime.Interpreter(model_content=b"x", num_threads=0)
    with pytest.raises(ValueError, match="options must be a dict"):
        runtime.load_delegate(["kernel", "dense"])


def test_lazy_top_level_export():
    import npas_keras
    from npas_keras import runtime

    assert npas_keras.Interpreter is runtime.Interpreter


def test_stock_and_delegated_interpreters_agree(tmp_path):
    from npas_keras import runtime

    require_delegate()
    content = small_model()
    path = tmp_path / "m.tflite"
    path.write_bytes(content)
    x = [np.random.default_rng(1).normal(size=(1, 6, 6, 8)).astype(np.float32)]
    stock = runtime.Interpreter(model_path=path, delegate=False, num_threads=2)
    with pytest.raises(ValueError, match="no npas delegate"):
        runtime.delegate_stats(stock)
    want = run(stock, x)
    interp = runtime.Interpreter(model_path=str(path), num_threads=2,
                                 delegate_options={"kernel": "row_block"})
    assert_close(run(interp, x), want, "file model")
    stats = runtime.delegate_stats(interp)
    assert stats["claimed"] == 2
    assert stats["claimed_by_op"] == {"CONV_2D": 1, "FULLY_CONNECTED": 1}
    # the delegate object itself works too
    assert runtime.delegate_stats(interp._delegates[0])["claimed"] == 2


def test_custom_op_model_needs_the_delegate():
    from npas_keras import runtime

    def rename(model, schema):
        code = model.operatorCodes[model.subgraphs[0].operators[0].opcodeIndex]
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode = "NpasSparseConv2D"

    patched = patch_model(small_model(), rename)
    assert runtime.npas_custom_ops(patched) == ["NpasSparseConv2D"]
    assert runtime.npas_custom_ops(small_model()) == []
    with pytest.raises(ValueError, match="NpasSparseConv2D.*npas delegate"):
        runtime.Interpreter(model_content=patched, delegate=False)


def test_benchmark_compare():
    from npas_keras.runtime.benchmark import compare

    require_delegate()
    content = small_model()
    r = compare(content, None, threads=1, runs=6, warmup=1,
                delegate_options={"kernel": "pixel_vector"})
    assert set(r) >= {"baseline_ms", "npas_ms", "speedup", "max_abs_err", "claimed"}
    assert r["baseline_ms"] > 0 and r["npas_ms"] > 0
    assert r["speedup"] == pytest.approx(r["baseline_ms"] / r["npas_ms"])
    assert r["claimed"] == 2
    assert r["max_abs_err"] < 1e-4
    x = np.random.default_rng(3).normal(size=(1, 6, 6, 8)).astype(np.float32)
    r = compare(content, x, runs=2, warmup=0)  # default options: measured decisions
    assert r["max_abs_err"] < 1e-4


def test_reference_helper_matches_run():
    """The helpers the other tests trust: the stock path is deterministic."""
    content = small_model()
    x = [np.ones((1, 6, 6, 8), np.float32)]
    assert_close(reference(content, x), reference(content, x), "stock twice")
