"""The latency lookup table: measured single-layer latencies, cached as JSON per machine.

Layout of the JSON file (default ~/.cache/npas_keras/latency.json, or $NPAS_LATENCY_CACHE):

    {"version": 1,
     "machines": {"<cpu>|<isa>|threads=<n>|<runtime>": {
         "overhead_ms": 0.004,                 # invoke cost of a trivial model (measured)
         "entries": {"<spec key>|<scheme key>": {"ms": 0.12, "runs": 50}}}}}

A missing entry is measured on demand (never interpolated or guessed) and saved back.
"""
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time

from npas_keras.latency.machine import machine_key
from npas_keras.latency.specs import LayerSpec, prune_layer_weights

VERSION = 1


def default_cache_path() -> str:
    env = os.environ.get("NPAS_LATENCY_CACHE")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "npas_keras", "latency.json")


def as_scheme(scheme):
    """None / 'dense' -> None; a name or dict or Scheme -> a Scheme (via schemes.get_scheme)."""
    if scheme is None or (isinstance(scheme, str) and scheme in ("dense", "none")):
        return None
    if isinstance(scheme, str) or isinstance(scheme, dict):
        from npas_keras import schemes

        return schemes.get_scheme(scheme)
    return scheme


def scheme_key(scheme) -> str:
    """Canonical cache key of a scheme ('dense' for None)."""
    scheme = as_scheme(scheme)
    if scheme is None:
        return "dense"
    to_json = getattr(scheme, "to_json", None)
    if to_json is None:
        return repr(scheme)
    data = to_json()
    if isinstance(data, str):
        data = json.loads(data)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def with_density(scheme, density):
    """A copy of `scheme` at the given density (rate = 1 - density); density 1.0 -> None (dense)."""
    scheme = as_scheme(scheme)
    if scheme is None or density is None:
        return scheme
    density = float(density)
    if density >= 1.0:
        return None
    rate = round(1.0 - density, 9)
    if hasattr(scheme, "with_rate"):
        return scheme.with_rate(rate)
    return dataclasses.replace(scheme, rate=rate, density=None)


@contextlib.contextmanager
def _file_lock(path):
    lock_path = path + ".lock"
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    with open(lock_path, "a+") as f:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except (ImportError, OSError):  # pragma: no cover - non-POSIX
            pass
        try:
            yield
        finally:
            try:
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            except (ImportError, OSError):  # pragma: no cover
                pass


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {"version": VERSION, "machines": {}}
    except (OSError, ValueError) as exc:
        raise ValueError(f"latency cache {path!r} is not valid JSON ({exc}); delete it or "
                         "pass another path") from exc
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"latency cache {path!r} has an unknown layout/version "
                         f"(expected version {VERSION}); delete it or pass another path")
    data.setdefault("machines", {})
    return data


