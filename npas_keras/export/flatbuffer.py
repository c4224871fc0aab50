"""Reading, checking, rewriting and writing .tflite flatbuffers (no TensorFlow import here).

Uses the `flatbuffers` package and LiteRT's generated schema (`ai_edge_litert.schema_py_generated`,
object API: ModelT, OperatorT, ...). The NPAS rewrite turns pruned FULLY_CONNECTED / CONV_2D /
DEPTHWISE_CONV_2D ops into NPAS custom ops with compact weights (format: FORMAT.md, format.py).
"""
from __future__ import annotations

import json
import os

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from npas_keras.export import format as fmt

METADATA_NAME = "npas_schemes"
FILE_IDENTIFIER = b"TFL3"

_BO = schema.BuiltinOperator
_TT = schema.TensorType
KIND_BY_BUILTIN = {_BO.FULLY_CONNECTED: fmt.KIND_FC, _BO.CONV_2D: fmt.KIND_CONV,
                   _BO.DEPTHWISE_CONV_2D: fmt.KIND_DW}
_NP_TYPES = {_TT.FLOAT32: "<f4", _TT.FLOAT16: "<f2", _TT.INT32: "<i4", _TT.UINT8: "u1",
             _TT.INT8: "i1", _TT.INT16: "<i2", _TT.INT64: "<i8"}


# --------------------------------------------------------------------------------------------
# loading / saving

def read_bytes(path_or_bytes) -> bytes:
    """Bytes of a model given as bytes-like or a path."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    if isinstance(path_or_bytes, (str, os.PathLike)):
        with open(path_or_bytes, "rb") as f:
            return f.read()
    raise TypeError(f"expected a path or bytes, got {type(path_or_bytes).__name__}")


def _check_identifier(data: bytes):
    if len(data) < 8:
        raise ValueError(f"not a TFLite model: only {len(data)} bytes (truncated or empty file)")
    if data[4:8] != FILE_IDENTIFIER:
        raise ValueError(f"not a TFLite model: file identifier {data[4:8]!r} is not "
                         f"{FILE_IDENTIFIER!r} (corrupt file, or not a .tflite flatbuffer)")
    root = int.from_bytes(data[:4], "little")
    if root < 8 or root + 4 > len(data):
        raise ValueError(f"corrupt TFLite model: root table offset {root} outside the "
                         f"{len(data)}-byte file (truncated?)")


def load_model(path_or_bytes) -> tuple[schema.ModelT, bytes]:
    """Parses a .tflite model into the object API; raises ValueError on corrupt/truncated input."""
    data = read_bytes(path_or_bytes)
    _check_identifier(data)
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # the generated code raises struct.error/IndexError/... on garbage
        raise ValueError(f"corrupt or truncated TFLite model ({type(exc).__name__}: {exc})") \
            from None
    _check_structure(model, data)
    return model, data


def _check_structure(model, data):
    buffers = model.buffers or []
    codes = model.operatorCodes or []
    if not model.subgraphs:
        raise ValueError("corrupt TFLite model: no subgraphs")
    for b, buf in enumerate(buffers):
        if buf is not None and buf.offset > 1 and buf.offset + buf.size > len(data):
            raise ValueError(f"corrupt TFLite model: buffer {b} lies outside the file")
    for s, sg in enumerate(model.subgraphs):
        tensors = sg.tensors or []
        for t, tensor in enumerate(tensors):
            if tensor.buffer < 0 or tensor.buffer >= max(len(buffers), 1):
                raise ValueError(f"corrupt TFLite model: tensor {t} of subgraph {s} refers to "
                                 f"buffer {tensor.buffer} of {len(buffers)}")
        for i, op in enumerate(sg.operators or []):
            if op.opcodeIndex < 0 or op.opcodeIndex >= len(codes):
                raise ValueError(f"corrupt TFLite model: operator {i} of subgraph {s} has "
                                 f"opcode index {op.opcodeIndex} of {len(codes)}")
            for t in list(_ints(op.inputs)) + list(_ints(op.outputs)):
                if t < -1 or t >= len(tensors):
                    raise ValueError(f"corrupt TFLite model: operator {i} of subgraph {s} uses "
                                     f"tensor {t} of {len(tensors)}")


def _ints(x):
    return [] if x is None else [int(v) for v in x]


class _AlignedBufferT(schema.BufferT):
    """BufferT whose data vector starts on a 16-byte boundary (as the TFLite converter writes)."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            payload = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), 16)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        schema.BufferAddOffset(builder, self.offset)
        schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


