"""benchmarks/search.py bookkeeping (no training): --merge of per-seed and --final-from files,
the per-seed paired comparison and the summary statistics, checked against NumPy by hand."""
import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location(
        "search_benchmark", os.path.join(ROOT, "benchmarks", "search.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(method, seed, score, final=None):
    r = {"method": method, "seed": seed, "best_score": score, "best_latency_ms": 0.05,
         "trials": 2, "feasible_trials": 1, "training_epochs": 4, "rejected": 0, "seconds": 1.0,
         "points": [{"accuracy": score, "latency_ms": 0.05, "feasible": True},
                    {"accuracy": 0.1, "latency_ms": 0.09, "feasible": False}]}
    if final is not None:
        r["final"] = {"epochs": 16, "accuracy": final, "latency_ms": 0.05, "feasible": True}
    return r


def _file(runs, seeds, budget=0.06, ref_epochs=5, final_command=None):
    out = {"benchmark": "search", "machine": "cpu|isa|threads=1|npas", "dataset": "fashion_mnist",
           "command": "python benchmarks/search.py", "trials": 2, "epochs": 2,
           "train_examples": 100, "seeds": seeds, "budget_ms": budget,
           "dense": {"accuracy": 0.8, "latency_ms": 3 * budget,
                     "reference": {"epochs": ref_epochs, "accuracy": 0.85}},
           "runs": runs, "summary": {}}
    if final_command:
        out["final_command"] = final_command
    return out


def _write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def test_merge_joins_final_from_outputs_once_per_run(search, tmp_path):
    """Two --final-from outputs of one search file (each retrained other seeds) and a file of
    new seeds: every run appears once, with its final where one was retrained."""
    base = [_run("npas", 0, 0.87), _run("rules", 0, 0.86), _run("npas", 1, 0.89),
            _run("rules", 1, 0.88)]
    f0 = _file([_run("npas", 0, 0.87, final=0.90), _run("rules", 0, 0.86, final=0.89)]
               + base[2:], "0,1", ref_epochs=19, final_command="--final-from s.json --seeds 0")
    f1 = _file(base[:2] + [_run("npas", 1, 0.89, final=0.895),
                           _run("rules", 1, 0.88, final=0.90)],
               "0,1", ref_epochs=19, final_command="--final-from s.json --seeds 1")
    f2 = _file([_run("npas", 3, 0.88), _run("rules", 3, 0.87)], "3", budget=0.08)
    out_path = str(tmp_path / "m.json")
    search.merge([_write(tmp_path, n, f) for n, f in (("a.json", f0), ("b.json", f1),
                                                       ("c.json", f2))], out_path)
    out = json.load(open(out_path))
    keys = [(r["method"], r["seed"]) for r in out["runs"]]
    assert sorted(keys) == sorted({("npas", 0), ("rules", 0), ("npas", 1), ("rules", 1),
                                   ("npas", 3), ("rules", 3)})
    finals = {k: r.get("final", {}).get("accuracy") for k, r in zip(keys, out["runs"])}
    assert finals == {("npas", 0): 0.90, ("rules", 0): 0.89, ("npas", 1): 0.895,
                      ("rules", 1): 0.90, ("npas", 3): None, ("rules", 3): None}
    assert out["dense"]["reference"]["epochs"] == 19       # the finals' equally trained dense
    assert {r["seed"]: r["budget_ms"] for r in out["runs"]}[3] == 0.08
    assert out["seeds"] == "0,1,3" and os.path.exists(str(tmp_path / "m.png"))

    npas = out["summary"]["npas"]
    scores = [0.87, 0.89, 0.88]
    assert npas["best_scores"] == scores and npas["seeds"] == [0, 1, 3]
    assert npas["mean_best_score"] == pytest.approx(np.mean(scores))
    assert npas["sem_best_score"] == pytest.approx(np.std(scores, ddof=1) / np.sqrt(3))
    pair = out["paired"]["npas-rules"]
    assert pair["best_score"]["differences"] == pytest.approx([0.01, 0.01, 0.01])
    assert pair["best_score"]["wins"] == 3 and pair["best_score"]["losses"] == 0
    assert pair["final_accuracy"]["seeds"] == [0, 1]
    assert pair["final_accuracy"]["differences"] == pytest.approx([0.01, -0.005])


def test_merge_refuses_different_searches_and_two_finals(search, tmp_path):
    a = _write(tmp_path, "a.json", _file([_run("npas", 0, 0.87, final=0.9)], "0"))
    b = _write(tmp_path, "b.json", _file([_run("npas", 0, 0.80)], "0"))
    c = _write(tmp_path, "c.json", _file([_run("npas", 0, 0.87, final=0.8)], "0"))
    with pytest.raises(SystemExit, match="not the same search"):
        search.merge([a, b], str(tmp_path / "m.json"))
    with pytest.raises(SystemExit, match="final model in two files"):
        search.merge([a, c], str(tmp_path / "m.json"))
    d = _file([_run("npas", 5, 0.87)], "5")
    d["epochs"] = 1
    with pytest.raises(SystemExit, match="differs"):
        search.merge([a, _write(tmp_path, "d.json", d)], str(tmp_path / "m.json"))


def test_merge_takes_only_the_named_methods_of_a_file(search, tmp_path):
    """FILE:method,method: a rerun of one method replaces its runs in an older file."""
    old = _write(tmp_path, "old.json", _file([_run("npas", 0, 0.80), _run("rules", 0, 0.86),
                                               _run("random", 0, 0.85)], "0"))
    new = _write(tmp_path, "new.json", _file([_run("npas", 0, 0.88)], "0"))
    out_path = str(tmp_path / "m.json")
    search.merge([new, old + ":rules,random"], out_path)
    out = json.load(open(out_path))
    assert {(r["method"], r["best_score"]) for r in out["runs"]} == {
        ("npas", 0.88), ("rules", 0.86), ("random", 0.85)}
    assert [p["file"] for p in out["per_seed_process"]] == ["new.json", "old.json"]
    assert out["paired"]["npas-rules"]["best_score"]["differences"] == pytest.approx([0.02])
