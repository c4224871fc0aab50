"""NPASTuner end to end on digits (3 trials), and the distributed chief + 2 workers mode."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("tf_keras")

from npas_keras.latency import (LatencyTable, TablePredictor, delegate_available,  # noqa: E402
                                nonzero_weight_proxy_ms, to_tflite)
from npas_keras.tuner import NPASTuner, apply_operator, operator, width  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digits():
    try:
        from npas_keras.data import load_digits
    except ImportError:  # pragma: no cover
        load_digits = None
    if load_digits is not None:
        (x, y), (xt, yt) = load_digits()
        return x, y, xt, yt
    from sklearn.datasets import load_digits as sk  # pragma: no cover

    b = sk()
    x = (b.images / 16.0).astype(np.float32)[..., None]
    return x[:1400], b.target[:1400], x[1400:], b.target[1400:]


def build(hp):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = apply_operator(x, operator(hp, "block1", ("conv3x3", "dwsep3x3")), width(hp, 32))
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(hp.Choice("lr", [1e-3, 3e-3])),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_three_trial_search_on_digits_returns_exportable_model(tmp_path):
    x, y, xt, yt = digits()
    real = delegate_available()
    if real:  # the real delegate, measured (cached in a temporary table)
        table = LatencyTable(path=str(tmp_path / "lat.json"), runs=10, warmup=2)
    else:     # not built yet: a fake, deterministic latency (nonzero weights)
        table = LatencyTable(path=str(tmp_path / "lat.json"), measure_fn=nonzero_weight_proxy_ms,
                             runtime="fake")
    # pre-trained dense model to inherit from (1 epoch is enough for digits)
    from keras_tuner import HyperParameters

    # seeded, and 5 epochs: the best trial's score after heavy pruning and one fine-tune epoch
    # came out at 0.21 once from an unseeded 2-epoch start
    keras.utils.set_random_seed(0)
    dense = build(HyperParameters())
    dense.fit(x, y, epochs=5, batch_size=64, verbose=0)
    dense_ms = table.measure_model(dense)
    # the fake latency is exact, so the budget can bite; real times of this tiny model are a few
    # microseconds and noisy, so there the budget only has to admit the pruned candidates
    budget = (1.5 if real else 0.9) * dense_ms
    # no "dense" among the schemes: every trial prunes its large layers (with the real delegate
    # the budget admits the dense model, which the seeds would otherwise try first)
    tuner = NPASTuner(build, objective="val_accuracy", latency_budget_ms=budget, max_trials=3,
                      pretrained=dense, fine_tune_epochs=1, batch_size=64, latency_table=table,
                      schemes=("block_punched", "bcr", "pattern"), seed=1,
                      directory=str(tmp_path), project_name="digits",
                      oracle_kwargs={"pool_size": 8, "gp_restarts": 0})
    tuner.search(x, y, validation_data=(xt, yt), verbose=0)
    results = tuner.results()
    assert len(results) == 3
    for r in results:
        assert r["status"] == "COMPLETED"
        assert r["latency_ms"] > 0
        # the oracle only proposed configurations predicted within the budget (its prediction
        # corrected by the measured / predicted ratio of the trials finished by then)
        assert tuner.oracle.admitted_latency(r["trial_id"]) <= budget
    best = tuner.get_best_models(1)
    assert len(best) == 1
    model = best[0]
    trial = tuner.get_best_trials(1)[0]
    assert trial.score > 0.5  # inherited weights + one epoch: far above chance (0.1)
    # the kept model carries the schemes' zeros
    from npas_keras.schemes import satisfies

    mapping = tuner.load_mapping(trial)
    assert any(s is not None for s in mapping.values())
    by_name = {layer.name: layer for layer in model.layers}
    from npas_keras.latency import layer_kind
    from npas_keras.layers.views import prunable_weights

    for name, scheme in mapping.items():
        if scheme is None:
            continue
        layer = by_name[name]
        kind = layer_kind(layer)
        kernel = layer.kernel.numpy()
        hw = kernel.shape[:2] if kind == "conv2d" else (1, 1)
        (view,) = prunable_weights(layer)
        assert satisfies((view.to_matrix(kernel) != 0), scheme, kernel_hw=hw), name
    # exportable: converts, and the TFLite model agrees with Keras
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=to_tflite(model))
    interp.allocate_tensors()
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.set_tensor(d_in["index"], xt[:1])
    interp.invoke()
    np.testing.assert_allclose(interp.get_tensor(d_out["index"]), model.predict(xt[:1], verbose=0),
                               atol=1e-4)


DIST_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, {root!r})
    import numpy as np, tf_keras as keras
    from npas_keras.latency import LatencyTable, nonzero_weight_proxy_ms
    from npas_keras.tuner import NPASTuner

    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 32)).astype("float32")
    y = (x[:, :10].argmax(1)).astype("int64")

    def build(hp):
        m = keras.Sequential([keras.Input((32,)),
                              keras.layers.Dense(hp.Choice("units", [32, 64]), activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
        m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    table = LatencyTable(path=os.path.join({tmp!r}, "lat.json"),
                         measure_fn=nonzero_weight_proxy_ms, runtime="fake")
    tuner = NPASTuner(build, objective="val_accuracy", latency_budget_ms=0.01, max_trials=4,
                      latency_table=table, seed=2, directory={tmp!r}, project_name="dist",
                      rates=(0.5, 0.8), oracle_kwargs={{"pool_size": 8, "gp_restarts": 0}})
    tuner.search(x, y, validation_data=(x[:64], y[:64]), verbose=0)
    if "chief" in os.environ["KERASTUNER_TUNER_ID"]:
        print("CHIEF-DONE", len(tuner.oracle.trials),
              sorted({{t.hyperparameters.values.get("units") for t in tuner.oracle.trials.values()}}))
    else:
        print("WORKER-DONE", os.environ["KERASTUNER_TUNER_ID"])
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_chief_and_two_workers(tmp_path):
    pytest.importorskip("grpc")
    script = tmp_path / "dist.py"
    script.write_text(DIST_SCRIPT.format(root=ROOT, tmp=str(tmp_path)))
    port = str(_free_port())
    procs = {}
    for tid in ("chief", "tuner0", "tuner1"):
        env = dict(os.environ, KERASTUNER_TUNER_ID=tid, KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=port, CUDA_VISIBLE_DEVICES="",
                   OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
        procs[tid] = subprocess.Popen([sys.executable, str(script)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True)
    outs = {}
    try:
        for tid in ("tuner0", "tuner1", "chief"):
            outs[tid], _ = procs[tid].communicate(timeout=240)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for tid in ("tuner0", "tuner1"):
        assert procs[tid].returncode == 0, outs[tid][-3000:]
        assert f"WORKER-DONE {tid}" in outs[tid]
    assert procs["chief"].returncode == 0, outs["chief"][-3000:]
    assert "CHIEF-DONE 4" in outs["chief"]
    # both workers ran trials: each trial.json records which tuner ran it via the oracle files
    trials = [json.load(open(tmp_path / "dist" / d / "trial.json"))
              for d in os.listdir(tmp_path / "dist") if d.startswith("trial_")]
    assert len(trials) == 4 and all(t["status"] == "COMPLETED" for t in trials)


def test_search_cnn_widths_operators_and_small_inputs():
    """The shared search model (npas search, benchmarks/search.py): the width multiplier scales
    every hidden layer, dwsep3x3 replaces block2 by depthwise + pointwise, 8x8 inputs skip pool1,
    and the model trains (loss falls) on real digits."""
    from keras_tuner import HyperParameters

    from npas_keras.tuner import search_cnn

    build = search_cnn((28, 28, 1), 10, filters=(8, 16), units=24)
    dense = build(HyperParameters())
    assert [dense.get_layer(n).units if n.startswith("fc") else dense.get_layer(n).filters
            for n in ("conv1", "block2", "fc1")] == [8, 16, 24]
    assert dense.get_layer("pool1") is not None and dense.output_shape == (None, 10)
    hp = HyperParameters()
    hp.values.update({"width": 0.5, "op:block2": "dwsep3x3"})
    hp.Choice("width", [0.5, 0.75, 1.0])
    hp.Choice("op:block2", ["conv3x3", "dwsep3x3"])
    half = build(hp)
    names = [layer.name for layer in half.layers]
    assert "block2_dw" in names and "block2_pw" in names and "block2" not in names
    assert (half.get_layer("conv1").filters, half.get_layer("block2_pw").filters,
            half.get_layer("fc1").units) == (4, 8, 12)

    x, y, xt, yt = digits()
    small = search_cnn(x.shape[1:], 10, filters=(8, 16), units=16)(HyperParameters())
    assert "pool1" not in [layer.name for layer in small.layers]
    before = small.evaluate(xt, yt, verbose=0)[0]
    small.fit(x, y, epochs=2, batch_size=64, verbose=0)
    assert small.evaluate(xt, yt, verbose=0)[0] < before


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1)])
def test_narrow_inheritance_keeps_the_strongest_filters(shape):
    """Width 0.5 inherits the dense model's largest-L1 units and the matching input channels
    (through Flatten): a dense model whose dropped half of every hidden layer is zero computes
    exactly what its half-width copy computes (reference: the dense model's own output)."""
    from keras_tuner import HyperParameters

    from npas_keras.tuner import inherit_weights, search_cnn

    build = search_cnn(shape, 10, filters=(16, 32), units=64)
    src = build(HyperParameters())
    rng = np.random.default_rng(0)
    for layer in src.layers:
        if layer.weights and layer.name != "probs":
            k, b = layer.get_weights()
            drop = rng.permutation(k.shape[-1])[: k.shape[-1] // 2]
            k[..., drop] = 0.0
            b[:] = rng.standard_normal(b.shape) * 0.1
            b[drop] = 0.0
            layer.set_weights([k, b])
    hp = HyperParameters()
    hp.Fixed("width", 0.5)
    dst = build(hp)
    assert inherit_weights(src, dst) == 4
    x = rng.standard_normal((6,) + shape).astype(np.float32)
    np.testing.assert_allclose(dst.predict(x, verbose=0), src.predict(x, verbose=0), atol=1e-5)
    # a leading-slice copy (the old behaviour) would not: the kept units are not the first ones
    assert dst.get_layer("conv1").get_weights()[0].shape == (3, 3, 1, 8)


def test_rule_seeds_are_the_least_pruning_per_architecture(tmp_path):
    """NPASTuner.rule_seeds(): per architecture of the space (every width x operator here), the
    dense model when it is predicted within the budget, else the rules' mapping (map_schemes with
    the table) at the lowest rate that is; as hp values that map back to those schemes; ordered
    by mean layer density; capped by max_seeds."""
    from keras_tuner import HyperParameters

    from npas_keras.latency.predictor import model_layer_specs
    from npas_keras.mapping import map_schemes
    from npas_keras.tuner import search_cnn

    table = LatencyTable(path=str(tmp_path / "lat.json"), measure_fn=nonzero_weight_proxy_ms,
                         runtime="fake")
    build = search_cnn((8, 8, 1), 10, filters=(16, 64), units=128)
    predictor = TablePredictor(table)
    budget = 0.25 * predictor(build(HyperParameters()))
    rates = (0.5, 0.7, 0.9)
    blocks = ((16, 16),)
    tuner = NPASTuner(build, latency_budget_ms=budget, max_trials=1, latency_table=table,
                      rates=rates, block_shapes=("16x16",),
                      directory=str(tmp_path / "t"), overwrite=True, seed=0)
    archs = tuner.architectures()
    assert archs[0] == {"width": 1.0, "op:block2": "conv3x3"}  # the default first
    assert len({tuple(sorted(a.items())) for a in archs}) == len(archs) == 6
    assert len(tuner.architectures(limit=5)) == 4  # the default and its one-hp variations
    seeds = tuner.rule_seeds()
    hm = tuner.hypermodel
    densities = []
    for seed in seeds:
        hp = HyperParameters()
        hp.values.update({k: seed[k] for k in ("width", "op:block2")})
        model = hm.build(hp)
        mapping = hm.mapping(model, seed)
        assert predictor(model, mapping) <= budget
        pruned = {s.rate for s in mapping.values() if s is not None}
        assert len(pruned) <= 1
        if pruned:  # the dense model and the rules at every lower rate are over the budget
            rate = pruned.pop()
            assert predictor(model, {n: None for n in mapping}) > budget
            rules = map_schemes(model, rate, table, block_shapes=blocks)
            assert {n: s and s.name for n, s in mapping.items()} == {
                n: s and s.name for n, s in rules.items()}
            for lower in (r for r in rates if r < rate):
                v = hm.values_for_mapping(model, map_schemes(model, lower, table,
                                                             block_shapes=blocks), seed)
                assert v is None or predictor(model, hm.mapping(model, v)) > budget
        densities.append(np.mean([1.0 if mapping[n] is None else 1.0 - mapping[n].rate
                                  for n, spec in model_layer_specs(model)
                                  if len(hm.allowed_schemes(spec)) > 1]))
    assert len(seeds) >= 3 and densities == sorted(densities, reverse=True)
    assert densities[0] == 1.0 and densities[-1] < 1.0  # dense fits some architectures only
    assert tuner.rule_seeds(max_seeds=2) == seeds[:2]


def _hand_bops(model, bits):
    """BOPs per sample counted directly: nonzero kernel weights x output positions x weight bits
    x 8 activation bits, per Dense / Conv2D / DepthwiseConv2D layer."""
    total = 0
    for layer in model.layers:
        kernel = getattr(layer, "depthwise_kernel", None)
        kernel = getattr(layer, "kernel", None) if kernel is None else kernel
        if kernel is None:
            continue
        positions = int(np.prod(layer.output_shape[1:-1])) if kernel.shape.rank == 4 else 1
        total += np.count_nonzero(kernel.numpy()) * positions * bits.get(layer.name, 8) * 8
    return total


def test_joint_bits_and_pruning_search_on_digits(tmp_path):
    """weight_bits=(8, 4) with a BOPs budget and power-of-two steps: each layer's bit width is
    an hp searched with its scheme and rate; every trial is within the budget (BOPs counted
    here by hand), its kernels lie on their power-of-two bit grids and keep the schemes' zeros,
    and its latency is measured on the int8 export of exactly that model (the file the best
    trial re-exports to, byte for byte, holding those weights exactly), which the delegate
    runs in agreement with Keras."""
    from keras_tuner import HyperParameters

    import npas_keras
    from npas_keras.quantization import bops, fake_quantize
    from npas_keras.schemes import satisfies

    x, y, xt, yt = digits()
    keras.utils.set_random_seed(0)
    dense = build(HyperParameters())
    dense.fit(x, y, epochs=3, batch_size=64, verbose=0)
    budget = 0.3 * bops(dense, 8)["total"]  # needs pruning or 4 bits (or both)
    table = LatencyTable(path=str(tmp_path / "lat.json"), measure_fn=nonzero_weight_proxy_ms,
                         runtime="fake", dtype="int8")
    measured = {}

    def latency_fn(model_bytes):
        measured[len(measured)] = bytes(model_bytes)
        return nonzero_weight_proxy_ms(model_bytes)

    tuner = NPASTuner(build, max_trials=3, pretrained=dense, latency_table=table,
                      latency_fn=latency_fn, weight_bits=(8, 4), bops_budget=budget,
                      power_of_two=True,
                      rates=(0.5, 0.8), block_shapes=("16x16",), batch_size=64, seed=1, directory=str(tmp_path), project_name="bits",
                      oracle_kwargs={"pool_size": 8, "gp_restarts": 0})
    names = [h.name for h in tuner.oracle.get_space().space]
    assert {"bits:conv2d:3x3", "bits:dense", "bits:dense_1"} <= set(names)
    tuner.search(x, y, validation_data=(xt, yt), verbose=0)
    results = tuner.results()
    assert len(results) == 3 and len(measured) == 3
    trials = {t.trial_id: t for t in tuner.oracle.trials.values()}
    for r in results:
        trial = trials[r["trial_id"]]
        model, bits = tuner.load_model(trial), tuner.load_bits(trial)
        assert r["bops"] == _hand_bops(model, bits) <= budget and r["feasible"]
        assert r["bops"] <= tuner.predict_bops(r["values"])
        by_name = {layer.name: layer for layer in model.layers}
        for name, scheme in tuner.load_mapping(trial).items():
            kernel = by_name[name].weights[0].numpy()
            depthwise = "depthwise" in name
            np.testing.assert_array_equal(
                fake_quantize(kernel, bits[name], depthwise=depthwise, power_of_two=True),
                kernel, err_msg=name)
            if scheme is not None:
                from npas_keras.layers.views import prunable_weights

                (view,) = prunable_weights(by_name[name])
                hw = kernel.shape[:2] if kernel.ndim == 4 else (1, 1)
                assert satisfies(view.to_matrix(kernel) != 0, scheme, kernel_hw=hw), name
    assert any(b == 4 for r in results for k, b in r["values"].items() if k.startswith("bits:"))
    trial = tuner.get_best_trials(1)[0]
    model, bits = tuner.load_model(trial), tuner.load_bits(trial)
    exported = npas_keras.export(model, None, quantize="int8", representative_data=x[:200],
                                 weight_bits=bits)
    index = sorted(trials).index(trial.trial_id)
    assert exported == measured[index]
    from npas_keras.export import flatbuffer as fb
    from npas_keras.export import format as fmt
    from npas_keras.export.converter import _keras_gemm
    tm, raw = fb.load_model(exported)
    layers = {(r["subgraph"], r["op_index"]): r["layer"] for r in npas_keras.inspect(exported)}
    for e in fb.weight_ops(tm, raw):          # the file holds the trained weights exactly
        w = fmt.gemm_view(e["kind"], fb.constant_array(tm, raw, e["tensor"]))
        deq = w * fb.weight_scales(e, w.shape[0])[:, None]
        ref = _keras_gemm(model.get_layer(layers[(e["subgraph"], e["op_index"])]))
        np.testing.assert_allclose(deq, ref, rtol=1e-6, atol=0)
    interp = npas_keras.Interpreter(model_content=exported)
    interp.allocate_tensors()
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert d_in["dtype"] == np.int8
    scale, zero = d_in["quantization"]
    agree = 0
    for i in range(100):
        interp.set_tensor(d_in["index"], np.round(xt[i:i + 1] / scale + zero).astype(np.int8))
        interp.invoke()
        agree += int(interp.get_tensor(d_out["index"]).argmax() ==
                     model.predict(xt[i:i + 1], verbose=0).argmax())
    assert agree >= 90


def test_bits_search_arguments_are_checked(tmp_path):
    table = LatencyTable(path=str(tmp_path / "lat.json"), measure_fn=nonzero_weight_proxy_ms,
                         runtime="fake")
    common = dict(latency_table=table, directory=str(tmp_path), overwrite=True)
    with pytest.raises(ValueError, match="LatencyTable\\(dtype='int8'\\)"):
        NPASTuner(build, weight_bits=(8, 4), **common)
    with pytest.raises(ValueError, match="bops_budget needs weight_bits"):
        NPASTuner(build, bops_budget=1e6, **common)
    with pytest.raises(ValueError, match="power_of_two needs weight_bits"):
        NPASTuner(build, power_of_two=True, **common)
    with pytest.raises(ValueError, match="subset of \\(8, 4\\)"):
        NPASTuner(build, weight_bits=(8, 2), **common)
    with pytest.raises(ValueError, match="dtype must be"):
        LatencyTable(path=str(tmp_path / "lat.json"), dtype="int4")


def test_signature_ignores_hps_the_built_model_does_not_use(tmp_path):
    """Two configurations that build the same pruned model (conv1 is too small to prune at
    width 0.5, so its scheme hp changes nothing) share a signature, which the oracle uses as
    its duplicate check; a real difference changes it."""
    from npas_keras.tuner import search_cnn

    table = LatencyTable(path=str(tmp_path / "lat.json"), measure_fn=nonzero_weight_proxy_ms,
                         runtime="fake")
    tuner = NPASTuner(search_cnn((8, 8, 1), 10, filters=(32, 64), units=64), max_trials=1,
                      latency_table=table, directory=str(tmp_path / "t"), overwrite=True)
    assert tuner.oracle.signature == tuner.signature
    base = {"width": 0.5, "op:block2": "conv3x3", "scheme:fc1": "bcr", "rate:fc1": 0.7}
    a = dict(base, **{"scheme:conv1:3x3": "bcr", "rate:conv1:3x3": 0.5})
    b = dict(base, **{"scheme:conv1:3x3": "pattern", "rate:conv1:3x3": 0.9})
    assert tuner.signature(a) == tuner.signature(b)
    assert tuner.signature(dict(a, width=1.0)) != tuner.signature(dict(b, width=1.0))
    assert tuner.signature(a) != tuner.signature(dict(a, **{"rate:fc1": 0.8}))
