"""Shared helpers of the delegate tests (no tests here): small tf_keras models converted with
TFLiteConverter at fixed shapes, structured zeros made with NumPy on the GEMM view of DESIGN.md,
running a model on the stock interpreter and through the npas delegate, and flatbuffer patching.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def require_delegate() -> str:
    """Path of the built delegate, or skip (fail instead when NPAS_REQUIRE_DELEGATE=1)."""
    from npas_keras import runtime

    try:
        return runtime.delegate_path()
    except FileNotFoundError as exc:
        if os.environ.get("NPAS_REQUIRE_DELEGATE") == "1":
            raise
        pytest.skip(str(exc))


# ---- structured zeros on the GEMM view W[out, red] --------------------------------------------
def zero_block_punched(w, rng, br=4, bc=8, keep=0.5):
    """In each block of br rows x bc columns, zero the same columns in every row."""
    w = w.copy()
    rows, cols = w.shape
    for r0 in range(0, rows, br):
        for c0 in range(0, cols, bc):
            width = min(bc, cols - c0)
            drop = rng.permutation(width)[: width - max(1, int(round(width * keep)))]
            w[r0:r0 + br, c0 + drop] = 0
    return w


def zero_bcr(w, rng, br=4, bc=4):
    """In each block, zero whole columns and whole rows."""
    w = w.copy()
    rows, cols = w.shape
    for r0 in range(0, rows, br):
        for c0 in range(0, cols, bc):
            h, width = min(br, rows - r0), min(bc, cols - c0)
            dc = rng.permutation(width)[: width // 2]
            dr = rng.permutation(h)[: h // 4]
            w[r0:r0 + h, c0 + dc] = 0
            w[r0 + dr, c0:c0 + width] = 0
    return w


def zero_n_m(w, rng, n=2, m=4):
    """Keep the n largest of every m consecutive weights along the reduction."""
    w = w.copy()
    rows, cols = w.shape
    for c0 in range(0, cols - cols % m, m):
        blk = np.abs(w[:, c0:c0 + m])
        idx = np.argsort(blk, axis=1)[:, : m - n]
        np.put_along_axis(w[:, c0:c0 + m], idx, 0, axis=1)
    return w


def zero_unstructured(w, rng, rate=0.75):
    w = w.copy()
    w[rng.random(w.shape) < rate] = 0
    return w


PATTERNS_3x3 = [  # 4 of 9 positions (centre kept), PatDNN-style
    (0, 1, 3, 4), (1, 2, 4, 5), (3, 4, 6, 7), (4, 5, 7, 8),
]


def zero_pattern_conv(kernel, rng):
    """kernel [3, 3, cin, cout]: every (cin, cout) 3x3 keeps one pattern; 25% kernels removed."""
    k = kernel.copy()
    _, _, cin, cout = k.shape
    flat = k.reshape(9, cin, cout)
    for c in range(cin):
        for o in range(cout):
            if rng.random() < 0.25:
                flat[:, c, o] = 0
                continue
            keep = PATTERNS_3x3[rng.integers(len(PATTERNS_3x3))]
            mask = np.zeros(9, bool)
            mask[list(keep)] = True
            flat[~mask, c, o] = 0
    return flat.reshape(k.shape)


STRUCTURES = {
    "block_punched": zero_block_punched,
    "bcr": zero_bcr,
    "n_m": zero_n_m,
    "unstructured": zero_unstructured,
}


def dense_kernel_to_gemm(k):
    return k.T  # [in, out] -> W[out, in]


def gemm_to_dense_kernel(w):
    return w.T


def conv_kernel_to_gemm(k):
    kh, kw, cin, cout = k.shape
    return k.transpose(3, 0, 1, 2).reshape(cout, kh * kw * cin)


def gemm_to_conv_kernel(w, shape):
    kh, kw, cin, cout = shape
    return w.reshape(cout, kh, kw, cin).transpose(1, 2, 3, 0)


def prune_layer(layer, structure, rng):
    """Zeroes a Dense / Conv2D / DepthwiseConv2D kernel in place with the given structure."""
    import tf_keras as keras

    weights = layer.get_weights()
    k = weights[0]
    if structure == "pattern":
        k = zero_pattern_conv(k, rng)
    elif structure == "dense":
        pass
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, c, m = k.shape
        view = k.reshape(kh * kw, c * m).T  # [c*m, kh*kw]
        k = STRUCTURES[structure](view, rng).T.reshape(k.shape)
    elif isinstance(layer, keras.layers.Conv2D):
        k = gemm_to_conv_kernel(STRUCTURES[structure](conv_kernel_to_gemm(k), rng), k.shape)
    else:
        k = gemm_to_dense_kernel(STRUCTURES[structure](dense_kernel_to_gemm(k), rng))
    weights[0] = k
    if len(weights) > 1:  # non-zero bias so a dropped bias would show
        weights[1] = rng.normal(size=weights[1].shape).astype(np.float32) * 0.1
    layer.set_weights(weights)


# ---- conversion ---------------------------------------------------------------------------------
def convert(model, input_shapes, quantize_int8=False):
    """Converts a tf_keras model at fixed input shapes (batch included) to .tflite bytes.

    Fixed shapes make the converter emit fused dilated convolutions and FULLY_CONNECTED with
    keep_num_dims instead of shape-computing ops.
    """
    import tensorflow as tf

    specs = [tf.TensorSpec(s, tf.float32) for s in input_shapes]
    if len(specs) == 1:
        fn = tf.function(lambda a: model(a), input_signature=specs)
    else:
        fn = tf.function(lambda *a: model(list(a)), input_signature=specs)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)
    if quantize_int8:
        rng = np.random.default_rng(0)

        def data():
            for _ in range(8):
                yield [rng.normal(size=s).astype(np.float32) for s in input_shapes]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = data
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def op_names(content):
    from ai_edge_litert import interpreter as litert

    it = litert.Interpreter(model_content=content)
    return [o["op_name"] for o in it._get_ops_details()]


# ---- running ------------------------------------------------------------------------------------
def random_inputs(content, seed=0, shapes=None):
    from ai_edge_litert import interpreter as litert

    it = litert.Interpreter(model_content=content)
    rng = np.random.default_rng(seed)
    details = it.get_input_details()
    shapes = shapes or [tuple(d["shape"]) for d in details]
    return [rng.normal(size=s).astype(np.float32) for s in shapes]


def run(interp, inputs, resize=False):
    """Feeds inputs (in input-detail order), invokes, returns all outputs (in output order)."""
    details = interp.get_input_details()
    if resize:
        for d, x in zip(details, inputs):
            interp.resize_tensor_input(d["index"], list(x.shape))
    interp.allocate_tensors()
    for d, x in zip(details, inputs):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def reference(content, inputs, resize=False):
    from npas_keras import runtime

    return run(runtime.Interpreter(model_content=content, delegate=False), inputs, resize)


def assert_close(got, want, what=""):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{what} output {i}: shape {g.shape} != {w.shape}"
        scale = max(1.0, float(np.abs(w).max()))
        err = float(np.abs(g - w).max())
        assert err <= 1e-5 * scale, f"{what} output {i}: max abs err {err} (scale {scale})"


# ---- flatbuffer patching --------------------------------------------------------------------
def patch_model(content, fn):
    """Unpacks a .tflite flatbuffer into the object API, calls fn(model), repacks it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    fn(model, schema)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
