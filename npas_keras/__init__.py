"""npas-keras: fine-grained structured pruning for tf_keras, and a TFLite delegate that makes it fast.

Public API (imported lazily so that `import npas_keras` stays cheap and the pure-NumPy parts
work without TensorFlow):

    npas_keras.Scheme, npas_keras.prune, npas_keras.callbacks, npas_keras.strip,
    npas_keras.summary, npas_keras.export, npas_keras.inspect, npas_keras.Interpreter
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    "Scheme": "npas_keras.schemes",
    "prune": "npas_keras.pruning",
    "callbacks": "npas_keras.pruning",
    "strip": "npas_keras.pruning",
    "summary": "npas_keras.pruning",
    "admm": "npas_keras.pruning",
    "export": "npas_keras.export",
    "inspect": "npas_keras.export",
    "Interpreter": "npas_keras.runtime",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'npas_keras' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
