"""Checks on quantized .tflite files."""
from __future__ import annotations

from typing import List

import numpy as np

__all__ = ["int8_weight_zeros"]

_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def int8_weight_zeros(model_content: bytes, return_values: bool = False) -> List[dict]:
    """Per int8 weight tensor of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: op, tensor name,
    size, zeros (count of int8 values equal to 0), zero_points (set) and per-channel (bool).

    With symmetric weights (zero point 0, what the converter emits for int8) a float 0 maps to
    int8 0, so a pruned model's zeros survive quantization; weights that are merely small may
    also round to 0 (compare `zeros` with the float model's count). `return_values=True` adds
    "values" (the int8 array in TFLite layout: [out, kh, kw, in], [1, kh, kw, out], [out, in])."""
    from ai_edge_litert import interpreter as litert
    it = litert.Interpreter(
        model_content=model_content,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    details = {d["index"]: d for d in it.get_tensor_details()}
    rows = []
    for op in it._get_ops_details():
        if op["op_name"] not in _OPS or len(op["inputs"]) < 2:
            continue
        idx = int(op["inputs"][1])
        d = details.get(idx)
        if d is None or np.dtype(d["dtype"]) != np.int8:
            continue
        w = it.get_tensor(idx)
        qp = d.get("quantization_parameters", {})
        zps = {int(z) for z in np.asarray(qp.get("zero_points", []))}
        rows.append({"op": op["op_name"], "tensor": d["name"], "size": int(w.size),
                     "zeros": int(np.sum(w == 0)), "zero_points": zps,
                     "per_channel": len(np.asarray(qp.get("scales", []))) > 1})
        if return_values:
            rows[-1]["values"] = w.copy()
    return rows
