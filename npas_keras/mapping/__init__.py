"""Per-layer pruning-scheme mapping: by rules (kind, shape, measured latency) or by search.

    mapping = map_schemes(model, rate=0.8, table=LatencyTable())    # {layer name: Scheme|None}
    mapping, history = search_schemes(model, 0.8, table, latency_budget_ms=1.0)
    pruned = npas_keras.prune(model, mapping)
"""
from npas_keras.mapping.rules import candidate_schemes, map_schemes, rule_scheme
from npas_keras.mapping.search import energy_kept, search_schemes

__all__ = ["candidate_schemes", "energy_kept", "map_schemes", "rule_scheme", "search_schemes"]
