"""Rule-based and search-based per-layer scheme mapping."""
import numpy as np
import pytest

keras = pytest.importorskip("tf_keras")

from npas_keras.latency import (LatencyTable, LayerSpec, layer_kind,  # noqa
                                nonzero_weight_proxy_ms, predict, scheme_masks)
from npas_keras.mapping import candidate_schemes, map_schemes, rule_scheme, search_schemes  # noqa
from npas_keras.layers.views import prunable_weights  # noqa: E402
from npas_keras.schemes import satisfies  # noqa: E402


def model():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", name="stem"),          # 1 input channel
        keras.layers.Conv2D(32, 3, padding="same", name="conv3"),         # 3x3, 4608 weights
        keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
        keras.layers.Conv2D(64, 1, name="pw"),                            # 1x1, 2048 weights
        keras.layers.Flatten(),
        keras.layers.Dense(64, name="fc"),                                # 262144 weights
        keras.layers.Dense(10, name="head"),                              # 640 weights
    ])


def test_rules_without_a_table():
    mapping = map_schemes(model(), 0.75)
    assert mapping["stem"] is None          # reduction too small (first layer)
    assert mapping["dw"] is None            # depthwise stays dense
    assert mapping["head"] is None          # too few weights
    assert mapping["conv3"].name == "pattern"
    assert mapping["pw"].name == "block_punched" and mapping["fc"].name == "block_punched"
    assert all(abs(s.rate - 0.75) < 1e-9 for s in mapping.values() if s is not None)
    with pytest.raises(ValueError, match="rate"):
        map_schemes(model(), 1.5)


def test_rules_without_a_table_fit_a_small_classifier():
    """A 10-unit classifier with enough weights to be pruned gets a block clipped to its 10
    rows (16x16 would not fit), and the mapping prunes without error."""
    import npas_keras

    m = keras.Sequential([keras.Input((256,)), keras.layers.Dense(10, name="probs")])
    mapping = map_schemes(m, 0.8)
    assert mapping["probs"].name == "block_punched"
    assert mapping["probs"].block_shape == (10, 16)
    kernel = npas_keras.strip(npas_keras.prune(m, mapping), shrink=False).get_layer(
        "probs").get_weights()[0]
    assert abs(float(np.mean(kernel == 0)) - 0.8) < 0.05


def test_rules_follow_the_measured_table(tmp_path):
    m = model()
    # sparse pays (fake latency = nonzero weights): the fastest candidate wins
    fast = LatencyTable(path=str(tmp_path / "a.json"), measure_fn=nonzero_weight_proxy_ms,
                        runtime="fake")
    spec = LayerSpec("dense", (1024,), 64)
    one = ((16, 16),)
    chosen = rule_scheme(spec, 0.75, fast, block_shapes=one)
    costs = {c: fast.layer_cost(spec, c) for c in candidate_schemes(spec, 0.75, one)}
    assert chosen is not None and fast.layer_cost(spec, chosen) == min(costs.values())
    # sparse does not pay (every layer costs the same): everything stays dense
    flat = LatencyTable(path=str(tmp_path / "b.json"), measure_fn=lambda b: 1.0,
                        runtime="flat")
    assert rule_scheme(spec, 0.75, flat, block_shapes=one) is None
    # the mapped masks are valid for their layers
    mapping = map_schemes(m, 0.75)
    by_name = {layer.name: layer for layer in m.layers}
    for name, scheme in mapping.items():
        if scheme is None:
            continue
        kernel = by_name[name].kernel.numpy()
        kind = layer_kind(by_name[name])
        hw = kernel.shape[:2] if kind == "conv2d" else (1, 1)
        (view,) = prunable_weights(by_name[name])
        mask = scheme_masks(by_name[name], scheme)["kernel"]
        assert satisfies(view.to_matrix(mask) > 0, scheme, kernel_hw=hw)


def test_search_mapping_stays_in_budget(tmp_path):
    m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, name="a"),
                          keras.layers.Dense(32, name="b")])
    table = LatencyTable(path=str(tmp_path / "s.json"), measure_fn=nonzero_weight_proxy_ms,
                         runtime="fake")
    dense_ms = predict(m, table, None)
    budget = 0.8 * dense_ms
    best, history = search_schemes(m, 0.75, table, latency_budget_ms=budget, max_trials=5,
                                   block_shapes=((8, 8), (16, 16)), pool_size=8,
                                   gp_restarts=0, num_initial_points=2)
    assert history and all(h["predicted_ms"] <= budget for h in history)
    assert predict(m, table, best) <= budget
    assert any(s is not None for s in best.values())
    assert best == max(history, key=lambda h: h["score"])["mapping"]
