"""Report: PNG plots (valid files matplotlib reads back), Pareto front, self-contained HTML."""
import base64
import json
import re

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib import image as mpimg  # noqa: E402

from npas_keras import report  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

BENCH = {
    "benchmark": "conv3x3", "machine": "test machine",
    "cases": [
        {"name": f"c{d}", "model": "vgg", "scheme": s, "density": d, "threads": 1,
         "baseline": "xnnpack", "baseline_ms": 8.0, "npas_ms": 8.0 * d * 1.5,
         "speedup": 1 / (d * 1.5), "max_abs_err": 1e-6}
        for s in ("bcr", "block_punched") for d in (0.5, 0.25, 0.125)
    ],
}
LAYERS = [
    {"op": "CONV_2D", "layer": "conv1", "scheme": "bcr", "block_shape": [4, 4], "density": 0.5,
     "stored_bytes": 1000},
    {"op": "FULLY_CONNECTED", "layer": "fc1", "scheme": "bcr", "block_shape": [4, 4],
     "density": 0.125, "stored_bytes": 4000},
]
TRIALS = [{"name": f"t{i}", "accuracy": a, "latency_ms": l}
          for i, (a, l) in enumerate([(0.90, 1.0), (0.85, 2.0), (0.93, 1.5), (0.80, 0.5),
                                      (0.93, 3.0), (0.70, 0.6)])]


def _check_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    # not a blank canvas
    assert float(np.std(img[..., :3])) > 0.01


def test_speedup_plot(tmp_path):
    path = report.plot_speedup_vs_density(BENCH, str(tmp_path / "s.png"))
    _check_png(path)


def test_speedup_plot_rejects_empty(tmp_path):
    with pytest.raises(ValueError):
        report.plot_speedup_vs_density({"cases": [{"name": "x"}]}, str(tmp_path / "s.png"))
    with pytest.raises(ValueError, match="cases"):
        report.plot_speedup_vs_density({"benchmark": "x"}, str(tmp_path / "s.png"))


def test_layer_bars(tmp_path):
    _check_png(report.plot_layer_bars(LAYERS, str(tmp_path / "l.png")))
    rows = [{"layer": "a", "density": 0.3, "latency_ms": 0.2},
            {"layer": "b", "density": 0.9, "latency_ms": 1.2}]
    _check_png(report.plot_layer_bars(rows, str(tmp_path / "l2.png")))
    with pytest.raises(ValueError):
        report.plot_layer_bars([{"layer": "a"}], str(tmp_path / "l3.png"))


def test_pareto_front_is_non_dominated():
    front = report.pareto_front(TRIALS)
    names = [p["name"] for p in front]
    assert names == ["t3", "t0", "t2"]  # (0.5,.80) (1.0,.90) (1.5,.93)
    for p in front:
        for q in TRIALS:
            dominated = (q["latency_ms"] <= p["latency_ms"] and q["accuracy"] >= p["accuracy"]
                         and (q["latency_ms"], q["accuracy"]) != (p["latency_ms"], p["accuracy"]))
            assert not dominated


def test_pareto_plot(tmp_path):
    _check_png(report.plot_pareto(TRIALS, str(tmp_path / "p.png")))


def test_write_html_embeds_images(tmp_path):
    png = report.plot_pareto(TRIALS, str(tmp_path / "p.png"))
    html_path = report.write_html(str(tmp_path / "r.html"), [
        {"title": "Front <&>", "text": "a & b", "images": [png], "table": TRIALS}])
    text = open(html_path, encoding="utf-8").read()
    assert text.startswith("<!DOCTYPE html>")
    assert "Front &lt;&amp;&gt;" in text
    uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(uris) == 1
    assert base64.b64decode(uris[0]) == open(png, "rb").read()
    assert text.count("<tr>") == len(TRIALS) + 1
    assert "src='http" not in text and "href=" not in text  # self-contained


def test_classify():
    assert report.classify(BENCH) == "bench"
    assert report.classify(TRIALS) == "search"
    assert report.classify({"trials": TRIALS}) == "search"
    assert report.classify(LAYERS) == "layers"
    assert report.classify({"kind": "npas-demo", "rows": []}) == "demo"
    assert report.classify({"something": 1}) is None


def test_build_report(tmp_path):
    files = []
    for name, obj in (("bench", BENCH), ("search", TRIALS), ("layers", LAYERS),
                      ("other", {"x": 1})):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(obj))
        files.append(str(p))
    out = report.build_report(files, str(tmp_path / "out"))
    assert len(out["images"]) == 3
    for img in out["images"]:
        _check_png(img)
    assert [p for p, _ in out["skipped"]] == [files[3]]
    text = open(out["html"], encoding="utf-8").read()
    assert text.count("data:image/png;base64,") == 3
    assert "conv3x3" in text and "test machine" in text


def test_build_report_nothing_usable(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{}")
    with pytest.raises(ValueError, match="nothing to report"):
        report.build_report([str(p)], str(tmp_path / "out"))
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        report.build_report([str(p)], str(tmp_path / "out"))


def test_plot_masks_png_and_every_panel_satisfies_its_scheme(tmp_path):
    from npas_keras.schemes import satisfies

    result = report.plot_masks(str(tmp_path / "masks.png"))
    _check_png(result["path"])
    assert list(result["masks"]) == list(report.MASK_SCHEMES)  # one panel per scheme, in order
    for label, mask in result["masks"].items():
        scheme = result["schemes"][label]
        assert mask.shape == (32, 36) and mask.dtype == bool
        assert abs(mask.mean() - 0.25) < 0.02, label
        assert satisfies(mask, scheme, kernel_hw=(3, 3)), label
    # masks differ between schemes (the picture shows seven structures, not one)
    flat = {m.tobytes() for m in result["masks"].values()}
    assert len(flat) == len(result["masks"])


def test_plot_masks_subset_and_docs_image(tmp_path):
    import os

    result = report.plot_masks(str(tmp_path / "two.png"), schemes=["bcr", "2:4"],
                               shape=(16, 18), density=0.5)
    _check_png(result["path"])
    assert set(result["masks"]) == {"bcr", "2:4"}
    with pytest.raises(ValueError):
        report.plot_masks(str(tmp_path / "none.png"), schemes=[])
    docs_png = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                            "images", "scheme_masks.png")
    assert os.path.getsize(docs_png) < 150_000  # commit-sized
    _check_png(docs_png)
    assert "images/scheme_masks.png" in open(os.path.join(os.path.dirname(docs_png), "..",
                                                          "schemes.md")).read()
