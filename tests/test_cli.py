"""The `npas` command: help everywhere, exit codes, error messages, and the demo end to end.

The demo runs once (module fixture, `--quick` on digits) as a real subprocess; the other
subcommands then run in-process on its outputs (the model files it wrote).
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import delegate_built
from npas_keras import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", NPAS_PROGRESS="0",
           PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def npas_cmd():
    """The installed console script when there is one, else `python -m npas_keras.cli`."""
    script = os.path.join(os.path.dirname(sys.executable), "npas")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "npas_keras.cli"]


def run_npas(*args, timeout=600):
    return subprocess.run(npas_cmd() + list(args), capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=ROOT)


def call(capsys, *argv):
    """Runs cli.main in-process -> (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------- help & usage

def test_console_script_help():
    r = run_npas("--help")
    assert r.returncode == 0, r.stderr
    for name in ("demo", "prune", "export", "inspect", "bench", "report"):
        assert name in r.stdout
    assert "tensorflow" not in r.stderr.lower()  # no TensorFlow import for --help (see below)


def test_help_does_not_import_tensorflow():
    code = ("import sys; from npas_keras import cli; cli.build_parser().format_help(); "
            "print('tensorflow' in sys.modules, 'matplotlib' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert r.stdout.split() == ["False", "False"], r.stderr


@pytest.mark.parametrize("name", [c.name for c in cli.available_commands()])
def test_every_subcommand_has_help(capsys, name):
    code, out, _ = call(capsys, name, "--help")
    assert code == 0
    assert out.startswith(f"usage: npas {name}")
    assert "--debug" in out


def test_version(capsys):
    code, out, _ = call(capsys, "--version")
    assert code == 0 and "npas-keras" in out


@pytest.mark.parametrize("argv, needle", [
    (["bogus"], "invalid choice"),
    (["demo", "--rate", "2"], "outside [0, 1)"),
    (["demo", "--rate", "abc"], "not a number"),
    (["demo", "--threads", "0"], "1 or more"),
    (["demo", "--epochs", "-1"], "0 or more"),
    (["demo", "--dataset", "cifar"], "unknown dataset"),
    (["demo", "--no-such-option"], "unrecognized arguments"),
    (["inspect", "/no/such/file.tflite"], "no such file"),
    (["export", "/no/such/model.keras", "-o", "x.tflite"], "no such file"),
    (["report"], "required"),
])
def test_bad_arguments_exit_2_with_a_hint(capsys, argv, needle):
    code, out, err = call(capsys, *argv)
    assert code == 2
    assert needle in err
    assert "--help" in err  # says what to do next
    assert "Traceback" not in err


def test_unknown_scheme_is_a_usage_error(capsys):
    pytest.importorskip("npas_keras.schemes")
    from npas_keras.schemes import get_scheme
    try:
        get_scheme("block_punched")
    except Exception:  # noqa: BLE001
        pytest.skip("schemes part not ready")
    code, _, err = call(capsys, "demo", "--scheme", "no_such_scheme")
    assert code == 2 and "unknown scheme" in err and "bcr" in err


def test_no_command_exits_2(capsys):
    code, _, err = call(capsys)
    assert code == 2 and "choose a command" in err


def test_failure_is_one_line_without_traceback(tmp_path, capsys):
    bad = tmp_path / "garbage.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 10)
    code, out, err = call(capsys, "inspect", str(bad))
    assert code == 1
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("npas: error:"), err
    assert "--debug" in lines[0]
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "garbage.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 10)
    r = run_npas("inspect", str(bad), "--debug")
    assert r.returncode == 1
    assert "Traceback" in r.stderr


def test_registry_is_data_driven(capsys):
    """A subcommand appears only when the modules it requires exist."""
    before = list(cli._COMMANDS)
    try:
        @cli.subcommand("zz-present", "present", requires="npas_keras.data")
        def _present(p):
            p.add_argument("--x", type=int, default=3)
            return lambda args: print(f"ran with x={args.x}")

        @cli.subcommand("zz-absent", "absent", requires="npas_keras.no_such_module")
        def _absent(p):
            return lambda args: 0

        names = [c.name for c in cli.available_commands()]
        assert "zz-present" in names and "zz-absent" not in names
        code, out, _ = call(capsys, "zz-present", "--x", "5")
        assert code == 0 and "ran with x=5" in out
        code, _, err = call(capsys, "zz-absent")
        assert code == 2 and "invalid choice" in err
    finally:
        cli._COMMANDS[:] = before


def test_module_exists_checks_files_only():
    assert cli.module_exists("npas_keras.data")
    assert cli.module_exists("npas_keras.report")
    assert not cli.module_exists("npas_keras.no_such_module")


def test_progress_bar(monkeypatch):
    import io
    stream = io.StringIO()
    monkeypatch.setenv("NPAS_PROGRESS", "1")
    with cli.Progress(3, "work", stream=stream) as bar:
        for _ in range(3):
            bar.update()
    text = stream.getvalue()
    assert "work [" in text and "3/3" in text and text.endswith("\n")
    monkeypatch.setenv("NPAS_PROGRESS", "0")
    stream = io.StringIO()
    with cli.Progress(3, "work", stream=stream) as bar:
        bar.update()
    assert stream.getvalue() == ""


def test_format_table_aligns_columns():
    text = cli.format_table([{"a": "x", "b": 1.5}, {"a": "longer", "b": None}],
                            [("a", "A"), ("b", "B")])
    lines = text.splitlines()
    assert lines[0].startswith("A     ") and lines[2].split() == ["x", "1.5"]
    assert lines[3].split() == ["longer", "-"]


# ---------------------------------------------------------------------------- demo end to end

ROW_NAMES = ("keras dense", "tflite stock (XNNPACK)", "tflite + npas delegate")


def parse_demo_table(stdout):
    """-> {row name: [cells after the name]} for the demo's three table rows."""
    rows = {}
    for line in stdout.splitlines():
        for name in ROW_NAMES:
            if line.startswith(name):
                rows[name] = line[len(name):].split()
    return rows


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    pytest.importorskip("npas_keras.pruning")
    out = tmp_path_factory.mktemp("demo")
    r = run_npas("demo", "--quick", "--dataset", "digits", "--out", str(out))
    return r, out


def test_demo_quick_prints_three_rows(demo_run):
    r, out = demo_run
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    rows = parse_demo_table(r.stdout)
    assert set(rows) == set(ROW_NAMES), r.stdout
    for name in ROW_NAMES[:2]:
        acc = float(rows[name][0])
        assert 0.0 <= acc <= 1.0
        assert float(rows[name][3]) > 0  # latency ms
    result = json.loads((out / "demo.json").read_text())
    assert result["kind"] == "npas-demo" and result["dataset"] == "digits"
    assert result["test_samples"] == 200
    assert [row["name"] for row in result["rows"]] == list(ROW_NAMES)
    for f in ("dense.keras", "pruned.tflite"):
        assert (out / f).is_file()


@pytest.mark.skipif(not delegate_built(), reason="delegate library not built")
def test_demo_delegate_matches_stock(demo_run):
    r, out = demo_run
    assert r.returncode == 0, r.stderr[-3000:]
    rows = parse_demo_table(r.stdout)
    stock, deleg = float(rows[ROW_NAMES[1]][0]), float(rows[ROW_NAMES[2]][0])
    assert 0.0 <= deleg <= 1.0
    assert abs(stock - deleg) <= 1e-6
    assert "claimed=" in r.stdout
    m = re.search(r"predictions agree on ([\d.]+)%", r.stdout)
    assert m and float(m.group(1)) == 100.0
    result = json.loads((out / "demo.json").read_text())
    row = result["rows"][2]
    assert row["agreement_with_stock"] == 1.0
    assert row["max_abs_logit_diff"] < 1e-3
    assert result["delegate_stats"]["claimed"] >= 1
    assert result["bench"]["speedup"] > 0


def test_inspect_bench_report_on_demo_outputs(demo_run, tmp_path, capsys):
    r, out = demo_run
    assert r.returncode == 0, r.stderr[-3000:]
    pytest.importorskip("npas_keras.export")
    tfl = str(out / "pruned.tflite")
    code, text, err = call(capsys, "inspect", tfl)
    assert code == 0, err
    assert "CONV_2D" in text and "FULLY_CONNECTED" in text and "density" in text
    code, text, err = call(capsys, "inspect", tfl, "--json", "-")
    rows = json.loads(text)
    assert code == 0 and all(0.0 <= row["density"] <= 1.0 for row in rows)

    if delegate_built():
        bench_json = tmp_path / "bench.json"
        code, text, err = call(capsys, "bench", tfl, "--runs", "5", "--warmup", "1",
                               "--json", str(bench_json))
        assert code == 0, err
        bench = json.loads(bench_json.read_text())
        case = bench["cases"][0]
        assert case["threads"] == 1 and case["baseline"] == "xnnpack"
        assert case["baseline_ms"] > 0 and case["npas_ms"] > 0
        assert case["max_abs_err"] < 1e-3
        assert 0 < case["density"] <= 1
        inputs = [str(out / "demo.json"), str(bench_json)]
    else:
        inputs = [str(out / "demo.json")]

    code, text, err = call(capsys, "report", *inputs, "-o", str(tmp_path / "rep"))
    assert code == 0, err
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "data:image/png;base64," in html and "keras dense" in html


def test_export_and_prune_commands(demo_run, tmp_path, capsys):
    r, out = demo_run
    assert r.returncode == 0, r.stderr[-3000:]
    dense = str(out / "dense.keras")
    pruned = str(tmp_path / "p.keras")
    code, text, err = call(capsys, "prune", dense, "-o", pruned, "--epochs", "0",
                           "--scheme", "bcr", "--rate", "0.5")
    assert code == 0, err
    assert os.path.isfile(pruned)
    tfl = str(tmp_path / "p.tflite")
    code, text, err = call(capsys, "export", pruned, "-o", tfl)
    assert code == 0, err
    assert os.path.getsize(tfl) > 0
    code, text, err = call(capsys, "inspect", tfl, "--json", "-")
    rows = json.loads(text)
    pruned_rows = [row for row in rows if row["scheme"] not in (None, "dense")]
    assert pruned_rows and all(abs(row["density"] - 0.5) < 0.02 for row in pruned_rows)
    # wrong input shape for fine-tuning data: a clear failure, exit 1
    code, text, err = call(capsys, "prune", dense, "-o", pruned, "--epochs", "1",
                           "--dataset", "fashion_mnist")
    if os.path.isdir("/usr/share/datasets/fashion-mnist"):
        assert code == 1 and "--epochs 0" in err


def test_bench_refuses_npas_format(demo_run, capsys):
    r, out = demo_run
    npas_file = out / "pruned_npas.tflite"
    if not npas_file.is_file():
        pytest.skip("demo did not write an npas-format file")
    code, _, err = call(capsys, "bench", str(npas_file), "--runs", "2")
    assert code == 1 and "standard" in err


def test_bench_bad_option_is_usage_error(demo_run, capsys):
    r, out = demo_run
    code, _, err = call(capsys, "bench", str(out / "pruned.tflite"), "--option", "nonsense")
    assert code == 2 and "KEY=VALUE" in err


@pytest.mark.skipif(not delegate_built(), reason="delegate library not built")
def test_bench_npas_format_with_baseline(demo_run, tmp_path, capsys):
    r, out = demo_run
    npas_file, std_file = out / "pruned_npas.tflite", out / "pruned.tflite"
    if not npas_file.is_file():
        pytest.skip("demo did not write an npas-format file")
    code, _, err = call(capsys, "bench", str(npas_file), "--baseline", str(std_file),
                        "--runs", "3", "--warmup", "1", "--json", str(tmp_path / "b.json"))
    if code == 1 and "unresolved custom op" in err:
        pytest.skip("the delegate declined an NPAS custom op (delegate issue): " + err.strip())
    assert code == 0, err
    case = json.loads((tmp_path / "b.json").read_text())["cases"][0]
    assert case["max_abs_err"] < 1e-3 and case["npas_ms"] > 0


# ---------------------------------------------------------------------------- report --masks

def test_report_masks_writes_the_docs_picture(tmp_path, capsys):
    code, out, err = call(capsys, "report", "--masks", str(tmp_path / "img"))
    assert code == 0, err
    png = tmp_path / "img" / "scheme_masks.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in out
    code, _, err = call(capsys, "report")  # neither JSON inputs nor --masks
    assert code == 2 and "--masks" in err


# ---------------------------------------------------------------------------- search

def test_search_help_lists_its_options(capsys):
    if "search" not in [c.name for c in cli.available_commands()]:
        pytest.skip("npas_keras.tuner not present")
    code, out, _ = call(capsys, "search", "--help")
    assert code == 0
    for opt in ("--trials", "--epochs", "--budget-ms", "--budget-fraction", "--threads",
                "--out", "--dataset"):
        assert opt in out


def test_search_end_to_end_on_digits(tmp_path, capsys):
    pytest.importorskip("keras_tuner")
    if "search" not in [c.name for c in cli.available_commands()]:
        pytest.skip("npas_keras.tuner not present")
    out = tmp_path / "search"
    # a budget the tiny digits CNN can meet (at 0.5 its invoke overhead and pooling leave no
    # configuration measured within it, and the oracle rightly stops after one trial)
    r = run_npas("search", "--dataset", "digits", "--trials", "2", "--epochs", "1",
                 "--budget-fraction", "0.8",
                 "--out", str(out), "--latency-table", str(tmp_path / "lat.json"), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # progress per trial on stderr
    assert len(re.findall(r"trial \d/2 ", r.stderr)) == 2, r.stderr[-2000:]
    result = json.loads((out / "search.json").read_text())
    assert result["kind"] == "npas-search" and result["dataset"] == "digits"
    assert result["dense_latency_ms"] > 0
    assert result["budget_ms"] == pytest.approx(0.8 * result["dense_latency_ms"])
    trials = result["trials"]
    assert len(trials) == 2
    for t in trials:
        assert 0.0 <= t["accuracy"] <= 1.0
        assert t["latency_ms"] > 0
        assert t["feasible"] == (t["latency_ms"] <= result["budget_ms"])
    best = result["best"]
    assert best["trial_id"] in {t["trial_id"] for t in trials}
    assert best["accuracy"] == max(t["accuracy"] for t in trials
                                   if t["feasible"] == best["feasible"])
    # readable by `npas report` (a search: accuracy vs latency, Pareto front)
    from npas_keras.report import classify
    assert classify(result) == "search"
    code, text, err = call(capsys, "report", str(out / "search.json"), "-o", str(tmp_path / "r"))
    assert code == 0, err
    assert (tmp_path / "r" / "report.html").is_file()
    # best.tflite runs through npas_keras.runtime.Interpreter (the delegate when built)
    import numpy as np
    from npas_keras import data
    from npas_keras.runtime import Interpreter
    (_, _), (xt, yt) = data.load("digits")
    interp = Interpreter(model_path=str(out / "best.tflite"), delegate=delegate_built())
    interp.allocate_tensors()
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    preds = []
    for i in range(len(xt)):
        interp.set_tensor(d_in["index"], xt[i:i + 1].astype(d_in["dtype"]))
        interp.invoke()
        preds.append(int(np.argmax(interp.get_tensor(d_out["index"])[0])))
    acc = float(np.mean(np.array(preds) == yt))
    assert abs(acc - best["accuracy"]) < 0.03  # the exported file is the trial's model


def test_search_int8_with_weight_bits_and_bops_budget(tmp_path):
    """--weight-bits 8,4 --bops-reduction: int8 trials within the BOPs budget, per-layer widths
    recorded, best.tflite the full-integer export whose weights of 4-bit layers are in -8..7."""
    pytest.importorskip("keras_tuner")
    if "search" not in [c.name for c in cli.available_commands()]:
        pytest.skip("npas_keras.tuner not present")
    out = tmp_path / "search"
    r = run_npas("search", "--dataset", "digits", "--trials", "2", "--epochs", "1",
                 "--budget-fraction", "2", "--weight-bits", "8,4", "--bops-reduction", "40",
                 "--out", str(out), "--latency-table", str(tmp_path / "lat.json"), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(re.findall(r"trial \d/2 .* BOPs", r.stderr)) == 2, r.stderr[-2000:]
    result = json.loads((out / "search.json").read_text())
    assert result["dtype"] == "int8" and result["bops_budget"] > 0
    assert all(t["bops"] <= result["bops_budget"] for t in result["trials"])
    best = result["best"]
    assert set(best["weight_bits"].values()) <= {4, 8}
    import numpy as np
    from npas_keras.quantization import int8_weight_zeros
    content = (out / "best.tflite").read_bytes()
    rows = int8_weight_zeros(content, return_values=True)
    assert rows and all(r["zero_points"] == {0} for r in rows)
    if 4 in best["weight_bits"].values():
        assert any(np.abs(r["values"]).max() <= 8 for r in rows)
    code = run_npas("search", "--bops-reduction", "10", "--out", str(out)).returncode
    assert code == 2  # --bops-reduction without --weight-bits
    r = run_npas("search", "--power-of-two", "--out", str(out))
    assert r.returncode == 2 and "--power-of-two needs --weight-bits" in r.stderr, r.stderr
    assert result["power_of_two"] is False
