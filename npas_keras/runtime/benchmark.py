"""Interleaved A/B timing of stock LiteRT (with its default XNNPACK delegate) against the same
model through the npas delegate, at the same thread count (DESIGN.md, "Benchmarks and figures").

    from npas_keras.runtime.benchmark import compare
    r = compare(open("pruned.tflite", "rb").read(), inputs=None, threads=1)
    r["speedup"], r["max_abs_err"]
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from . import Interpreter, delegate_stats, npas_custom_ops

__all__ = ["compare", "make_inputs"]


def make_inputs(interp, seed=0):
    """Random normal float inputs (uniform ints for integer inputs) for every model input."""
    rng = np.random.default_rng(seed)
    out = []
    for d in interp.get_input_details():
        shape, dtype = tuple(d["shape"]), np.dtype(d["dtype"])
        if np.issubdtype(dtype, np.floating):
            out.append(rng.normal(size=shape).astype(dtype))
        else:
            info = np.iinfo(dtype)
            out.append(rng.integers(max(info.min, -100), min(info.max, 100), size=shape,
                                    dtype=dtype))
    return out


def _feed(interp, inputs):
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(d["index"], np.asarray(x, dtype=d["dtype"]).reshape(d["shape"]))


def _outputs(interp):
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def compare(model_content, inputs=None, threads=1, runs=50, warmup=5, delegate_options=None,
            baseline_model_content=None):
    """Times stock LiteRT (baseline) and the npas delegate on one model, interleaved.

    Args:
      model_content: .tflite bytes run through the npas delegate.
      inputs: list of arrays in input-detail order (or one array); None: random normal data.
      threads: thread count of both interpreters.
      runs, warmup: timed and untimed invocations per interpreter; invocations alternate
        A B B A A B ... so drift and noise hit both alike. Medians are reported.
      delegate_options: npas delegate options (see npas_keras.runtime.DELEGATE_OPTIONS).
      baseline_model_content: the stock-op model to time as baseline; required when
        ``model_content`` uses NPAS custom ops (the stock interpreter cannot run them).

    Returns:
      dict(baseline_ms, npas_ms, speedup = baseline_ms / npas_ms, max_abs_err between the two
      outputs, threads, runs, claimed = nodes the delegate claimed).
    """
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    if baseline_model_content is None:
        if npas_custom_ops(model_content):
            raise ValueError("model_content uses NPAS custom ops: pass baseline_model_content "
                             "(the same model with standard ops) to time the stock interpreter")
        baseline_model_content = model_content
    base = Interpreter(model_content=baseline_model_content, num_threads=threads, delegate=False)
    npas = Interpreter(model_content=model_content, num_threads=threads, delegate=True,
                       delegate_options=delegate_options)
    if inputs is None:
        base.allocate_tensors()
        inputs = make_inputs(base)
    elif isinstance(inputs, np.ndarray):
        inputs = [inputs]
    _feed(base, inputs)
    _feed(npas, inputs)
    base.invoke()
    npas.invoke()
    errs = [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
            for a, b in zip(_outputs(base), _outputs(npas))]
    for _ in range(warmup):
        base.invoke()
        npas.invoke()
    times = {"base": [], "npas": []}
    pair = [("base", base), ("npas", npas)]
    for i in range(runs):
        for name, interp in (pair if i % 2 == 0 else pair[::-1]):
            t0 = time.perf_counter()
            interp.invoke()
            times[name].append((time.perf_counter() - t0) * 1e3)
    baseline_ms = statistics.median(times["base"])
    npas_ms = statistics.median(times["npas"])
    return {
        "baseline_ms": baseline_ms,
        "npas_ms": npas_ms,
        "speedup": baseline_ms / npas_ms if npas_ms > 0 else float("inf"),
        "max_abs_err": max(errs) if errs else 0.0,
        "threads": threads,
        "runs": runs,
        "claimed": delegate_stats(npas)["claimed"],
    }