def save_model(model: schema.ModelT) -> bytes:
    """Serializes the object-API model (file identifier TFL3, 16-byte aligned buffers)."""
    for i, buf in enumerate(model.buffers or []):
        if not isinstance(buf, _AlignedBufferT):
            nb = _AlignedBufferT()
            nb.data, nb.offset, nb.size = buf.data, buf.offset, buf.size
            model.buffers[i] = nb
    size = sum(len(b.data) for b in model.buffers or [] if b.data is not None)
    builder = flatbuffers.Builder(size + 65536)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


# --------------------------------------------------------------------------------------------
# small accessors

def op_code(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))


def custom_code(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    if op_code(model, op) != _BO.CUSTOM or code.customCode is None:
        return None
    cc = code.customCode
    return cc.decode("utf-8", "replace") if isinstance(cc, (bytes, bytearray)) else str(cc)


def builtin_name(code: int) -> str:
    for name, value in vars(_BO).items():
        if value == code and not name.startswith("_"):
            return name
    return f"BUILTIN_{code}"


def tensor_name(tensor) -> str:
    n = tensor.name
    return n.decode("utf-8", "replace") if isinstance(n, (bytes, bytearray)) else (n or "")


def buffer_data(model, raw: bytes, index: int):
    """The bytes of buffer `index` (inline data, or the external offset/size form), or None."""
    if index <= 0 or index >= len(model.buffers or []):
        return None
    buf = model.buffers[index]
    if buf.data is not None and len(buf.data):
        return np.asarray(buf.data, dtype=np.uint8)
    if buf.offset > 1 and buf.size > 0:
        return np.frombuffer(raw, dtype=np.uint8, count=buf.size, offset=buf.offset)
    return None


def custom_options_bytes(op, raw: bytes):
    if op.customOptions is not None and len(op.customOptions):
        return bytes(np.asarray(op.customOptions, dtype=np.uint8))
    if op.largeCustomOptionsSize:
        start, size = int(op.largeCustomOptionsOffset), int(op.largeCustomOptionsSize)
        if start + size > len(raw):
            raise ValueError("custom options lie outside the file (truncated?)")
        return raw[start:start + size]
    return b""


def constant_array(model, raw, tensor):
    """A constant tensor's value as a NumPy array, or None when it is not constant."""
    data = buffer_data(model, raw, tensor.buffer)
    if data is None:
        return None
    dtype = _NP_TYPES.get(tensor.type)
    shape = tuple(_ints(tensor.shape))
    if dtype is None:
        return None
    count = int(np.prod(shape)) if shape else 1
    if count * np.dtype(dtype).itemsize != len(data):
        raise ValueError(f"tensor {tensor_name(tensor)!r}: buffer has {len(data)} bytes, shape "
                         f"{list(shape)} needs {count * np.dtype(dtype).itemsize}")
    return np.frombuffer(data.tobytes(), dtype=dtype).reshape(shape)


def npas_custom_op_names(model_bytes) -> list:
    """Sorted names of the NPAS custom ops a model (bytes or a path) uses; ValueError if the file
    is not a readable TFLite model. Cheap: reads the operator-code table only."""
    data = read_bytes(model_bytes)
    _check_identifier(data)
    try:
        m = schema.Model.GetRootAs(data, 0)
        names = set()
        for i in range(m.OperatorCodesLength()):
            cc = m.OperatorCodes(i).CustomCode()
            if cc is not None and fmt.is_npas_custom_name(cc):
                names.add(cc.decode("utf-8", "replace") if isinstance(cc, bytes) else str(cc))
        return sorted(names)
    except Exception as exc:  # garbage in the flatbuffer
        raise ValueError(f"corrupt TFLite model ({type(exc).__name__}: {exc})") from None


def has_npas_custom_ops(model_bytes, strict: bool = False) -> bool:
    """True when the model contains NPAS custom ops, which only run through the npas delegate.
    Unparseable input gives False, or ValueError with `strict=True`."""
    try:
        return bool(npas_custom_op_names(model_bytes))
    except (ValueError, TypeError, OSError):
        if strict:
            raise
        return False


# --------------------------------------------------------------------------------------------
# metadata

def get_metadata(model, name: str = METADATA_NAME):
    for md in model.metadata or []:
        mname = md.name.decode() if isinstance(md.name, bytes) else md.name
        if mname == name and 0 < md.buffer < len(model.buffers or []):
            data = model.buffers[md.buffer].data
            return None if data is None else bytes(np.asarray(data, dtype=np.uint8))
    return None


def set_metadata(model, data: bytes, name: str = METADATA_NAME):
    buf = _AlignedBufferT()
    buf.data = np.frombuffer(data, dtype=np.uint8)
    for md in model.metadata or []:
        mname = md.name.decode() if isinstance(md.name, bytes) else md.name
        if mname == name and 0 < md.buffer < len(model.buffers):
            model.buffers[md.buffer] = buf
            return
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    if model.metadata is None:
        model.metadata = []
    model.metadata.append(entry)


def read_schemes_metadata(model):
    data = get_metadata(model)
    if data is None:
        return None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"the {METADATA_NAME!r} metadata is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("layers", []), list):
        raise ValueError(f"the {METADATA_NAME!r} metadata has an unexpected structure")
    return doc


# --------------------------------------------------------------------------------------------
# the weight ops of a model

def _options_attrs(model, op, kind):
    o = op.builtinOptions
    attrs = dict(padding=0, activation=0, stride_h=1, stride_w=1, dilation_h=1, dilation_w=1,
                 depth_multiplier=1)
    if o is None:
        return attrs
    attrs["activation"] = int(getattr(o, "fusedActivationFunction", 0))
    if kind != fmt.KIND_FC:
        attrs.update(padding=int(o.padding) + 1, stride_h=int(o.strideH), stride_w=int(o.strideW),
                     dilation_h=int(o.dilationHFactor), dilation_w=int(o.dilationWFactor))
    return attrs


def weight_ops(model, raw):
    """Yields one dict per FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D / NPAS custom op."""
    for s, sg in enumerate(model.subgraphs):
        for i, op in enumerate(sg.operators or []):
            code = op_code(model, op)
            inputs = _ints(op.inputs)
            cname = custom_code(model, op)
            if code in KIND_BY_BUILTIN and len(inputs) >= 2 and inputs[1] >= 0:
                kind = KIND_BY_BUILTIN[code]
                yield dict(subgraph=s, op_index=i, op=op, kind=kind, custom=None,
                           builtin=builtin_name(code), inputs=inputs,
                           weight_tensor=inputs[1], tensor=sg.tensors[inputs[1]])
            elif cname is not None and fmt.is_npas_custom_name(cname):
                yield dict(subgraph=s, op_index=i, op=op, kind=fmt.KIND_BY_NAME[cname],
                           custom=cname, builtin=fmt.BUILTIN_NAMES[fmt.KIND_BY_NAME[cname]],
                           inputs=inputs, weight_tensor=inputs[1] if len(inputs) > 1 else -1,
                           tensor=None)


_VALUES_TENSOR_TYPE = {fmt.VALUES_FLOAT32: _TT.FLOAT32, fmt.VALUES_INT8: _TT.INT8,
                       fmt.VALUES_INT4: _TT.UINT8}


def decode_custom_op(model, raw, sg, entry):
    """(options, GEMM-view matrix) of an NPAS custom op; ValueError naming the op on problems.
    Quantized ops (version 2) give the integer matrix (int8) and their weight scales in
    options.extra["scales"]."""
    op, inputs = entry["op"], entry["inputs"]
    where = f"op {entry['op_index']} ({entry['custom']}) of subgraph {entry['subgraph']}"
    try:
        opts = fmt.unpack_options(custom_options_bytes(op, raw), entry["custom"])
        want = 5 if opts.quantized else 4
        if len(inputs) != want:
            raise ValueError(f"expected {want} inputs (activation, values, index, bias"
                             f"{', scales' if opts.quantized else ''}), got {len(inputs)}")
        if inputs[1] < 0 or inputs[2] < 0 or (opts.quantized and inputs[4] < 0):
            raise ValueError("values, index or scales input missing")
        vt, it = sg.tensors[inputs[1]], sg.tensors[inputs[2]]
        if vt.type != _VALUES_TENSOR_TYPE[opts.value_type] or it.type not in (_TT.UINT8,
                                                                              _TT.INT8):
            raise ValueError(f"values must be {fmt.VALUE_TYPE_NAMES[opts.value_type]} "
                             f"({'packed in uint8' if opts.value_type == fmt.VALUES_INT4 else 'as options say'})"
                             " and index data uint8")
        values = constant_array(model, raw, vt)
        index = constant_array(model, raw, it)
        if values is None or index is None:
            raise ValueError("values or index data are not constant tensors")
        matrix = fmt.decode_matrix(opts, values.ravel(), index.ravel().view(np.uint8))
        if opts.quantized:
            st = sg.tensors[inputs[4]]
            scales = constant_array(model, raw, st) if st.type == _TT.FLOAT32 else None
            if scales is None:
                raise ValueError("scales are not a constant float32 tensor")
            opts.extra["scales"] = fmt.check_scales(opts, scales.ravel())
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return opts, matrix


# --------------------------------------------------------------------------------------------
# analysis and NPAS rewrite

def _describe(matrix, kernel_hw):
    """Scheme description of a GEMM-view weight from its zeros (npas_keras.schemes when there)."""
    mask = matrix != 0
    try:
        from npas_keras.schemes import describe_mask
        desc = dict(describe_mask(mask, kernel_hw))
    except (ImportError, AttributeError):
        desc = {}
    except Exception as exc:  # a scheme module bug must not break export
        desc = {"describe_error": f"{type(exc).__name__}: {exc}"}
    density = float(mask.mean()) if mask.size else 1.0
    desc.setdefault("density", density)
    if "scheme" not in desc:
        desc["scheme"] = "dense" if density >= 1.0 else "unstructured"
    desc.setdefault("block_shape", None)
    return desc


def _scheme_name(scheme):
    if isinstance(scheme, str):
        try:
            scheme = json.loads(scheme)
        except ValueError:
            return scheme
    if isinstance(scheme, dict):
        return scheme.get("name") or scheme.get("scheme")
    return None if scheme is None else str(scheme)


def _jsonable(x):
    if isinstance(x, str):
        try:
            return json.loads(x)
        except ValueError:
            return x
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _buffer_uses(model):
    uses = {}
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            uses[t.buffer] = uses.get(t.buffer, 0) + 1
    return uses


def _tensor_consumers(model):
    """{(subgraph, tensor index): number of ops that read it}. An unrolled RNN feeds one weight
    tensor to every time step: rewriting it for one op would break the others."""
    consumers = {}
    for s, sg in enumerate(model.subgraphs):
        for op in sg.operators or []:
            for i in set(_ints(op.inputs)):
                if i >= 0:
                    consumers[(s, i)] = consumers.get((s, i), 0) + 1
    return consumers


def _custom_opcode_index(model, name):
    for i, code in enumerate(model.operatorCodes):
        cc = code.customCode
        if isinstance(cc, bytes):
            cc = cc.decode("utf-8", "replace")
        if max(code.builtinCode, code.deprecatedBuiltinCode) == _BO.CUSTOM and cc == name:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = _BO.CUSTOM
    code.deprecatedBuiltinCode = _BO.CUSTOM
    code.customCode = name
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def quantization_of(tensor):
    """(scales float32, zero points int64, quantized dimension) of a tensor, or None."""
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    zp = np.zeros(len(q.scale), np.int64) if q.zeroPoint is None else \
        np.asarray(q.zeroPoint, np.int64).ravel()
    return np.asarray(q.scale, np.float32).ravel(), zp, int(q.quantizedDimension)


def weight_scales(entry, rows):
    """Per-output-channel scales [rows] of a symmetric int8 weight tensor, or the reason why it
    has none (asymmetric, per-tensor of another axis, non-positive)."""
    q = quantization_of(entry["tensor"])
    if q is None:
        return "int8 weights without quantization parameters"
    scales, zps, qdim = q
    if len(zps) != len(scales) or np.any(zps != 0):
        return "int8 weights with a nonzero zero point"
    if len(scales) != 1 and (len(scales) != rows or
                             qdim != (3 if entry["kind"] == fmt.KIND_DW else 0)):
        return "int8 weight scales are neither per-tensor nor per output channel"
    if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
        return "int8 weight scales not positive"
    return np.broadcast_to(scales, (rows,)).astype(np.float32)


def _eligible(model, raw, sg, entry, weights):
    """None when the op can become an NPAS custom op, else the reason why not. float32 ops, and
    int8 ops as the converter writes them (int8 activations with one scale/zero point each,
    symmetric int8 weights per channel or per tensor, int32 bias)."""
    op, kind, t = entry["op"], entry["kind"], entry["tensor"]
    if t.type not in (_TT.FLOAT32, _TT.INT8) or weights is None:
        return "weights are not constant float32 or int8"
    int8 = t.type == _TT.INT8
    if t.sparsity is not None:
        return "weights already use TFLite sparsity"
    for idx in (entry["inputs"][0], op.outputs[0] if len(op.outputs) else -1):
        if idx < 0 or sg.tensors[idx].type != (_TT.INT8 if int8 else _TT.FLOAT32):
            return "activation is not int8" if int8 else "activation is not float32"
        if int8:
            q = quantization_of(sg.tensors[idx])
            if q is None or len(q[0]) != 1 or not (q[0][0] > 0) or not -128 <= q[1][0] <= 127:
                return "int8 activation without one positive scale and an int8 zero point"
    if int8:
        rows = weights.shape[-1] if kind == fmt.KIND_DW else weights.shape[0]
        ws = weight_scales(entry, rows)
        if isinstance(ws, str):
            return ws
    o = op.builtinOptions
    if o is None:
        return "missing builtin options"
    if int(getattr(o, "fusedActivationFunction", 0)) not in (0, 1, 2, 3):
        return "fused activation not supported by the custom op"
    if kind == fmt.KIND_FC:
        if getattr(o, "weightsFormat", 0) != 0:
            return "shuffled weights"
        # the custom op has no keep_num_dims attribute: the delegate keeps the batch dims
        # exactly when the input has rank > 2, so rewrite only where that matches the builtin
        act_rank = len(_ints(sg.tensors[entry["inputs"][0]].shape))
        if bool(getattr(o, "keepNumDims", False)) != (act_rank > 2):
            return "keep_num_dims does not follow the input rank"
        if weights.ndim != 2:
            return "weights are not 2-D"
    elif weights.ndim != 4:
        return "weights are not 4-D"
    elif kind == fmt.KIND_CONV:
        act_shape = _ints(sg.tensors[entry["inputs"][0]].shape)
        if not act_shape or act_shape[-1] != weights.shape[3]:
            return "grouped convolution (filter channels != input channels)"
    if len(entry["inputs"]) > 2 and entry["inputs"][2] >= 0:
        bias = sg.tensors[entry["inputs"][2]]
        if bias.type != (_TT.INT32 if int8 else _TT.FLOAT32):
            return "bias is not int32" if int8 else "bias is not float32"
    return None


def _new_buffer(model, array) -> int:
    buf = _AlignedBufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8)
    model.buffers.append(buf)
    return len(model.buffers) - 1


