"""Finding and loading the npas TFLite delegate, and interpreters that use it.

The delegate (``libnpas_delegate.so``, built from ``delegate/`` by ``pip install .``) is an
ordinary TFLite external delegate: it claims FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D nodes
with constant float32 weights whose zeros make its sparse kernels measurably faster, plus the
NPAS custom ops written by :mod:`npas_keras.export`; everything else stays with LiteRT's default
kernels (XNNPACK). This module only depends on ``ai_edge_litert`` and NumPy.

    interp = npas_keras.runtime.Interpreter("model.tflite", num_threads=2)
    interp.allocate_tensors()
    ...
    npas_keras.runtime.delegate_stats(interp)   # which nodes were claimed, and why not
"""
from __future__ import annotations

import ctypes
import json
import os

__all__ = [
    "DELEGATE_OPTIONS",
    "delegate_path",
    "load_delegate",
    "Interpreter",
    "delegate_stats",
    "npas_custom_ops",
]

LIB_NAME = "libnpas_delegate.so"
ENV_LIB = "NPAS_DELEGATE_LIB"

SCHEME_NAMES = ("bcr", "block_punched", "pattern", "n_m", "unstructured", "dense", "all")
KERNEL_NAMES = ("auto", "row_block", "pixel_vector", "dense")

#: Options the delegate accepts (key -> one-line description).
DELEGATE_OPTIONS = {
    "num_threads": "int >= 1; default: the interpreter's thread count",
    "min_sparsity": "float in [0, 1); decline weights with a smaller fraction of zeros (default 0.3)",
    "min_speedup": "float > 0; claim only if the sparse kernel is this much faster than the "
                   "delegate's own dense kernel (default 1.2)",
    "schemes": "allowed weight structures: comma list or sequence of "
               "bcr, block_punched, pattern, n_m, unstructured, dense, all (default all)",
    "kernel": "auto | row_block | pixel_vector | dense (forcing one bypasses min_speedup)",
    "verbose": "0, 1 (log claims) or 2 (also declines), to stderr",
    "tuning_cache": "path of a text file caching measured kernel choices",
    "fuse": "0 or 1 (default 1); on AVX2 and NEON CPUs, run groups of small int8 ADD / SUB / MUL / "
            "LOGISTIC / TANH / SPLIT ops with the int8 FCs around them as one fused node "
            "(an unrolled GRU's gates)",
}


def delegate_path() -> str:
    """Path of ``libnpas_delegate.so``: ``$NPAS_DELEGATE_LIB`` if set, else the package copy."""
    env = os.environ.get(ENV_LIB)
    if env:
        if not os.path.isfile(env):
            raise FileNotFoundError(f"{ENV_LIB}={env!r} does not name a file")
        return os.path.abspath(env)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), LIB_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"the npas delegate library is not built ({path} is missing). Build it with "
            "`pip install .` (or `pip install -e .`) from the npas-keras source tree, which needs "
            "cmake and a C++17 compiler, or point the environment variable "
            f"{ENV_LIB} at a libnpas_delegate.so you built yourself "
            "(cmake -S delegate -B build/delegate && cmake --build build/delegate)")
    return path


