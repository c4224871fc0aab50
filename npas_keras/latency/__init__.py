"""On-device latency: single layers measured through the npas delegate, cached per machine.

    table = LatencyTable()                       # ~/.cache/npas_keras/latency.json
    ms = table.lookup(LayerSpec("conv2d", (28, 28, 64), 64, (3, 3)), scheme)   # measured on demand
    predict(model, table, mapping)               # sum of layer entries + measured overhead
    validate(model, table, mapping)              # relative error vs a measured whole-model run
    build_table(specs, ["bcr", "pattern"], [0.1, 0.25, 0.5])   # fill the cache, progress on stderr
"""
from npas_keras.latency.machine import cpu_isa, cpu_model, machine_key
from npas_keras.latency.measure import (delegate_available, make_measure_fn,
                                        nonzero_weight_proxy_ms, time_interpreter, to_tflite)
from npas_keras.latency.predictor import (TablePredictor, model_layer_specs, predict, validate)
from npas_keras.latency.specs import LayerSpec, layer_kind, prune_layer_weights, scheme_masks
from npas_keras.latency.table import (LatencyTable, as_scheme, build_table, default_cache_path,
                                      scheme_key, with_density)

__all__ = [
    "LatencyTable", "LayerSpec", "TablePredictor", "as_scheme", "build_table", "cpu_isa",
    "cpu_model", "default_cache_path", "delegate_available", "layer_kind", "machine_key",
    "make_measure_fn", "model_layer_specs", "nonzero_weight_proxy_ms", "predict",
    "prune_layer_weights", "scheme_key", "scheme_masks", "time_interpreter",
    "to_tflite", "validate", "with_density",
]