def _set_buffer(model, uses, tensor, array, pool=None):
    """Gives `tensor` the bytes of `array`: in a buffer this rewrite already filled with the same
    bytes (`pool`: {bytes: buffer index}; the converter shares identical constants, e.g. the
    per-step biases of an unrolled RNN, and a rewrite that unshares them would store each copy
    again), else in place when no other tensor shares its buffer, else in a new buffer. A buffer
    left with no tensor is emptied."""
    old, key = tensor.buffer, np.ascontiguousarray(array).tobytes()
    if pool is not None and key in pool and pool[key] != old:
        tensor.buffer = pool[key]
        uses[tensor.buffer] += 1
    elif old > 0 and uses.get(old, 0) == 1:
        buf = _AlignedBufferT()
        buf.data = np.frombuffer(key, dtype=np.uint8)
        model.buffers[old] = buf
        if pool is not None:
            pool[key] = old
        return
    else:
        tensor.buffer = _new_buffer(model, array)
        uses[tensor.buffer] = 1
        if pool is not None:
            pool[key] = tensor.buffer
    if old > 0:   # the last tensor gone from a shared buffer: drop its bytes
        uses[old] -= 1
        if uses[old] == 0:
            model.buffers[old] = _AlignedBufferT()


def _per_channel(scales, qdim):
    q = schema.QuantizationParametersT()
    q.scale = np.asarray(scales, np.float32)
    q.zeroPoint = np.zeros(len(scales), np.int64)
    q.quantizedDimension = qdim
    return q


