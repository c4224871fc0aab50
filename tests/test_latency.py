"""Latency table: machine keys, specs, weight views, caching, prediction, validation, CLI."""
import argparse
import json

import numpy as np
import pytest

keras = pytest.importorskip("tf_keras")

from npas_keras.latency import (LatencyTable, LayerSpec, build_table, layer_kind,  # noqa: E402
                                machine_key, model_layer_specs, nonzero_weight_proxy_ms, predict,
                                scheme_key, scheme_masks, validate, with_density)
from npas_keras.schemes import Scheme, satisfies  # noqa: E402


class CountingMeasure:
    """A fake measure function that counts its calls (latency = nonzero-weight proxy)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model_bytes):
        self.calls += 1
        return nonzero_weight_proxy_ms(model_bytes)


def fake_table(tmp_path, threads=1, name="lat.json"):
    fn = CountingMeasure()
    return LatencyTable(path=str(tmp_path / name), threads=threads, measure_fn=fn,
                        runtime="fake"), fn


def small_cnn():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.DepthwiseConv2D(3, padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])


def test_machine_key_names_cpu_isa_threads_and_runtime():
    key = machine_key(4, "npas")
    cpu, isa, threads, runtime = key.split("|")
    assert cpu and isa in ("avx512", "avx2", "neon", "scalar")
    assert threads == "threads=4" and runtime == "npas"
    assert machine_key(1) != machine_key(2)
    with pytest.raises(ValueError):
        machine_key(0)


def test_layer_spec_validation_key_and_from_layer():
    spec = LayerSpec("conv2d", (8, 8, 16), 32, 3, 1, "same")
    assert spec.kernel_size == (3, 3) and LayerSpec.from_key(spec.key()) == spec
    assert spec.matrix_shape() == (32, 9 * 16)
    with pytest.raises(ValueError, match="kind"):
        LayerSpec("lstm", (8,), 4)
    with pytest.raises(ValueError, match="input_shape"):
        LayerSpec("dense", (0,), 4)
    with pytest.raises(ValueError):
        LayerSpec("conv2d", (8, 16), 4)
    specs = dict(model_layer_specs(small_cnn()))
    kinds = [s.kind for s in specs.values()]
    assert kinds == ["conv2d", "conv2d", "depthwise_conv2d", "dense", "dense"]
    dense = [s for s in specs.values() if s.kind == "dense"][0]
    assert dense.input_shape == (4 * 4 * 32,) and dense.units == 64


def _view(layer, kernel):
    """The layer's (only) WeightView, its variable set to `kernel`."""
    from npas_keras.layers.views import prunable_weights

    (view,) = prunable_weights(layer)
    view.variable.assign(kernel)
    return view


def _built(layer, input_shape):
    layer.build(input_shape)
    return layer


def test_weight_views_round_trip_and_masks_follow_the_scheme():
    rng = np.random.default_rng(0)
    layers = {"dense": _built(keras.layers.Dense(32), (None, 48)),
              "conv2d": _built(keras.layers.Conv2D(32, 3), (None, 8, 8, 16)),
              "depthwise_conv2d": _built(keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
                                         (None, 8, 8, 8))}
    for kind, shape in [("dense", (48, 32)), ("conv2d", (3, 3, 16, 32)),
                        ("depthwise_conv2d", (3, 3, 8, 2))]:
        k = rng.standard_normal(shape).astype(np.float32)
        view = _view(layers[kind], k)
        assert layer_kind(layers[kind]) == kind
        m = view.to_matrix(k)
        np.testing.assert_array_equal(view.from_matrix(m), k)
    conv = rng.standard_normal((3, 3, 16, 32)).astype(np.float32)
    view = _view(layers["conv2d"], conv)
    assert view.kernel_hw == (3, 3)
    assert view.to_matrix(conv).shape == (32, 144)
    # column order is (ky*kw + kx)*cin + c, as the schemes expect
    assert view.to_matrix(conv)[5, (1 * 3 + 2) * 16 + 7] == conv[1, 2, 7, 5]
    for scheme in [Scheme("pattern", rate=0.6), Scheme("bcr", rate=0.75, block_shape=(8, 16)),
                   Scheme("block_punched", rate=0.5, block_shape=(8, 16))]:
        mask = scheme_masks(layers["conv2d"], scheme)["kernel"]
        assert mask.shape == conv.shape
        assert satisfies(view.to_matrix(mask) > 0, scheme, kernel_hw=(3, 3))
    assert scheme_masks(layers["conv2d"], None)["kernel"].min() == 1.0


