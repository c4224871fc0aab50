"""Test helper: builds tests/npas_decoder_shim.cc + tflite_custom_ops/npas_custom_ops.cc into a
temporary shared library and calls npas::DecodeNpasCustomOp through ctypes (no delegate needed).
Used by tests/test_export_decoder.py and tests/test_custom_op_fuzz.py."""
import ctypes
import os
import shutil
import subprocess

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [os.path.join(ROOT, "tests", "npas_decoder_shim.cc"),
           os.path.join(ROOT, "tflite_custom_ops", "npas_custom_ops.cc")]


def build(out_dir, sanitize=False) -> str:
    """Compiles the shim; returns the library path. Raises RuntimeError if no compiler."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise RuntimeError("no C++ compiler (g++) found")
    lib = os.path.join(out_dir, "libnpas_decoder_shim%s.so" % ("_asan" if sanitize else ""))
    flags = ["-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
             "-I", ROOT]
    if sanitize:
        flags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                  "-fno-omit-frame-pointer"]
    subprocess.run([cxx, *flags, *SOURCES, "-o", lib], check=True, capture_output=True,
                   text=True)
    return lib


class Decoder:
    """ctypes wrapper: decode(...) -> (ok, weights ndarray or None, meta list, error str)."""

    def __init__(self, lib_path):
        self.lib = ctypes.CDLL(lib_path)
        f = self.lib.npas_test_decode
        f.restype = ctypes.c_int
        f.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                      ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                      ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                      ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        self.lib.npas_test_is_custom.argtypes = [ctypes.c_char_p]

    def is_custom(self, name: str) -> bool:
        return bool(self.lib.npas_test_is_custom(name.encode()))

    def decode(self, name, options: bytes, values: bytes, index: bytes, capacity,
               values_type=1, index_type=3, values_dim=None, index_dim=None):
        opts = ctypes.create_string_buffer(bytes(options), max(1, len(options)))
        vals = ctypes.create_string_buffer(bytes(values), max(1, len(values)))
        idx = ctypes.create_string_buffer(bytes(index), max(1, len(index)))
        out = np.zeros(max(1, capacity), np.float32)
        meta = (ctypes.c_int * 16)()
        err = ctypes.create_string_buffer(512)
        ok = self.lib.npas_test_decode(
            name.encode(), opts, len(options), vals, len(values), values_type,
            len(values) // 4 if values_dim is None else values_dim, idx, len(index), index_type,
            len(index) if index_dim is None else index_dim, out.ctypes.data, capacity, meta, err,
            512)
        m = list(meta)[:13]
        if not ok:
            return False, None, m, err.value.decode("utf-8", "replace")
        return True, out[:m[12]].copy(), m, ""

    def decode_q(self, name, options: bytes, values: bytes, index: bytes, scales: bytes,
                 capacity, values_type=9, index_type=3, scales_type=1, values_dim=None,
                 index_dim=None, scales_dim=None):
        """Quantized ops: -> (ok, int8 weights (builtin layout) or None, scales or None, meta,
        error)."""
        f = self.lib.npas_test_decode_q
        f.restype = ctypes.c_int
        bufs = [ctypes.create_string_buffer(bytes(b), max(1, len(b)))
                for b in (options, values, index, scales)]
        out = np.zeros(max(1, capacity), np.int8)
        sc = np.zeros(4096, np.float32)
        meta = (ctypes.c_int * 16)()
        err = ctypes.create_string_buffer(512)
        ok = f(name.encode(), bufs[0], ctypes.c_size_t(len(options)), bufs[1],
               ctypes.c_size_t(len(values)), ctypes.c_int(values_type),
               ctypes.c_int(len(values) if values_dim is None else values_dim), bufs[2],
               ctypes.c_size_t(len(index)), ctypes.c_int(index_type),
               ctypes.c_int(len(index) if index_dim is None else index_dim), bufs[3],
               ctypes.c_size_t(len(scales)), ctypes.c_int(scales_type),
               ctypes.c_int(len(scales) // 4 if scales_dim is None else scales_dim),
               ctypes.c_void_p(out.ctypes.data), ctypes.c_size_t(capacity),
               ctypes.c_void_p(sc.ctypes.data), ctypes.c_size_t(len(sc)), meta, err,
               ctypes.c_size_t(512))
        m = list(meta)[:14]
        if not ok:
            return False, None, None, m, err.value.decode("utf-8", "replace")
        return True, out[:m[12]].copy(), sc[:m[8]].copy(), m, ""