def grid_mismatch(entry, weights, k, scales):
    """None when the int8 weights of a weight op are the int8 quantization of the grid
    k * scales (GEMM view [rows, cols]; within 1 step, same zeros), else the reason. Also true of
    an op already rewritten to that grid (its scales are then `scales`)."""
    if entry["tensor"].type != _TT.INT8 or weights is None:
        return "weights on a 4- or 8-bit grid need the int8 export (quantize='int8')"
    q8 = fmt.gemm_view(entry["kind"], weights.astype(np.float32))
    s8 = weight_scales(entry, q8.shape[0])
    if isinstance(s8, str):
        return s8
    k = np.asarray(k, np.int8)
    if k.shape != q8.shape:
        return f"Keras kernel GEMM view {k.shape} != TFLite weights {q8.shape}"
    s4 = np.asarray(scales, np.float32).copy()
    empty = s4 <= 0
    s4[empty] = s8[empty]
    expect = np.round(k.astype(np.float64) * s4[:, None] / s8[:, None])
    if np.any(np.abs(expect - q8) > 1) or np.any((k == 0) != (q8 == 0)):
        return ("the converter's int8 weights are not the quantization of the layer's gridded "
                "kernel (a folded batch norm or another rewrite?); refusing to store its grid")
    return None


def requantize_to_grid(model, raw, uses, consumers, entry, weights, grid, readers=None,
                       pool=None):
    """Re-expresses an int8 weight op on its layer's grid: int8 weights k (4 bits: in [-8, 7])
    with per-channel scales s, where `grid` = {"k": [rows, cols] int8 GEMM view, "scales":
    [rows], "bias": float bias or None, "bits", "layer"} comes from the Keras kernel
    (format.weight_grid), so the real weights are the model's own k * s. Checks that the
    converter's int8 weights are the quantization of those same weights (else ValueError: the
    op is not that layer, or the converter changed it); the int32 bias is requantized to the
    new scale input_scale * s (from the float bias when given, else from the int32 bias and its
    own scale). A weight tensor read by several ops (an
    unrolled RNN) is rewritten once; `readers` = {(subgraph, tensor): number of gridded ops that
    read it} must then count every op that reads it (else one would read k with its old scale).
    A bias shared by several ops is refused. Returns the new builtin-layout int8 weights."""
    sg = model.subgraphs[entry["subgraph"]]
    kind, t, layer = entry["kind"], entry["tensor"], grid.get("layer")
    where = f"layer {layer!r} (op {entry['op_index']}, {entry['builtin']})"
    reason = grid_mismatch(entry, weights, grid["k"], grid["scales"])
    if reason is not None:
        raise ValueError(f"{where}: {reason}")
    q8 = fmt.gemm_view(kind, weights.astype(np.float32))
    rows = q8.shape[0]
    s8 = weight_scales(entry, rows)
    k = np.asarray(grid["k"], np.int8)
    s4 = np.asarray(grid["scales"], np.float32).copy()
    empty = s4 <= 0
    s4[empty] = s8[empty]                                   # all-zero rows keep their scale
    if uses.get(t.buffer, 0) != 1:
        raise ValueError(f"{where}: weight buffer shared with another tensor")
    bias_idx = entry["inputs"][2] if len(entry["inputs"]) > 2 else -1
    wkey = (entry["subgraph"], entry["weight_tensor"])
    if consumers.get(wkey, 0) > (readers or {}).get(wkey, 1):
        raise ValueError(f"{where}: its weights are read by ops not matched to the same grid "
                         "(an unrolled RNN only partly matched?); refusing to store them on it")
    if bias_idx >= 0 and consumers.get((entry["subgraph"], bias_idx), 0) > 1:
        raise ValueError(f"{where}: its bias is shared by several ops; storing the layer's "
                         f"{grid['bits']}-bit grid needs a bias per op")
    kh, kw = weights.shape[1:3] if weights.ndim == 4 else (1, 1)
    new = fmt.builtin_layout(kind, k, kh, kw).reshape(weights.shape).astype(np.int8)
    _set_buffer(model, uses, t, new)
    t.quantization = _per_channel(s4, 3 if kind == fmt.KIND_DW else 0)
    if bias_idx >= 0:
        bt = sg.tensors[bias_idx]
        b32 = constant_array(model, raw, bt)
        in_q = quantization_of(sg.tensors[entry["inputs"][0]])
        if bt.type != _TT.INT32 or b32 is None or b32.size != rows or in_q is None:
            raise ValueError(f"{where}: bias is not a constant int32 [{rows}] tensor")
        in_scale = np.float64(in_q[0][0])
        fb = grid.get("bias")
        bq_old = quantization_of(bt)
        if fb is not None and np.size(fb) == rows:
            real = np.asarray(fb, np.float64).ravel()
        elif bq_old is not None and len(bq_old[0]) in (1, rows):
            real = b32.astype(np.float64).ravel() * bq_old[0].astype(np.float64)
        else:
            real = b32.astype(np.float64).ravel() * in_scale * s8
        bq = np.round(real / (in_scale * s4.astype(np.float64)))
        _set_buffer(model, uses, bt, np.clip(bq, -2 ** 31, 2 ** 31 - 1).astype("<i4"), pool)
        bt.quantization = _per_channel((in_scale * s4.astype(np.float64)).astype(np.float32), 0)
    return new