def test_missing_entries_are_measured_once_then_cached_per_machine(tmp_path):
    table, fn = fake_table(tmp_path)
    spec = LayerSpec("dense", (128,), 64)
    scheme = Scheme("block_punched", rate=0.75, block_shape=(16, 16))
    with pytest.raises(KeyError):
        table.lookup(spec, scheme, measure=False)
    sparse_ms = table.lookup(spec, scheme)
    assert fn.calls == 1
    assert table.lookup(spec, scheme) == sparse_ms and fn.calls == 1
    dense_ms = table.lookup(spec, None)
    assert dense_ms > sparse_ms  # the fake latency counts nonzero weights
    # persisted under this machine's key, read back without measuring
    data = json.load(open(tmp_path / "lat.json"))
    section = data["machines"][machine_key(1, "fake")]
    assert LatencyTable.entry_key(spec, scheme) in section["entries"]
    again, fn2 = fake_table(tmp_path)
    assert again.lookup(spec, scheme) == sparse_ms and fn2.calls == 0
    # another thread count is another machine key: measured, not borrowed
    other, fn3 = fake_table(tmp_path, threads=2)
    other.lookup(spec, scheme)
    assert fn3.calls == 1
    assert set(json.load(open(tmp_path / "lat.json"))["machines"]) == {
        machine_key(1, "fake"), machine_key(2, "fake")}


def test_corrupt_cache_gives_a_clear_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        LatencyTable(path=str(path), measure_fn=lambda b: 1.0)
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="version"):
        LatencyTable(path=str(path), measure_fn=lambda b: 1.0)


def test_scheme_keys_and_densities():
    assert scheme_key(None) == "dense" and scheme_key("dense") == "dense"
    s = with_density("bcr", 0.25)
    assert abs(s.density - 0.25) < 1e-9 and s.name == "bcr"
    assert with_density("bcr", 1.0) is None
    assert scheme_key(s) == scheme_key(Scheme("bcr", rate=0.75))


def test_build_table_fills_every_entry_with_a_progress_bar(tmp_path, capsys):
    table, fn = fake_table(tmp_path)
    specs = [LayerSpec("dense", (64,), 32)]
    build_table(specs, ["bcr"], [0.25, 0.5], table=table)
    err = capsys.readouterr().err
    assert "latency table [" in err and "3/3" in err
    assert len(table.entries()) == 3  # 1 spec x (dense + 1 scheme x 2 densities)
    calls = fn.calls
    build_table(specs, ["bcr"], [0.25], table=table, progress=False)
    assert fn.calls == calls and capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="density"):
        build_table(specs, ["bcr"], [1.5], table=table, progress=False)


def test_prediction_is_overhead_plus_layer_costs_and_validates(tmp_path):
    table, _ = fake_table(tmp_path)
    model = keras.Sequential([keras.Input((6, 6, 2)),
                              keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(64),
                              keras.layers.Dense(10)])
    mapping = {"dense": None}
    total, parts = predict(model, table, mapping, breakdown=True)
    assert set(parts) == {layer.name for layer in model.layers
                          if layer.name.startswith(("conv2d", "dense"))}
    assert total == pytest.approx(table.overhead_ms + sum(parts.values()))
    names = [n for n, s in model_layer_specs(model) if s.kind == "dense"]
    sparse = predict(model, table, {names[0]: Scheme("bcr", rate=0.9, block_shape=(16, 16))})
    assert sparse < total
    details = validate(model, table, None, details=True)
    assert details["relative_error"] == pytest.approx(
        abs(details["predicted_ms"] - details["measured_ms"]) / details["measured_ms"])
    assert details["relative_error"] < 0.2  # the fake latency is additive over weights
    assert isinstance(validate(model, table), float)


