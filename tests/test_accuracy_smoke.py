"""Smoke test of benchmarks/accuracy.py: a tiny run on digits, checks the JSON it writes.

It asserts the shape of the output and that the pruned layers really hold the requested density
(the accuracy numbers of a one-epoch run on 300 images mean nothing, so only their range is checked).
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "accuracy.py")

pytest.importorskip("tf_keras")
pytest.importorskip("tensorflow_model_optimization")


@pytest.fixture(scope="module")
def smoke_json(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("acc")
    out = tmp / "accuracy.json"
    cmd = [sys.executable, SCRIPT, "--quick", "--train-subset", "300", "--test-subset", "120",
           "--epochs", "1", "--finetune-epochs", "1", "--admm-epochs", "1", "--retrain-epochs", "1",
           "--models", "cnn", "gru", "--schemes", "bcr", "--compressions", "4",
           "--algorithms", "schedule", "admm", "--no-dense-reference", "--cache-dir", "",
           "--keras-verbose", "0",
           "--out", str(out)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, cwd=str(tmp), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f), proc.stderr


def test_top_level_fields(smoke_json):
    doc, _ = smoke_json
    assert doc["benchmark"] == "accuracy"
    assert isinstance(doc["machine"], str) and doc["machine"]
    assert "accuracy.py" in doc["command"] and "--quick" in doc["command"]
    assert doc["dataset"] == "digits"
    assert doc["train_images"] == 300 and doc["test_images"] == 120
    assert set(doc["dense"]) == {"cnn", "gru"}


def test_rows(smoke_json):
    doc, stderr = smoke_json
    rows = doc["results"]
    keys = {(r["model"], r["scheme"], r["algorithm"], r["compression"]) for r in rows}
    expected = {(m, "bcr", a, 4) for m in ("cnn", "gru") for a in ("schedule", "admm")}
    assert keys == expected
    for r in rows:
        for field in ("model", "scheme", "algorithm", "compression", "density", "test_accuracy",
                      "dense_accuracy", "epochs", "dense_epochs", "seconds"):
            assert field in r, (field, r)
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert 0.0 <= r["dense_accuracy"] <= 1.0
        assert r["dense_accuracy"] == doc["dense"][r["model"]]["test_accuracy"]
        assert r["seconds"] > 0
        assert r["dense_epochs"] == 1
        assert r["epochs"] == (2 if r["algorithm"] == "admm" else 1)
        # the density is measured on the masks, after training: at 4x it must be ~0.25
        assert abs(r["density"] - 0.25) < 0.02, r
        assert r["nonzeros_at_masked_positions"] == 0, r
        assert set(r["layer_schemes"]) == ({"conv2", "conv3", "conv4", "fc1"}
                                           if r["model"] == "cnn" else {"gru"})
        for s in r["layer_schemes"].values():
            assert s["name"] == "bcr" and abs(s["density"] - 0.25) < 1e-9
    # progress: one line per finished row
    assert stderr.count("density") >= len(rows)
