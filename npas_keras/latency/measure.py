"""Timing TFLite models: through LiteRT + the npas delegate when it is built, else stock LiteRT.

A *measure function* maps TFLite flatbuffer bytes to milliseconds (median of `runs` invokes after
`warmup`). The latency table takes any such callable, so tests can pass a fake one.
"""
import statistics
import time
import warnings

import numpy as np


def to_tflite(model, quantize=None, representative_data=None, weight_bits=None) -> bytes:
    """Converts a tf_keras model to a TFLite flatbuffer (standard ops): float32, or full-integer
    with quantize="int8" (representative_data: sample inputs; None calibrates on 32 standard
    normal inputs, enough for timing a random-weight layer) and optional `weight_bits`.

    Converted by npas_keras.export, the way users export it.
    """
    if quantize is not None and representative_data is None:
        rng = np.random.default_rng(0)
        representative_data = rng.standard_normal(
            (32,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)
    from npas_keras.export.converter import export

    return export(model, None, format="standard", quantize=quantize,
                  representative_data=representative_data, weight_bits=weight_bits)


def _random_inputs(interp, seed=0):
    rng = np.random.default_rng(seed)
    feeds = []
    for d in interp.get_input_details():
        dtype = d["dtype"]
        if np.issubdtype(dtype, np.floating):
            value = rng.standard_normal(d["shape"]).astype(dtype)
        else:
            value = rng.integers(0, 8, size=d["shape"]).astype(dtype)
        feeds.append((d["index"], value))
    return feeds


def time_interpreter(interp, runs=50, warmup=5, seed=0) -> float:
    """Median wall time of interp.invoke() in milliseconds (inputs set once, random)."""
    interp.allocate_tensors()
    for index, value in _random_inputs(interp, seed):
        interp.set_tensor(index, value)
    for _ in range(max(0, int(warmup))):
        interp.invoke()
    times = []
    for _ in range(max(1, int(runs))):
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def delegate_available() -> bool:
    """True when npas_keras.runtime can build an interpreter with the npas delegate loaded."""
    return _npas_interpreter_factory() is not None


_FACTORY_CACHE = {}


def _npas_interpreter_factory():
    if "factory" in _FACTORY_CACHE:
        return _FACTORY_CACHE["factory"]
    factory = None
    try:
        from npas_keras import runtime

        Interpreter = getattr(runtime, "Interpreter", None)
        if Interpreter is not None:
            # Probe with a trivial model: constructing it fails when the .so is missing.
            probe = _probe_model_bytes()
            interp = Interpreter(model_content=probe, num_threads=1, delegate=True)
            interp.allocate_tensors()
            interp.invoke()
            factory = Interpreter
    except Exception as exc:  # the delegate is not built/loadable yet: fall back, say why once
        warnings.warn(f"npas delegate unavailable ({type(exc).__name__}: {exc}); latency is "
                      "measured with stock LiteRT and filed under runtime 'litert'",
                      RuntimeWarning, stacklevel=3)
    _FACTORY_CACHE["factory"] = factory
    return factory


def _probe_model_bytes():
    if "probe" not in _FACTORY_CACHE:
        from npas_keras.latency.specs import LayerSpec

        model = LayerSpec("dense", (8,), 8).build_model()
        _FACTORY_CACHE["probe"] = to_tflite(model)
    return _FACTORY_CACHE["probe"]


def make_measure_fn(threads=1, runs=50, warmup=5, use_delegate=True):
    """Returns (measure_fn, runtime_name): measure_fn(model_bytes) -> median ms.

    runtime_name is 'npas' when the npas delegate is used, 'litert' for stock LiteRT (XNNPACK).
    """
    factory = _npas_interpreter_factory() if use_delegate else None
    if factory is not None:
        def measure(model_bytes):
            interp = factory(model_content=model_bytes, num_threads=threads, delegate=True)
            return time_interpreter(interp, runs=runs, warmup=warmup)

        return measure, "npas"

    from ai_edge_litert.interpreter import Interpreter

    def measure_stock(model_bytes):
        interp = Interpreter(model_content=model_bytes, num_threads=threads)
        return time_interpreter(interp, runs=runs, warmup=warmup)

    return measure_stock, "litert"


def nonzero_weight_proxy_ms(model_bytes, ns_per_weight=1.0) -> float:
    """A FAKE, deterministic 'latency' for tests: ~1 ns per nonzero float32 word in the file.

    It is monotone in the number of nonzero weights (so pruning lowers it), costs microseconds,
    and needs no interpreter. Never use it for real decisions.
    """
    buf = bytes(model_bytes)
    words = np.frombuffer(buf[: len(buf) // 4 * 4], dtype=np.float32)
    finite = np.isfinite(words)
    nonzero = np.count_nonzero((words != 0) & finite & (np.abs(words) > 1e-20)
                               & (np.abs(words) < 1e6))
    return 1e-6 * ns_per_weight * float(nonzero) + 0.001