def test_real_measurement_of_a_small_layer(tmp_path):
    """The real path (delegate if built, else stock LiteRT), kept tiny."""
    table = LatencyTable(path=str(tmp_path / "real.json"), runs=10, warmup=2)
    spec = LayerSpec("dense", (64,), 32)
    ms = table.lookup(spec, None)
    assert ms > 0 and table.runtime in ("npas", "litert")
    assert table.machine.endswith(table.runtime)
    rel = validate(keras.Sequential([keras.Input((64,)), keras.layers.Dense(32)]), table)
    assert np.isfinite(rel) and rel >= 0


def test_cli_subcommand_builds_and_shows_a_table(tmp_path, capsys):
    from npas_keras.latency.cli import add_latency_subcommand

    parser = argparse.ArgumentParser(prog="npas")
    sub = parser.add_subparsers(dest="command")
    add_latency_subcommand(sub)
    cache = str(tmp_path / "cli.json")
    args = parser.parse_args(["latency", "table", "--kind", "dense", "--input-shape", "32",
                              "--units", "16", "--schemes", "bcr", "--densities", "0.5",
                              "--runs", "3", "--warmup", "1", "--cache", cache])
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert "2 entries" in out.out and "latency table [" in out.err
    args = parser.parse_args(["latency", "show", "--cache", cache, "--json"])
    assert args.func(args) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["entries"]) == 2 and shown["overhead_ms"] > 0
    with pytest.raises(SystemExit):
        parser.parse_args(["latency", "table", "--kind", "lstm"])


def test_pooling_layers_are_timed_and_counted(tmp_path):
    """Pooling is not free: predict() adds each pooling layer's one-layer time (minus the
    overhead), and a pool spec's one-layer model computes the pooling (NumPy reference)."""
    from npas_keras.latency.predictor import model_pool_specs

    times = {}

    def fn(model_bytes):  # a distinct fake time per distinct model
        return times.setdefault(len(model_bytes), 0.5 + 0.1 * len(times))

    table = LatencyTable(path=str(tmp_path / "lat.json"), measure_fn=fn, runtime="fake")
    model = small_cnn()
    pools = model_pool_specs(model)
    assert [s.kind for _, s in pools] == ["max_pool2d"]
    spec = pools[0][1]
    assert spec == LayerSpec("max_pool2d", (8, 8, 32), 1, (2, 2), (2, 2), "valid")
    total, parts = predict(model, table, None, breakdown=True)
    assert parts[pools[0][0]] == pytest.approx(table.lookup(spec) - table.overhead_ms)
    assert total == pytest.approx(table.overhead_ms + sum(parts.values()))
    x = np.random.default_rng(0).standard_normal((1, 8, 8, 32)).astype(np.float32)
    ref = x.reshape(1, 4, 2, 4, 2, 32).max(axis=(2, 4))
    np.testing.assert_allclose(spec.build_model().predict(x, verbose=0), ref)
    avg = LayerSpec("avg_pool2d", (8, 8, 32), 1, (2, 2), (2, 2), "valid").build_model()
    np.testing.assert_allclose(avg.predict(x, verbose=0), x.reshape(1, 4, 2, 4, 2, 32).mean(
        axis=(2, 4)), rtol=1e-5)
    with pytest.raises(ValueError, match="kind"):
        LayerSpec("pool", (8, 8, 32), 1)