class LatencyTable:
    """Measured latencies of single layers (and the fixed invoke overhead) on this machine.

    Args:
        path: JSON cache file (default: default_cache_path()). None entries are never written if
            `autosave=False`.
        threads: interpreter thread count the numbers are for (part of the machine key).
        measure_fn: callable(model_bytes) -> ms. Default: the real delegate (stock LiteRT if the
            delegate is not built, filed under runtime 'litert').
        runtime: label filed in the machine key for a custom measure_fn (default 'custom').
        runs, warmup: timing repetitions for the default measure_fn (median of runs).
        autosave: write each newly measured entry to the cache file at once.
        dtype: "float32" (float models) or "int8": every model is exported full-integer (the
            way `export(..., quantize="int8")` writes it) before timing, and the numbers are
            filed under their own machine key (runtime label + "-int8").
    """

    def __init__(self, path=None, threads=1, measure_fn=None, runtime=None, runs=50, warmup=5,
                 autosave=True, dtype="float32"):
        if dtype not in ("float32", "int8"):
            raise ValueError(f"dtype must be 'float32' or 'int8', got {dtype!r}")
        self.dtype = dtype
        self.path = path or default_cache_path()
        self.threads = int(threads)
        self.runs = runs
        self.warmup = warmup
        self.autosave = autosave
        self._measure_fn = measure_fn
        if measure_fn is not None:
            self.runtime = runtime or "custom"
        else:
            self.runtime = None  # decided lazily (probing the delegate costs a conversion)
        self._data = _read_json(self.path)
        self.measured_count = 0

    # -- measuring -----------------------------------------------------------------------------
    @property
    def measure_fn(self):
        if self._measure_fn is None:
            from npas_keras.latency.measure import make_measure_fn

            self._measure_fn, self.runtime = make_measure_fn(self.threads, self.runs, self.warmup)
        return self._measure_fn

    @property
    def machine(self) -> str:
        self.measure_fn  # resolves the runtime label
        suffix = "-int8" if self.dtype == "int8" else ""
        return machine_key(self.threads, self.runtime + suffix)

    def _section(self):
        return self._data["machines"].setdefault(self.machine,
                                                 {"overhead_ms": None, "entries": {}})

    def measure_bytes(self, model_bytes) -> float:
        return float(self.measure_fn(model_bytes))

    def measure_model(self, model) -> float:
        from npas_keras.latency.measure import to_tflite

        quantize = "int8" if self.dtype == "int8" else None
        return self.measure_bytes(to_tflite(model, quantize=quantize))

    # -- entries -------------------------------------------------------------------------------
    @staticmethod
    def entry_key(spec: LayerSpec, scheme=None) -> str:
        return f"{spec.key()}|{scheme_key(scheme)}"

    def has(self, spec, scheme=None) -> bool:
        return self.entry_key(spec, scheme) in self._section()["entries"]

    def lookup(self, spec: LayerSpec, scheme=None, measure=True) -> float:
        """Measured ms of a one-layer model of `spec` pruned by `scheme` (None = dense).

        A missing entry is measured now (and saved) unless measure=False, which raises KeyError.
        """
        scheme = as_scheme(scheme)
        key = self.entry_key(spec, scheme)
        entries = self._section()["entries"]
        if key not in entries:
            if not measure:
                raise KeyError(f"no latency entry for {key} on {self.machine}")
            ms = self._measure_layer(spec, scheme)
            entries[key] = {"ms": ms, "time": time.time()}
            self.measured_count += 1
            if self.autosave:
                self.save()
        return float(entries[key]["ms"])

    def _measure_layer(self, spec, scheme):
        model = spec.build_model()
        if scheme is not None:
            prune_layer_weights(model.layers[-1], scheme)
        return self.measure_model(model)

    @property
    def overhead_ms(self) -> float:
        """Invoke cost of a trivial one-op model (measured once per machine key)."""
        section = self._section()
        if section.get("overhead_ms") is None:
            import tf_keras as keras

            inputs = keras.Input(shape=(8,), batch_size=1)
            model = keras.Model(inputs, keras.layers.ReLU()(inputs))
            section["overhead_ms"] = self.measure_model(model)
            if self.autosave:
                self.save()
        return float(section["overhead_ms"])

    def layer_cost(self, spec, scheme=None) -> float:
        """A layer's share of a whole-model latency: its one-layer time minus the overhead."""
        return max(self.lookup(spec, scheme) - self.overhead_ms, 0.0)

    def entries(self):
        """{entry key: ms} for this machine key."""
        return {k: v["ms"] for k, v in self._section()["entries"].items()}

    # -- persistence ---------------------------------------------------------------------------
    def save(self):
        """Merges this machine's entries into the cache file (locked, atomic replace)."""
        path = self.path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with _file_lock(path):
            on_disk = _read_json(path)
            for machine, section in self._data["machines"].items():
                target = on_disk["machines"].setdefault(machine,
                                                        {"overhead_ms": None, "entries": {}})
                target["entries"].update(section["entries"])
                if section.get("overhead_ms") is not None:
                    target["overhead_ms"] = section["overhead_ms"]
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                       prefix=".latency-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(on_disk, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
            self._data = on_disk


def build_table(layer_specs, schemes, densities, progress=True, table=None, include_dense=True,
                **table_kwargs):
    """Fills the cache with every (spec, scheme at density) entry (plus dense ones); returns it.

    schemes: scheme names or Scheme objects; densities: floats in (0, 1]. Already cached entries
    are not re-measured. progress=True draws a bar on stderr.
    """
    table = table if table is not None else LatencyTable(**table_kwargs)
    jobs = []
    for spec in layer_specs:
        if include_dense:
            jobs.append((spec, None))
        for scheme in schemes:
            for density in densities:
                if not 0.0 < float(density) <= 1.0:
                    raise ValueError(f"density must be in (0, 1], got {density}")
                jobs.append((spec, with_density(scheme, density)))
    table.overhead_ms
    total = len(jobs)
    t0 = time.time()
    for i, (spec, scheme) in enumerate(jobs, 1):
        try:
            table.lookup(spec, scheme)
        except ValueError as exc:  # a scheme that does not apply to this layer kind
            if progress:
                sys.stderr.write(f"\nskipped {spec.kind} {spec.input_shape} / "
                                 f"{scheme_key(scheme)}: {exc}\n")
        if progress:
            _draw_bar(i, total, time.time() - t0)
    if progress:
        sys.stderr.write("\n")
        sys.stderr.flush()
    return table


def _draw_bar(done, total, elapsed, width=30):
    filled = int(width * done / max(total, 1))
    eta = elapsed / done * (total - done) if done else 0.0
    sys.stderr.write(f"\rlatency table [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
                     f"  {elapsed:5.1f}s elapsed, ~{eta:5.1f}s left")
    sys.stderr.flush()
