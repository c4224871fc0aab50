"""Keras wrappers for pruning: mask variables and per-layer-kind weight views (see DESIGN.md)."""
from npas_keras.layers.views import WeightView, prunable_weights, layer_kind, unsupported_reason
from npas_keras.layers.wrapper import PruneWrapper, custom_objects, serialize_schedule, deserialize_schedule

__all__ = ["WeightView", "prunable_weights", "layer_kind", "unsupported_reason", "PruneWrapper",
           "custom_objects", "serialize_schedule", "deserialize_schedule"]