def analyze_and_rewrite(data, op_info=None, npas=False, export_format=None):
    """Adds the `npas_schemes` metadata and (npas=True) rewrites pruned weight ops into NPAS
    custom ops: float32 ops into float32 custom ops, int8 ops into quantized ones (int8 values,
    or 4-bit when the op's `op_info` entry has a 4-bit "grid"). An op with a "grid" (4 or 8
    bits) first gets its layer's own k and scales (requantize_to_grid, in both formats).
    `op_info` maps (subgraph, op_index) -> {"layer", "weight", "scheme"[, "grid"]} from the
    Keras side. Returns (model bytes, metadata dict)."""
    model, raw = load_model(data)
    op_info = op_info or {}
    uses = _buffer_uses(model)
    consumers = _tensor_consumers(model)
    readers, pool = {}, {}
    for entry in weight_ops(model, raw):
        if (op_info.get((entry["subgraph"], entry["op_index"])) or {}).get("grid") is not None:
            key = (entry["subgraph"], entry["weight_tensor"])
            readers[key] = readers.get(key, 0) + 1
    rows = []
    for entry in list(weight_ops(model, raw)):
        if entry["custom"] is not None:
            raise ValueError("the model already contains NPAS custom ops")
        sg = model.subgraphs[entry["subgraph"]]
        op, kind, t = entry["op"], entry["kind"], entry["tensor"]
        weights = constant_array(model, raw, t)
        info = op_info.get((entry["subgraph"], entry["op_index"]), {})
        grid = info.get("grid")
        int4 = grid is not None and grid["bits"] == 4
        if grid is not None:
            weights = requantize_to_grid(model, raw, uses, consumers, entry, weights,
                                         dict(grid, layer=info.get("layer")), readers, pool)
        row = dict(subgraph=entry["subgraph"], op_index=entry["op_index"], op=entry["builtin"],
                   custom_op=None, layer=info.get("layer"), weight=info.get("weight"),
                   tensor=tensor_name(t), shape=_ints(t.shape), scheme=None, scheme_config=None,
                   block_shape=None, density=None, encoding=None, stored_bytes=None,
                   dense_bytes=None, note=None, bits=4 if int4 else None)
        rows.append(row)
        if weights is None:
            row["note"] = "weights are not constant"
            continue
        shape = weights.shape
        kh, kw = (shape[1], shape[2]) if kind != fmt.KIND_FC and weights.ndim == 4 else (1, 1)
        matrix = fmt.gemm_view(kind, weights.astype(np.float32))
        desc = _describe(matrix, (kh, kw))
        scheme_cfg = _jsonable(info.get("scheme")) if info.get("scheme") is not None else None
        row["scheme"] = _scheme_name(scheme_cfg) or desc.get("scheme")
        row["scheme_config"] = scheme_cfg if scheme_cfg is not None else _jsonable(desc)
        bs = None
        if isinstance(scheme_cfg, dict):
            bs = scheme_cfg.get("block_shape") or (scheme_cfg.get("options") or {}).get(
                "block_shape")
        row["block_shape"] = _jsonable(bs if bs is not None else desc.get("block_shape"))
        row["density"] = float((matrix != 0).mean())
        row["dense_bytes"] = row["stored_bytes"] = int(weights.nbytes)
        if row["bits"] is None and t.type in (_TT.INT8, _TT.FLOAT32):
            row["bits"] = 8 if t.type == _TT.INT8 else 32
        if not npas:
            continue
        reason = _eligible(model, raw, sg, entry, weights)
        if reason is None and uses.get(t.buffer, 0) != 1:
            reason = "weight buffer shared with another tensor"
        if reason is None and consumers.get((entry["subgraph"], entry["weight_tensor"]), 0) > 1:
            reason = "weight tensor shared by several ops"
        # a dense 4-bit layer still halves its bytes in the packed form
        if reason is None and row["density"] >= 1.0 and not int4:
            reason = "dense"
        if reason is None and row["density"] == 0.0:
            reason = "all weights are zero"
        if reason is not None:
            row["note"] = reason
            continue
        quantized = t.type == _TT.INT8
        value_type = (fmt.VALUES_INT4 if int4 else fmt.VALUES_INT8) if quantized \
            else fmt.VALUES_FLOAT32
        hints = fmt.hints_from_scheme(scheme_cfg) if scheme_cfg is not None else {}
        if not hints.get("block_shapes") and isinstance(row["block_shape"], list):
            hints["block_shapes"] = [tuple(row["block_shape"])]
        enc, index, values, params = fmt.encode_matrix(
            matrix, kind, kh, kw, hints.get("block_shapes", ()), hints.get("nm", ()),
            value_bits=fmt.VALUE_BITS[value_type])
        if value_type == fmt.VALUES_FLOAT32:
            vdata = values.astype("<f4")
        elif value_type == fmt.VALUES_INT8:
            vdata = values.astype(np.int8)
        else:
            vdata = fmt.pack_int4(values.astype(np.int8))
        scales = weight_scales(entry, matrix.shape[0]) if quantized else None
        stored = vdata.nbytes + index.nbytes + (0 if scales is None else scales.nbytes)
        if stored >= weights.nbytes:
            row["note"] = "compact form not smaller than dense"
            continue
        attrs = _options_attrs(model, op, kind)
        out_ch = matrix.shape[0]
        if kind == fmt.KIND_FC:
            in_ch = matrix.shape[1]
        elif kind == fmt.KIND_CONV:
            in_ch = shape[3]
        else:
            act = sg.tensors[entry["inputs"][0]]
            act_shape = _ints(act.shape)
            in_ch = act_shape[-1] if act_shape else 0
            if in_ch <= 0 or out_ch % in_ch:
                row["note"] = "depthwise channel count unknown"
                continue
            attrs["depth_multiplier"] = out_ch // in_ch
        scheme_json = json.dumps({"layer": row["layer"], "scheme": row["scheme"],
                                  "config": row["scheme_config"]}, sort_keys=True,
                                 default=str)
        opts = fmt.CustomOptions(
            op_kind=kind, out_channels=out_ch, kh=kh, kw=kw, in_channels=int(in_ch),
            rows=matrix.shape[0], cols=matrix.shape[1], encoding=enc, params=params,
            n_values=len(values), index_bytes=len(index), crc_values=fmt.crc32(vdata.tobytes()),
            crc_index=fmt.crc32(index.tobytes()), scheme_json=scheme_json,
            value_type=value_type,
            crc_scales=0 if scales is None else fmt.crc32(scales.astype("<f4").tobytes()),
            **attrs)
        fmt.validate_options(opts)
        # values take over the dense weight tensor and its buffer; the index gets a new tensor
        # (and a quantized op a scales tensor: the weight scales leave the values tensor)
        vbuf = _AlignedBufferT()
        vbuf.data = np.frombuffer(vdata.tobytes(), dtype=np.uint8)
        model.buffers[t.buffer] = vbuf
        t.shape = np.array([len(vdata)], dtype=np.int32)
        t.shapeSignature = None
        t.type = _VALUES_TENSOR_TYPE[value_type]
        t.quantization = None
        base = tensor_name(t)
        t.name = base + "/npas_values"
        extra = [(index.astype(np.uint8), _TT.UINT8, "/npas_index")]
        if scales is not None:
            extra.append((scales.astype("<f4"), _TT.FLOAT32, "/npas_scales"))
        new_idx = []
        for arr, ttype, suffix in extra:
            nt = schema.TensorT()
            nt.shape = np.array([len(arr)], dtype=np.int32)
            nt.type = ttype
            nt.buffer = _new_buffer(model, arr)
            nt.name = base + suffix
            nt.hasRank = True
            sg.tensors.append(nt)
            new_idx.append(len(sg.tensors) - 1)
        bias = entry["inputs"][2] if len(entry["inputs"]) > 2 else -1
        op.inputs = np.array([entry["inputs"][0], entry["weight_tensor"], new_idx[0], bias]
                             + new_idx[1:], dtype=np.int32)
        op.opcodeIndex = _custom_opcode_index(model, fmt.CUSTOM_NAMES[kind])
        op.builtinOptionsType = schema.BuiltinOptions.NONE
        op.builtinOptions = None
        op.customOptions = np.frombuffer(opts.pack(), dtype=np.uint8)
        op.customOptionsFormat = 0
        row.update(custom_op=fmt.CUSTOM_NAMES[kind], encoding=fmt.ENCODING_NAMES[enc],
                   stored_bytes=int(stored))
    meta = {"format": METADATA_NAME, "version": 1,
            "export_format": export_format or ("npas" if npas else "standard"), "layers": rows}
    set_metadata(model, json.dumps(meta, sort_keys=True, default=str).encode("utf-8"))
    return save_model(model), meta
