"""Export: tf_keras -> .tflite, standard ops or compact NPAS custom ops (see DESIGN.md, docs/export.md).

    npas_keras.export(model, "m.tflite", format="standard" | "npas", quantize=None | "int8",
                      weight_bits=None | 4 | {layer: 4 | 8})
    npas_keras.inspect("m.tflite") -> list of per-weight-op rows
    npas_keras.export.has_npas_custom_ops(model_bytes) -> bool   (no TensorFlow import)

Only `export` imports TensorFlow, and only when called. The module itself is callable
(`npas_keras.export(...)` works whether `npas_keras.export` resolves to this module or to the
function), because importing the submodule rebinds the package attribute to the module.
"""
import sys
import types

from npas_keras.export.flatbuffer import has_npas_custom_ops, load_model, save_model  # noqa: F401
from npas_keras.export.format import CUSTOM_NAMES, is_npas_custom_name  # noqa: F401
from npas_keras.export.inspection import format_inspect, inspect, print_inspect  # noqa: F401


def export(model, path=None, format="standard", representative_data=None, quantize=None,
           weight_bits=None):
    from npas_keras.export.converter import export as _export
    return _export(model, path, format=format, representative_data=representative_data,
                   quantize=quantize, weight_bits=weight_bits)


try:
    from npas_keras.export.converter import export as _doc_source  # noqa: E402
except Exception:  # pragma: no cover - TensorFlow missing: keep the light parts usable
    _doc_source = None
if _doc_source is not None:
    export.__doc__ = _doc_source.__doc__

# `npas_keras.export` is this function after the package's lazy import: give it the module's
# public helpers too, so npas_keras.export.inspect / has_npas_custom_ops work either way.
for _name in ("inspect", "format_inspect", "print_inspect", "has_npas_custom_ops",
              "is_npas_custom_name", "load_model", "save_model"):
    setattr(export, _name, globals()[_name])

__all__ = ["export", "inspect", "format_inspect", "print_inspect", "has_npas_custom_ops",
           "is_npas_custom_name", "CUSTOM_NAMES"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
