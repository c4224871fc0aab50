"""Whole-model latency prediction from the table, and its validation against a measured run.

prediction = overhead + sum over prunable and pooling layers of (one-layer time - overhead)

where "overhead" is the measured invoke cost of a trivial model (so it is counted once, not once
per layer). Pooling layers are timed alone like the others (dense, no scheme): on a small CNN
they cost as much as a heavily pruned layer. Layers the table does not model (activations,
reshapes, ...) are assumed to cost nothing beyond that overhead; `validate` tells how good that
assumption is for a model.
"""
from npas_keras.latency.specs import LayerSpec, layer_kind, unwrap
from npas_keras.latency.table import as_scheme


def model_layer_specs(model):
    """[(layer name, LayerSpec)] for the layers of `model` that the table models, in order."""
    from npas_keras.compat import check_model

    check_model(model)
    out = []
    for layer in _flat_layers(model):
        if layer_kind(layer) is None:
            continue
        spec = LayerSpec.from_layer(layer)
        if spec is not None:
            out.append((layer.name, spec))
    return out


def model_pool_specs(model):
    """[(layer name, LayerSpec)] for the pooling layers of `model` the table times."""
    out = []
    for layer in _flat_layers(model):
        spec = LayerSpec.pool_from_layer(unwrap(layer))
        if spec is not None:
            out.append((layer.name, spec))
    return out


def _flat_layers(model):
    import tf_keras as keras

    for layer in model.layers:
        inner = unwrap(layer)
        if isinstance(inner, keras.Model):
            yield from _flat_layers(inner)
        else:
            yield layer


def _scheme_for(layer_name, mapping):
    if mapping is None:
        return None
    if callable(mapping) and not isinstance(mapping, dict):
        return as_scheme(mapping(layer_name))
    return as_scheme(mapping.get(layer_name))


def predict(model, table, mapping=None, breakdown=False):
    """Predicted latency (ms) of `model` with per-layer schemes `mapping` ({name: Scheme|None},
    or a callable name -> Scheme|None; None = all dense). Missing table entries are measured.

    breakdown=True returns (total_ms, {layer name: ms}).
    """
    overhead = table.overhead_ms
    parts = {}
    for name, spec in model_layer_specs(model):
        parts[name] = table.layer_cost(spec, _scheme_for(name, mapping))
    for name, spec in model_pool_specs(model):
        parts[name] = table.layer_cost(spec, None)
    total = overhead + sum(parts.values())
    return (total, parts) if breakdown else total


class TablePredictor:
    """callable(model, mapping) -> predicted ms, backed by a LatencyTable."""

    def __init__(self, table):
        self.table = table

    def __call__(self, model, mapping=None):
        return predict(model, self.table, mapping)


def validate(model, table, mapping=None, details=False):
    """Relative error |predicted - measured| / measured of the table's prediction for `model`.

    `model` should already carry the zeros of `mapping` (pruned, stripped or not); it is
    converted and timed whole with the table's measure function. details=True returns a dict
    {predicted_ms, measured_ms, relative_error, layers}.
    """
    predicted, parts = predict(model, table, mapping, breakdown=True)
    measured = table.measure_model(_stripped(model))
    rel = abs(predicted - measured) / max(measured, 1e-9)
    if details:
        return {"predicted_ms": predicted, "measured_ms": measured, "relative_error": rel,
                "overhead_ms": table.overhead_ms, "layers": parts, "machine": table.machine}
    return rel


def _stripped(model):
    """The model without pruning wrappers when npas_keras.strip exists (else as given)."""
    has_wrappers = any(unwrap(layer) is not layer for layer in model.layers)
    if not has_wrappers:
        return model
    import npas_keras

    return npas_keras.strip(model)
