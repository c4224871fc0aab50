"""The delegate's C entry points called directly through ctypes: create/destroy without leaks,
option errors, the exported symbol set, stats on bad pointers. No interpreter involved."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import pytest

from test_delegate_support import require_delegate

REPORT = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


@pytest.fixture(scope="module")
def lib():
    path = require_delegate()
    lib = ctypes.CDLL(path)
    lib.tflite_plugin_create_delegate.argtypes = [
        ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t, REPORT]
    lib.tflite_plugin_create_delegate.restype = ctypes.c_void_p
    lib.tflite_plugin_destroy_delegate.argtypes = [ctypes.c_void_p]
    lib.tflite_plugin_destroy_delegate.restype = None
    lib.npas_delegate_last_error.argtypes = []
    lib.npas_delegate_last_error.restype = ctypes.c_char_p
    lib.npas_delegate_stats.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.npas_delegate_stats.restype = ctypes.c_int
    return lib


def _create(lib, options, count=None, messages=None):
    keys = (ctypes.c_char_p * max(1, len(options)))(*[k.encode() for k in options])
    values = (ctypes.c_char_p * max(1, len(options)))(*[str(v).encode() for v in options.values()])
    cb = REPORT(lambda m: messages.append(m.decode()) if messages is not None else None)
    n = len(options) if count is None else count
    return lib.tflite_plugin_create_delegate(keys, values, n, cb)


def _rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_create_destroy_2000_times_without_growth(lib):
    options = {"num_threads": "2", "schemes": "bcr,n_m", "min_speedup": "1.5",
               "tuning_cache": "/nonexistent/dir/cache.txt"}
    for _ in range(200):  # warm the allocator
        lib.tflite_plugin_destroy_delegate(_create(lib, options))
    before = _rss_kib()
    for _ in range(2000):
        d = _create(lib, options)
        assert d
        lib.tflite_plugin_destroy_delegate(d)
        assert not _create(lib, {"bogus": "1"})  # failed creations must not leak either
    grown = _rss_kib() - before
    assert grown < 2048, f"RSS grew by {grown} KiB over 2000 create/destroy cycles"


def test_unknown_option_returns_null_with_message(lib):
    messages = []
    assert not _create(lib, {"num_threads": "1", "frobnicate": "yes"}, messages=messages)
    err = lib.npas_delegate_last_error().decode()
    assert "unknown option 'frobnicate'" in err and "num_threads" in err  # lists known keys
    assert messages and "frobnicate" in messages[0]


@pytest.mark.parametrize("key,value", [
    ("num_threads", "0"), ("num_threads", "1.5"), ("num_threads", ""),
    ("min_sparsity", "1"), ("min_sparsity", "nan"), ("min_speedup", "0"),
    ("min_speedup", "inf"), ("schemes", "bcr,,dense,blocks"), ("kernel", "Dense"),
    ("verbose", "-1"),
])
def test_bad_values_rejected(lib, key, value):
    assert not _create(lib, {key: value})
    assert f"option '{key}'" in lib.npas_delegate_last_error().decode()


def test_success_clears_last_error_and_stats_json(lib):
    import json

    assert not _create(lib, {"kernel": "x"})
    d = _create(lib, {"kernel": "pixel_vector", "verbose": "1"})
    try:
        assert lib.npas_delegate_last_error() == b""
        n = lib.npas_delegate_stats(d, None, 0)
        assert n > 0
        buf = ctypes.create_string_buffer(n + 1)
        assert lib.npas_delegate_stats(d, buf, n + 1) == n
        stats = json.loads(buf.value)
        assert stats["claimed"] == 0 and stats["nodes"] == []
        small = ctypes.create_string_buffer(8)  # truncated but NUL-terminated
        assert lib.npas_delegate_stats(d, small, 8) == n and len(small.value) == 7
    finally:
        lib.tflite_plugin_destroy_delegate(d)


def test_option_count_uses_low_32_bits(lib):
    """Python's loader passes num_options as a C int; garbage in the high half is ignored."""
    d = _create(lib, {"num_threads": "3"}, count=(0xDEAD << 32) | 1)
    assert d
    lib.tflite_plugin_destroy_delegate(d)


def test_bad_pointers_are_refused(lib):
    assert lib.npas_delegate_stats(None, None, 0) == -1
    bogus = ctypes.create_string_buffer(64)
    assert lib.npas_delegate_stats(ctypes.addressof(bogus), None, 0) == -1
    lib.tflite_plugin_destroy_delegate(None)  # allowed, no effect
    d = _create(lib, {})
    lib.tflite_plugin_destroy_delegate(d)
    assert lib.npas_delegate_stats(d, None, 0) == -1  # destroyed
    lib.tflite_plugin_destroy_delegate(d)  # double destroy is ignored


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils nm")
def test_only_entry_points_exported(lib):
    path = require_delegate()
    out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True,
                         check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
    assert exported == {"tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate",
                        "npas_delegate_last_error", "npas_delegate_stats"}