def _to_bool_int(key, value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        return int(value)
    raise ValueError(f"npas delegate option {key!r} must be an integer, got {value!r}")


def _to_float(key, value):
    if isinstance(value, bool):
        raise ValueError(f"npas delegate option {key!r} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"npas delegate option {key!r} must be a number, got {value!r}") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise ValueError(f"npas delegate option {key!r} must be finite, got {value!r}")
    return out


def _normalise_options(options) -> dict:
    """Validates delegate options and converts them to the strings the C side parses."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"delegate options must be a dict, got {type(options).__name__}")
    out = {}
    for key, value in options.items():
        if key not in DELEGATE_OPTIONS:
            raise ValueError(f"unknown npas delegate option {key!r}; known options: "
                             + ", ".join(sorted(DELEGATE_OPTIONS)))
        if key == "num_threads":
            n = _to_bool_int(key, value)
            if n < 1:
                raise ValueError(f"npas delegate option 'num_threads' must be >= 1, got {value!r}")
            out[key] = str(n)
        elif key == "min_sparsity":
            x = _to_float(key, value)
            if not 0.0 <= x < 1.0:
                raise ValueError(f"npas delegate option 'min_sparsity' must be in [0, 1), got {value!r}")
            out[key] = repr(x)
        elif key == "min_speedup":
            x = _to_float(key, value)
            if x <= 0.0:
                raise ValueError(f"npas delegate option 'min_speedup' must be > 0, got {value!r}")
            out[key] = repr(x)
        elif key == "schemes":
            items = value.split(",") if isinstance(value, str) else list(value)
            items = [str(s).strip() for s in items if str(s).strip()]
            bad = [s for s in items if s not in SCHEME_NAMES]
            if bad or not items:
                raise ValueError(f"npas delegate option 'schemes': unknown or empty {bad or value!r}; "
                                 "known: " + ", ".join(SCHEME_NAMES))
            out[key] = ",".join(items)
        elif key == "kernel":
            if value not in KERNEL_NAMES:
                raise ValueError(f"npas delegate option 'kernel' must be one of {KERNEL_NAMES}, "
                                 f"got {value!r}")
            out[key] = value
        elif key == "verbose":
            n = _to_bool_int(key, value)
            if n not in (0, 1, 2):
                raise ValueError(f"npas delegate option 'verbose' must be 0, 1 or 2, got {value!r}")
            out[key] = str(n)
        elif key == "tuning_cache":
            out[key] = os.fspath(value)
        elif key == "fuse":
            n = _to_bool_int(key, value)
            if n not in (0, 1):
                raise ValueError(f"npas delegate option 'fuse' must be 0 or 1, got {value!r}")
            out[key] = str(n)
    return out


def _last_error(path: str) -> str:
    try:
        lib = ctypes.CDLL(path)
        fn = lib.npas_delegate_last_error
        fn.restype = ctypes.c_char_p
        fn.argtypes = []
        msg = fn()
        return msg.decode("utf-8", "replace") if msg else ""
    except (OSError, AttributeError):
        return ""


def load_delegate(options=None):
    """Loads the npas delegate (an ``ai_edge_litert.interpreter.Delegate``).

    ``options`` is a dict of :data:`DELEGATE_OPTIONS`; values are validated here and again by
    the delegate. Raises ``ValueError`` with the delegate's own message when it refuses them,
    ``FileNotFoundError`` when the library is not built.
    """
    from ai_edge_litert import interpreter as litert

    strings = _normalise_options(options)
    path = delegate_path()
    try:
        delegate = litert.load_delegate(path, strings)
    except ValueError as exc:
        message = _last_error(path) or str(exc)
        raise ValueError(f"the npas delegate refused its options: {message}") from None
    delegate._npas_delegate = True  # lets delegate_stats() find it among an interpreter's delegates
    return delegate


def npas_custom_ops(model_content: bytes) -> list:
    """Names of the NPAS custom ops (custom code starting with "Npas") used by a .tflite model."""
    from npas_keras.export.flatbuffer import npas_custom_op_names
    return npas_custom_op_names(model_content)


def Interpreter(model_path=None, model_content=None, num_threads=1, delegate=True,
                delegate_options=None):
    """An ``ai_edge_litert`` Interpreter running ``model_path``/``model_content``.

    ``delegate=True`` applies the npas delegate (``delegate_options`` as in :func:`load_delegate`;
    its thread count defaults to ``num_threads``); what it leaves goes to LiteRT's default
    XNNPACK delegate. ``delegate=False`` gives the stock interpreter with the same thread count,
    which cannot run NPAS custom ops: such a model raises ``ValueError`` saying so.
    """
    from ai_edge_litert import interpreter as litert

    if (model_path is None) == (model_content is None):
        raise ValueError("pass exactly one of model_path and model_content")
    if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
        raise ValueError(f"num_threads must be an int >= 1, got {num_threads!r}")
    if model_path is not None:
        model_path = os.fspath(model_path)
    if not delegate:
        content = model_content
        if content is None:
            with open(model_path, "rb") as f:
                content = f.read()
        custom = npas_custom_ops(content)
        if custom:
            raise ValueError(
                f"this model contains NPAS custom ops ({', '.join(custom)}) that only the npas "
                "delegate can run: use npas_keras.runtime.Interpreter(..., delegate=True), or pass "
                "npas_keras.runtime.load_delegate() to experimental_delegates of a LiteRT "
                f"Interpreter (C/C++ apps: load {LIB_NAME} as an external delegate)")
        return litert.Interpreter(model_path=model_path, model_content=model_content,
                                  num_threads=num_threads)
    options = dict(delegate_options or {})
    options.setdefault("num_threads", num_threads)
    d = load_delegate(options)
    return litert.Interpreter(model_path=model_path, model_content=model_content,
                              num_threads=num_threads, experimental_delegates=[d])


def _find_delegate(obj):
    if hasattr(obj, "_get_native_delegate_pointer"):
        return obj
    for d in getattr(obj, "_delegates", None) or []:
        if getattr(d, "_npas_delegate", False):
            return d
    raise ValueError("no npas delegate found: pass an interpreter made by "
                     "npas_keras.runtime.Interpreter(delegate=True) or a delegate from "
                     "npas_keras.runtime.load_delegate()")


def delegate_stats(interpreter_or_delegate) -> dict:
    """What the delegate claimed and declined, as a dict.

    Keys: ``claimed``, ``declined`` (node counts), ``packed_bytes``, ``isa``,
    ``claimed_by_op``, ``claimed_by_structure``, ``claimed_by_kernel``, ``declined_by_reason``
    and ``nodes`` (one record per candidate node: op, claimed, structure, kernel, density,
    measured ``dense_ms``/``best_ms``, reason/message when declined). Counts cover every
    graph the delegate was applied to (its latest delegation of each).
    """
    d = _find_delegate(interpreter_or_delegate)
    lib = getattr(d, "_library", None)
    if lib is None:
        raise ValueError("the npas delegate has already been destroyed")
    fn = lib.npas_delegate_stats
    fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    fn.restype = ctypes.c_int
    ptr = d._get_native_delegate_pointer()
    size = 1 << 14
    while True:
        buf = ctypes.create_string_buffer(size)
        n = fn(ptr, buf, size)
        if n < 0:
            raise ValueError("not a live npas delegate")
        if n < size:
            return json.loads(buf.value.decode("utf-8"))
        size = n + 1
