"""Which machine a latency number belongs to: CPU model, best ISA, thread count (and runtime).

Latency tables are only valid on the machine they were measured on, so every cached entry is
filed under `machine_key(...)`.
"""
import platform
import re

_ISA_ORDER = ("avx512", "avx2", "neon", "scalar")


def _cpuinfo_text():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo where available)."""
    text = _cpuinfo_text()
    for field in ("model name", "Hardware", "CPU part"):
        m = re.search(rf"^{field}\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            return " ".join(m.group(1).split())
    return platform.processor() or platform.machine() or "unknown-cpu"


def cpu_isa() -> str:
    """The widest SIMD ISA the sparse kernels can use here: avx512, avx2, neon or scalar."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "neon"
    text = _cpuinfo_text()
    m = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(m.group(1).split()) if m else set()
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "scalar"


def machine_key(threads: int = 1, runtime: str = "npas") -> str:
    """Cache key: '<cpu model>|<isa>|threads=<n>|<runtime>'.

    `runtime` names what did the timing ('npas' = LiteRT + the npas delegate, 'litert' = stock
    LiteRT/XNNPACK, or a user label for a custom measure function), so numbers measured without
    the delegate are never mistaken for delegate numbers.
    """
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return f"{cpu_model()}|{cpu_isa()}|threads={int(threads)}|{runtime}"


def describe() -> str:
    """One line naming this machine for benchmark JSON: CPU model, ISA, logical CPUs, OS."""
    import os
    return (f"{cpu_model()}, {cpu_isa()}, {os.cpu_count()} logical CPUs, "
            f"{platform.system()} {platform.machine()}")
