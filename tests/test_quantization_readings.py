"""benchmarks/quantization.py --suite models: the issue 6 targets read per model and per
compression from result rows (synthetic rows, hand-checked figures; no training)."""
import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "quantization.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("quantization_bench", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(variant, acc, bops_red, comp=None, forced=None, npas=None):
    r = {"model": "gru", "variant": variant, "tflite_accuracy": acc,
         "bops_reduction_vs_dense_fp32": bops_red, "npas_ms": npas, "speedup": 1.0,
         "forced_row_block": None if forced is None else {"npas_ms": forced, "speedup": 2.0}}
    if comp is not None:
        r["compression"] = comp
    return r


def test_readings_per_compression(bench):
    cases = [_row("dense_fp32", 0.89, 1.0),
             _row("pruned_fp32", 0.82, 8.0, 8, forced=0.2, npas=0.2),
             _row("pruned_int8", 0.82, 128.0, 8, forced=0.1, npas=0.1),
             {"model": "gru", "variant": "pruned_mixed", "stage": "x", "error": "failed"},
             _row("pruned_fp32_2x", 0.888, 2.0, 2, forced=0.3, npas=0.3),
             _row("pruned_int8_2x", 0.886, 32.0, 2, forced=0.25, npas=0.25),
             _row("pruned_mixed_2x", 0.8795, 64.0, 2, forced=0.25, npas=0.25)]
    r = bench.readings(cases)
    assert set(r) == {"gru", "gru 2x", "gru (any compression)"}
    bops = "BOPs reduction >= 30x at <= 1 point loss vs dense fp32"
    assert r["gru"]["compression"] == 8 and r["gru 2x"]["compression"] == 2
    assert r["gru"]["int8_npas_vs_fp32_npas_forced"] == 2.0             # 0.2 / 0.1
    assert r["gru"]["targets"][bops] is False                           # 128x but -7 points
    assert "mixed_bops_reduction" not in r["gru"]                       # failed row skipped
    assert r["gru 2x"]["int8_npas_vs_fp32_npas_forced"] == 1.2          # 0.3 / 0.25
    assert r["gru 2x"]["int8_accuracy_minus_dense_fp32"] == pytest.approx(-0.004)
    assert r["gru 2x"]["mixed_accuracy_minus_dense_fp32"] == pytest.approx(-0.0105)
    assert r["gru 2x"]["targets"][bops] is True                         # int8: 32x at -0.4
    assert r["gru (any compression)"][bops] is True


def test_speed_targets_read_auto_and_interleaved(bench):
    """The speed targets read the delegate's own choice (auto) against stock, and against fp32
    the interleaved int8-vs-fp32 timing where the row has one (else the auto medians)."""
    cases = [_row("dense_fp32", 0.89, 1.0),
             _row("pruned_fp32", 0.89, 8.0, 8, forced=0.2, npas=0.2),
             dict(_row("pruned_int8", 0.89, 128.0, 8, forced=0.3, npas=0.15), speedup=4.5,
                  vs_fp32_pruned={"npas_ms": 0.1, "fp32_npas_ms": 0.16, "speedup": 1.6})]
    r = bench.readings(cases)["gru"]
    assert r["int8_npas_vs_fp32_npas_interleaved"] == 1.6
    assert r["int8_npas_vs_fp32_npas_auto"] == pytest.approx(1.333, abs=1e-3)  # 0.2 / 0.15
    assert r["targets"]["int8 sparse >= 1.5x our fp32 sparse"] is True      # 1.6, not 1.33
    assert r["targets"]["int8 sparse >= 4x stock int8 XNNPACK"] is True     # auto 4.5x
    del cases[2]["vs_fp32_pruned"]
    r = bench.readings(cases)["gru"]
    assert r["targets"]["int8 sparse >= 1.5x our fp32 sparse"] is False     # auto 1.33


def test_repeated_reports_medians(bench):
    """--repeat: the median of each figure over the compare() runs, every speedup kept."""
    runs = iter([{"baseline_ms": 3.0, "npas_ms": 1.0, "speedup": 3.0, "max_abs_err": 0.0,
                  "claimed": 1},
                 {"baseline_ms": 4.0, "npas_ms": 2.0, "speedup": 2.0, "max_abs_err": 1.0,
                  "claimed": 1},
                 {"baseline_ms": 5.0, "npas_ms": 1.0, "speedup": 5.0, "max_abs_err": 0.0,
                  "claimed": 1}])
    r = bench.repeated(lambda: next(runs), 3)
    assert (r["baseline_ms"], r["npas_ms"], r["speedup"]) == (4.0, 1.0, 3.0)
    assert r["speedups"] == [3.0, 2.0, 5.0] and r["max_abs_err"] == 1.0 and r["claimed"] == 1


def test_retime_measures_saved_files_again(bench, tmp_path):
    """--retime: rows whose files exist are measured again (accuracy through stock LiteRT equal
    to a direct count, fresh timings as medians of --repeat runs, "retimed": true); a row whose
    file is gone is kept as is."""
    import json

    import numpy as np
    import tf_keras as keras

    import npas_keras
    from npas_keras.data import load_digits
    from npas_keras.runtime import Interpreter

    (x, y), (xt, yt) = load_digits()
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, verbose=0)
    fp32 = npas_keras.export(model, str(tmp_path / "cnn_pruned_fp32.tflite"))
    int8 = npas_keras.export(model, str(tmp_path / "cnn_pruned_int8.tflite"), quantize="int8",
                             representative_data=x[:100])
    stale = {"model": "cnn", "variant": "pruned_mixed", "file": str(tmp_path / "gone.tflite"),
             "tflite_accuracy": 0.5}
    row = {"model": "cnn", "variant": "pruned_int8", "density": 1.0, "weight_bits": 8,
           "bops": 1000, "keras_accuracy": 0.9, "file": int8, "tflite_accuracy": 0.0,
           "npas_ms": -1.0, "vs_fp32_pruned": {}, "int8_method": "kept"}
    dense = dict(row, variant="dense_fp32", file=fp32, weight_bits=32, bops=4000)
    dense.pop("vs_fp32_pruned")
    doc = {"command": "train", "settings": {"cnn": {"accuracy_py_args": ["--quick"]}},
           "cases": [dense, row, stale]}
    out = tmp_path / "q.json"
    out.write_text(json.dumps(doc))
    bench.main(["--suite", "models", "--models", "cnn", "--retime", "--runs", "3",
                "--repeat", "2", "--out", str(out)])
    new = json.loads(out.read_text())
    d, r, s = new["cases"]
    assert s == stale and new["command"] == "train" and len(new["retimed"]) == 1
    assert d["retimed"] and r["retimed"] and r["int8_method"] == "kept"
    interp = Interpreter(int8, delegate=False)
    interp.allocate_tensors()
    inp, o = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zp = inp["quantization"]
    correct = 0
    for i in range(len(xt)):
        interp.set_tensor(inp["index"], np.clip(np.round(xt[i:i + 1] / scale + zp), -128,
                                                127).astype(np.int8))
        interp.invoke()
        correct += int(interp.get_tensor(o["index"])[0].argmax() == yt[i])
    assert r["tflite_accuracy"] == round(correct / len(xt), 6) > 0.5
    assert r["npas_ms"] > 0 and r["baseline_ms"] > 0 and r["vs_fp32_pruned"]["fp32_npas_ms"] > 0
    assert r["bops_reduction_vs_dense_fp32"] == 4.0
    assert len(r["speedups"]) == 2 and len(r["vs_fp32_pruned"]["speedups"]) == 2  # --repeat
