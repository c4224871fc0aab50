"""The `npas` command: demo, prune, export, inspect, bench, report (and more as parts land).

Everything heavy (TensorFlow, Keras, LiteRT, matplotlib) is imported inside the command that
needs it, so `npas --help` is fast and works even when a part of the package is missing.

Exit codes: 0 success; 2 bad arguments (argparse's convention; the message says what to do);
1 a failure (one line `npas: error: ...`; the traceback only with --debug).

Adding a subcommand (e.g. `latency`, `search`) is one decorated function in this file:

    @subcommand("latency", "measure per-layer latency through the delegate",
                requires="npas_keras.latency.measure")
    def _latency_args(p):
        p.add_argument("model")
        return _run_latency          # a function(args) -> exit code (int or None)

`requires` names modules (files under npas_keras/) that must exist; the subcommand is not
registered (it does not appear in --help) until they do. Existence is checked on the file
system, without importing anything.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

PROG = "npas"
DEFAULT_RATE = 0.875
SCHEME_CHOICES_HINT = "unstructured, filter, channel, n_m, block_punched, bcr, pattern"


# --------------------------------------------------------------------------------------------
# errors, registry, progress
# --------------------------------------------------------------------------------------------

class UsageError(Exception):
    """Bad arguments found after parsing (exit code 2)."""


class CommandError(Exception):
    """A failure with a message meant for the user (exit code 1)."""


@dataclass
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], Callable]
    requires: tuple = field(default_factory=tuple)
    description: str | None = None


_COMMANDS: list[Subcommand] = []


def subcommand(name: str, help: str, requires: str | Sequence[str] = (),
               description: str | None = None):
    """Registers a subcommand. The decorated function adds arguments to its parser and returns
    the function that runs it. `requires`: module names that must exist for it to be listed."""
    if isinstance(requires, str):
        requires = (requires,)

    def deco(fn):
        doc = inspect.cleandoc(fn.__doc__) if fn.__doc__ else None
        _COMMANDS[:] = [c for c in _COMMANDS if c.name != name]  # re-registering replaces
        _COMMANDS.append(Subcommand(name, help, fn, tuple(requires), description or doc))
        return fn
    return deco


def module_exists(dotted: str) -> bool:
    """True when `npas_keras.x.y` exists as a file or package under this package, checked on
    the file system only (no import, so no TensorFlow start-up)."""
    parts = dotted.split(".")
    if parts[0] != "npas_keras":
        import importlib.util
        return importlib.util.find_spec(parts[0]) is not None
    base = os.path.join(os.path.dirname(os.path.abspath(__file__)), *parts[1:])
    return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))


def available_commands() -> list[Subcommand]:
    return [c for c in _COMMANDS if all(module_exists(m) for m in c.requires)]


class Progress:
    """A tiny progress bar on stderr, drawn only when stderr is a terminal (or NPAS_PROGRESS=1)
    and not when NPAS_PROGRESS=0."""

    def __init__(self, total: int, label: str = "", width: int = 30, stream=None):
        self.total, self.label, self.width = max(int(total), 1), label, width
        self.stream = stream or sys.stderr
        env = os.environ.get("NPAS_PROGRESS")
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.enabled = env == "1" or (env != "0" and tty)
        self.count = 0
        self._last = -1.0
        self._start = time.perf_counter()

    def update(self, n: int = 1):
        self.count = min(self.count + n, self.total)
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.count == self.total):
            self._last = now
            frac = self.count / self.total
            bar = "#" * int(frac * self.width)
            self.stream.write(f"\r{self.label} [{bar:<{self.width}}] {self.count}/{self.total} "
                              f"{now - self._start:5.1f}s")
            self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _log(msg: str):
    print(f"[npas] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# argument helpers
# --------------------------------------------------------------------------------------------

def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give the fraction of "
                                         "weights to remove, e.g. 0.875") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 1); the rate is the fraction "
                                         "of weights removed, e.g. 0.875 keeps 1/8")
    return value


def _int_at_least(low: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} must be {low} or more")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(1, text)


def _nonneg_int(text: str) -> int:
    return _int_at_least(0, text)


def _dataset(text: str) -> str:
    key = text.replace("-", "_").lower()
    if key not in ("auto", "fashion_mnist", "digits"):
        raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; choose auto, fashion_mnist "
                                         "or digits")
    return key


def _weight_bits(text: str) -> tuple:
    try:
        bits = tuple(int(b) for b in text.split(","))
    except ValueError:
        bits = ()
    if not bits or any(b not in (4, 8) for b in bits):
        raise argparse.ArgumentTypeError(f"weight bits must be 8, 4 or 8,4, got {text!r}")
    return bits


def _existing_file(text: str) -> str:
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


def _scheme_name(text: str) -> str:
    """Checked against npas_keras.schemes when that part exists; otherwise passed through."""
    try:
        from npas_keras.schemes import get_scheme
    except ImportError:
        return text
    try:
        get_scheme(text)
    except Exception as exc:  # noqa: BLE001 - any refusal is a usage error
        raise argparse.ArgumentTypeError(f"unknown scheme {text!r} ({exc}); known schemes: "
                                         f"{SCHEME_CHOICES_HINT}") from None
    return text


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors end with what to do next (exit code 2)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"Run `{self.prog} --help` to see the options.\n")


def _import(what: str, module: str, attr: str | None = None):
    """Imports a part of npas-keras, turning its absence into a one-line CommandError."""
    import importlib
    try:
        mod = importlib.import_module(module)
        return getattr(mod, attr) if attr else mod
    except (ImportError, AttributeError) as exc:
        raise CommandError(f"{what} is not available in this installation ({module}"
                           f"{'.' + attr if attr else ''}: {exc})") from exc


def _api(name: str):
    """A public npas_keras function (npas_keras.prune, .export, ...), read from the module that
    defines it: `npas_keras.export` the function shares its name with the subpackage, so the
    package attribute may be the module once that subpackage is imported."""
    import npas_keras
    module = getattr(npas_keras, "_LAZY", {}).get(name, "npas_keras")
    value = _import(f"npas_keras.{name}", module, name)
    if not callable(value):
        raise CommandError(f"npas_keras.{name} is not available in this installation "
                           f"({module}.{name} is not a function)")
    return value


def _api_from(module: str, name: str):
    return _import(f"{module}.{name}", module, name)


def _has_api(name: str) -> bool:
    try:
        _api(name)
        return True
    except CommandError:
        return False


def _quiet_tensorflow(debug: bool):
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")


# --------------------------------------------------------------------------------------------
# shared building blocks (models, inference, latency)
# --------------------------------------------------------------------------------------------

def build_small_cnn(input_shape, num_classes: int = 10):
    """A small tf_keras CNN: two 3x3 convolutions (32, 64 filters), a 128-unit dense layer.
    Sized so that each prunable layer's GEMM view has enough rows and columns for blocks."""
    import tf_keras as keras
    h = input_shape[0]
    layers = [keras.Input(shape=input_shape),
              keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")]
    if h >= 16:
        layers.append(keras.layers.MaxPooling2D(2, name="pool1"))
    layers += [keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
               keras.layers.MaxPooling2D(2, name="pool2"),
               keras.layers.Flatten(name="flatten"),
               keras.layers.Dense(128, activation="relu", name="fc1"),
               keras.layers.Dense(num_classes, name="logits")]
    model = keras.Sequential(layers, name="small_cnn")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _has(module: str, attr: str) -> bool:
    import importlib
    try:
        return hasattr(importlib.import_module(module), attr)
    except ImportError:
        return False


def make_interpreter(model_path: str, threads: int, delegate: bool, delegate_options=None):
    """A LiteRT interpreter, allocated. delegate=False is stock LiteRT (its default XNNPACK);
    delegate=True adds the npas delegate (npas_keras.runtime.Interpreter)."""
    if _has("npas_keras.runtime", "Interpreter"):
        from npas_keras.runtime import Interpreter
        kwargs = {"model_path": model_path, "num_threads": threads, "delegate": delegate}
        if delegate and delegate_options:
            kwargs["delegate_options"] = delegate_options
        interp = Interpreter(**kwargs)
    elif delegate:
        raise CommandError("npas_keras.runtime.Interpreter is not available, so the npas "
                           "delegate cannot be loaded")
    else:
        from ai_edge_litert.interpreter import Interpreter as LiteRTInterpreter
        interp = LiteRTInterpreter(model_path=model_path, num_threads=threads)
    interp.allocate_tensors()
    return interp


def run_interpreter(interp, x, label: str = "inference"):
    """Runs every sample of x (batch 1) through an allocated interpreter; returns the outputs
    stacked ([n, ...]) of the first output tensor."""
    import numpy as np
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    results = []
    with Progress(len(x), label) as bar:
        for i in range(len(x)):
            interp.set_tensor(inp["index"], x[i:i + 1].astype(inp["dtype"], copy=False))
            interp.invoke()
            results.append(interp.get_tensor(out["index"])[0].copy())
            bar.update()
    return np.stack(results)


def interleaved_latency(model_path: str, inputs, threads: int, runs: int, warmup: int,
                        delegate_options=None, baseline_path: str | None = None) -> dict:
    """Median ms per invoke of stock LiteRT vs LiteRT + npas delegate, measured A B A B in one
    process on the same inputs. Uses npas_keras.runtime.benchmark.compare when present.
    `baseline_path`: a standard-ops model for the stock side (needed when `model_path` holds
    NPAS custom ops)."""
    import numpy as np
    with open(model_path, "rb") as f:
        content = f.read()
    if _has("npas_keras.runtime.benchmark", "compare"):
        from npas_keras.runtime.benchmark import compare
        kwargs = {}
        if baseline_path:
            with open(baseline_path, "rb") as f:
                kwargs["baseline_model_content"] = f.read()
        return dict(compare(content, inputs, threads=threads, runs=runs, warmup=warmup,
                            delegate_options=delegate_options, **kwargs))
    if baseline_path:
        raise CommandError("a separate baseline model needs npas_keras.runtime.benchmark.compare,"
                           " which this installation lacks")
    stock = make_interpreter(model_path, threads, delegate=False)
    npas = make_interpreter(model_path, threads, delegate=True, delegate_options=delegate_options)
    feeds = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    times = {"stock": [], "npas": []}
    max_err = 0.0
    with Progress(runs + warmup, "latency") as bar:
        for r in range(warmup + runs):
            outs = {}
            for name, interp in (("stock", stock), ("npas", npas)):
                for d, value in zip(interp.get_input_details(), feeds):
                    interp.set_tensor(d["index"], value)
                t0 = time.perf_counter()
                interp.invoke()
                dt = (time.perf_counter() - t0) * 1e3
                outs[name] = interp.get_tensor(interp.get_output_details()[0]["index"])
                if r >= warmup:
                    times[name].append(dt)
            max_err = max(max_err, float(np.max(np.abs(outs["stock"] - outs["npas"]))))
            bar.update()
    base, cand = float(np.median(times["stock"])), float(np.median(times["npas"]))
    return {"baseline_ms": base, "npas_ms": cand, "speedup": base / cand if cand else None,
            "max_abs_err": max_err}


def keras_latency_ms(model, x1, runs: int) -> float:
    """Median ms of one batch-1 forward pass of a Keras model (a traced tf.function)."""
    import numpy as np
    import tensorflow as tf
    fn = tf.function(lambda t: model(t, training=False))
    t = tf.constant(x1)
    for _ in range(5):
        fn(t)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(t).numpy()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _delegate_stats(interp) -> dict:
    if not _has("npas_keras.runtime", "delegate_stats"):
        return {}
    from npas_keras.runtime import delegate_stats
    try:
        return dict(delegate_stats(interp) or {})
    except Exception as exc:  # noqa: BLE001 - stats are informative only
        return {"error": str(exc)}


def _format_stats(stats: dict) -> str:
    if not stats:
        return "-"
    parts = []
    for key, value in stats.items():
        if isinstance(value, (dict, list)):
            continue
        if isinstance(value, float):
            value = f"{value:.3g}"
        parts.append(f"{key}={value}")
    return " ".join(parts) or "-"


def _fmt_size(nbytes) -> str:
    if nbytes is None:
        return "-"
    if nbytes >= 1 << 20:
        return f"{nbytes / (1 << 20):.2f} MiB"
    return f"{nbytes / 1024:.1f} KiB"


def format_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Plain-text table: columns are (key, header); values already formatted or numbers."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)
    body = [[cell(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, (_, h) in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(line.rstrip() for line in lines)


def _make_scheme(name: str, rate: float | None):
    """A Scheme for `name` at `rate` (npas_keras.schemes); rate None keeps the spec's own rate
    (e.g. "2:4"), falling back to DEFAULT_RATE. Without the schemes part: the bare name."""
    try:
        from npas_keras.schemes import get_scheme
    except ImportError:
        return name
    base = get_scheme(name)
    if rate is None:
        if ":" in name:
            return base
        rate = DEFAULT_RATE
    if hasattr(base, "with_rate"):
        return base.with_rate(rate)
    import dataclasses
    return dataclasses.replace(base, rate=rate, density=None)


def _scheme_text(scheme) -> str:
    if hasattr(scheme, "to_json"):
        return ", ".join(f"{k}={v}" for k, v in scheme.to_json().items())
    return str(scheme)


def _machine() -> str:
    from npas_keras.latency.machine import describe
    return describe()


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------

@subcommand("demo", "train, prune, export and run a small CNN: keras vs stock TFLite vs delegate")
def _demo_args(p):
    """Trains a small CNN (tf_keras) on a dataset already on this machine (Fashion-MNIST when
    the Debian package is installed, else scikit-learn's digits), prunes it with a fine-grained
    structured scheme following a polynomial schedule, fine-tunes, strips, exports to TFLite,
    and runs the test set through stock LiteRT (XNNPACK) and through LiteRT + the npas
    delegate. Prints accuracy, file size, batch-1 latency and what the delegate claimed."""
    p.add_argument("--dataset", type=_dataset, default="auto",
                   help="auto (Fashion-MNIST if installed, else digits), fashion_mnist, digits")
    p.add_argument("--epochs", type=_nonneg_int, default=None,
                   help="dense training epochs (default: 2 on Fashion-MNIST, 15 on digits)")
    p.add_argument("--finetune-epochs", type=_nonneg_int, default=None,
                   help="pruning + fine-tuning epochs (default: 2 on Fashion-MNIST, 10 on digits)")
    p.add_argument("--scheme", type=_scheme_name, default="block_punched",
                   help=f"pruning scheme ({SCHEME_CHOICES_HINT}); default block_punched")
    p.add_argument("--rate", type=_rate, default=None,
                   help="fraction of weights removed in each pruned layer (default 0.875; "
                        "an N:M scheme such as 2:4 implies its own)")
    p.add_argument("--threads", type=_positive_int, default=1, help="inference threads (default 1)")
    p.add_argument("--runs", type=_positive_int, default=None,
                   help="timed runs per runtime for latency (default 200, --quick 20)")
    p.add_argument("--out", metavar="DIR", default="npas-demo-out",
                   help="where the models and demo.json go (default ./npas-demo-out)")
    p.add_argument("--quick", action="store_true",
                   help="tiny run for tests: 1 epoch each on a few hundred images")
    return _run_demo


def _run_demo(args) -> int:
    import numpy as np
    from npas_keras import data

    dataset = data.default_dataset_name() if args.dataset == "auto" else args.dataset
    (x_train, y_train), (x_test, y_test) = data.load(dataset)
    fashion = dataset == "fashion_mnist"
    epochs = args.epochs if args.epochs is not None else (2 if fashion else 15)
    ft_epochs = args.finetune_epochs if args.finetune_epochs is not None else (2 if fashion else 10)
    runs = args.runs or (20 if args.quick else 200)
    if args.quick:
        x_train, y_train = x_train[:600], y_train[:600]
        x_test, y_test = x_test[:200], y_test[:200]
        epochs = min(epochs, 1) if args.epochs is None else epochs
        ft_epochs = min(ft_epochs, 1) if args.finetune_epochs is None else ft_epochs
    ft_epochs = max(ft_epochs, 1)
    os.makedirs(args.out, exist_ok=True)
    _log(f"dataset {dataset}: {len(x_train)} train / {len(x_test)} test images "
         f"{x_train.shape[1:]}; scheme {args.scheme}; {args.threads} thread(s)")

    import tensorflow as tf
    import tf_keras as keras
    tf.random.set_seed(0)
    keras.utils.set_random_seed(0)
    verbose = 2 if not sys.stdout.isatty() else 1
    batch = 64 if fashion else 32

    # 1. dense model
    model = build_small_cnn(x_train.shape[1:])
    if epochs:
        _log(f"training the dense model for {epochs} epoch(s)")
        model.fit(x_train, y_train, batch_size=batch, epochs=epochs, verbose=verbose,
                  validation_data=(x_test, y_test))
    dense_acc = float(model.evaluate(x_test, y_test, verbose=0)[1])
    dense_path = os.path.join(args.out, "dense.keras")
    plain = keras.models.clone_model(model)  # uncompiled: the file holds no optimizer state
    plain.set_weights(model.get_weights())
    plain.save(dense_path)
    dense_latency = keras_latency_ms(model, x_test[:1], runs)

    # 2. prune with a schedule, fine-tune, strip
    prune = _api("prune")
    callbacks = _api("callbacks")
    strip = _api("strip")
    import tensorflow_model_optimization as tfmot
    steps = int(np.ceil(len(x_train) / batch))
    # reach the final rate after all but the last epoch (70% of the only one), then fine-tune
    end_step = max(1, steps * (ft_epochs - 1) if ft_epochs > 1 else int(steps * 0.7))
    scheme = _make_scheme(args.scheme, args.rate)
    rate = float(getattr(scheme, "rate", None) or args.rate or DEFAULT_RATE)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=rate, begin_step=0, end_step=end_step,
        frequency=max(1, end_step // 10))
    _log(f"pruning ({_scheme_text(scheme)}) and fine-tuning for {ft_epochs} epoch(s)")
    pruned = prune(model, scheme, schedule=schedule)
    pruned.compile(optimizer=keras.optimizers.Adam(5e-4),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    pruned.fit(x_train, y_train, batch_size=batch, epochs=ft_epochs, verbose=verbose,
               callbacks=callbacks(), validation_data=(x_test, y_test))
    final = strip(pruned)
    final.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    pruned_keras_acc = float(final.evaluate(x_test, y_test, verbose=0)[1])
    summary_rows = None
    if _has_api("summary"):
        try:
            summary_rows = list(_api("summary")(pruned, print_fn=lambda *a, **k: None))
        except Exception as exc:  # noqa: BLE001 - the summary is informative only
            _log(f"summary failed: {exc}")

    # 3. export
    export = _api("export")
    std_path = os.path.join(args.out, "pruned.tflite")
    export(final, std_path, format="standard")
    npas_path, npas_note = os.path.join(args.out, "pruned_npas.tflite"), None
    try:
        export(final, npas_path, format="npas")
    except Exception as exc:  # noqa: BLE001 - the compact format is optional for the demo
        npas_note = "npas-format export skipped: " + " ".join(str(exc).split())
        _log(npas_note)
        npas_path = None
    layers = []
    if _has_api("inspect"):
        try:
            layers = list(_api("inspect")(npas_path or std_path))
        except Exception as exc:  # noqa: BLE001
            _log(f"inspect failed: {exc}")

    # 4. run the test set: stock vs delegate, on the same standard-ops model
    stock = make_interpreter(std_path, args.threads, delegate=False)
    stock_logits = run_interpreter(stock, x_test, "stock LiteRT")
    stock_pred = stock_logits.argmax(-1)
    stock_acc = float((stock_pred == y_test).mean())
    rows = [
        {"name": "keras dense", "accuracy": dense_acc, "size_bytes": os.path.getsize(dense_path),
         "latency_ms": dense_latency, "file": dense_path, "claims": "-"},
        {"name": "tflite stock (XNNPACK)", "accuracy": stock_acc,
         "size_bytes": os.path.getsize(std_path), "latency_ms": None, "file": std_path,
         "claims": "-"},
    ]
    stats, bench, delegate_error, compact = {}, None, None, None
    try:
        deleg = make_interpreter(std_path, args.threads, delegate=True)
        deleg_logits = run_interpreter(deleg, x_test, "npas delegate")
        stats = _delegate_stats(deleg)
        del deleg
        deleg_pred = deleg_logits.argmax(-1)
        bench = interleaved_latency(std_path, x_test[:1], args.threads, runs, max(3, runs // 10))
        rows[1]["latency_ms"] = bench.get("baseline_ms")
        rows.append({"name": "tflite + npas delegate",
                     "accuracy": float((deleg_pred == y_test).mean()),
                     "size_bytes": os.path.getsize(std_path),
                     "latency_ms": bench.get("npas_ms"), "file": std_path,
                     "claims": _format_stats(stats),
                     "agreement_with_stock": float((deleg_pred == stock_pred).mean()),
                     "max_abs_logit_diff": float(np.max(np.abs(deleg_logits - stock_logits)))})
    except CommandError as exc:
        delegate_error = str(exc)
    except Exception as exc:  # noqa: BLE001 - report the delegate failure in the table
        delegate_error = f"{type(exc).__name__}: {exc}"
    if delegate_error:
        _log(f"delegate unavailable: {delegate_error}")
        rows.append({"name": "tflite + npas delegate", "accuracy": None, "size_bytes": None,
                     "latency_ms": None, "file": std_path,
                     "claims": "unavailable (see the message above)",
                     "error": delegate_error})
    if rows[1]["latency_ms"] is None:
        rows[1]["latency_ms"] = _stock_latency(std_path, x_test[:1], args.threads, runs)
    if npas_path and not delegate_error:
        # the compact NPAS-format file runs only with the delegate (its custom ops)
        try:
            interp = make_interpreter(npas_path, args.threads, delegate=True)
            compact_pred = run_interpreter(interp, x_test, "npas format").argmax(-1)
            compact = {"file": npas_path, "size_bytes": os.path.getsize(npas_path),
                       "accuracy": float((compact_pred == y_test).mean()),
                       "agreement_with_stock": float((compact_pred == stock_pred).mean())}
        except Exception as exc:  # noqa: BLE001 - informative only
            npas_note = ("npas-format model did not run: "
                         + " ".join(f"{type(exc).__name__}: {exc}".split()))
            _log(npas_note)

    table = format_table(
        [dict(r, size=_fmt_size(r["size_bytes"]),
              accuracy=None if r["accuracy"] is None else f"{r['accuracy']:.4f}",
              latency=None if r["latency_ms"] is None else f"{r['latency_ms']:.3f}")
         for r in rows],
        [("name", "model"), ("accuracy", "accuracy"), ("size", "file size"),
         ("latency", "latency ms (b=1, median)"), ("claims", "delegate claims")])
    print()
    print(f"npas demo: {dataset}, {len(x_test)} test images, scheme {args.scheme}, "
          f"rate {rate}, {args.threads} thread(s)")
    print(table)
    print(f"pruned keras accuracy (before export): {pruned_keras_acc:.4f}")
    if len(rows) == 3 and rows[2]["accuracy"] is not None:
        r = rows[2]
        print(f"stock vs delegate: predictions agree on {r['agreement_with_stock'] * 100:.2f}% "
              f"of test images, max |logit diff| {r['max_abs_logit_diff']:.2e}")
        if bench and bench.get("speedup"):
            print(f"delegate speed-up over stock at batch 1: {bench['speedup']:.2f}x "
                  "(interleaved runs, median; machines are noisy, quote ratios)")
    if compact:
        print(f"npas-format file (compact custom ops, delegate only): "
              f"{_fmt_size(compact['size_bytes'])}, accuracy {compact['accuracy']:.4f}, "
              f"predictions agree with stock on {compact['agreement_with_stock'] * 100:.2f}%")
    if npas_note:
        print(npas_note)
    result = {"kind": "npas-demo", "dataset": dataset, "scheme": args.scheme, "rate": rate,
              "threads": args.threads, "test_samples": int(len(x_test)), "epochs": epochs,
              "finetune_epochs": ft_epochs, "quick": bool(args.quick),
              "pruned_keras_accuracy": pruned_keras_acc, "rows": rows, "layers": layers,
              "summary": summary_rows, "delegate_stats": stats, "bench": bench,
              "delegate_error": delegate_error, "npas_format": compact, "machine": _machine()}
    out_json = os.path.join(args.out, "demo.json")
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2, default=_json_default)
    print(f"results: {out_json}  (make a report: npas report {out_json} -o {args.out}/report)")
    return 0


def _stock_latency(model_path, x1, threads, runs) -> float:
    import numpy as np
    interp = make_interpreter(model_path, threads, delegate=False)
    d = interp.get_input_details()[0]
    times = []
    for r in range(runs + 3):
        interp.set_tensor(d["index"], x1.astype(d["dtype"]))
        t0 = time.perf_counter()
        interp.invoke()
        if r >= 3:
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _json_default(obj):
    import numpy as np
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_json"):
        return obj.to_json()
    return str(obj)


# --------------------------------------------------------------------------------------------
# prune / export / inspect
# --------------------------------------------------------------------------------------------

def _load_keras_model(path: str):
    import tf_keras as keras
    custom = {}
    try:
        from npas_keras.layers import custom_objects  # the wrappers, if the part provides them
        custom = custom_objects() if callable(custom_objects) else dict(custom_objects)
    except ImportError:
        pass
    try:
        import tensorflow_model_optimization as tfmot
        with tfmot.sparsity.keras.prune_scope():
            return keras.models.load_model(path, custom_objects=custom or None, compile=False)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot load Keras model {path}: {exc}") from exc


@subcommand("prune", "prune a saved Keras model with a scheme (optionally fine-tune) and save it")
def _prune_args(p):
    """Loads a .keras/.h5 tf_keras model, wraps its prunable layers with a scheme, optionally
    fine-tunes on a dataset on this machine (its inputs must match the model's), strips the
    wrappers and saves a plain tf_keras model whose weights carry the zeros."""
    p.add_argument("model", type=_existing_file, help="input model (.keras or .h5)")
    p.add_argument("-o", "--output", required=True, help="output model (.keras or .h5)")
    p.add_argument("--scheme", type=_scheme_name, default="block_punched",
                   help=f"pruning scheme ({SCHEME_CHOICES_HINT})")
    p.add_argument("--rate", type=_rate, default=None,
                   help="fraction of weights removed (default 0.875; N:M implies its own)")
    p.add_argument("--epochs", type=_nonneg_int, default=1,
                   help="fine-tuning epochs while the masks reach the rate (default 1; "
                        "0 = one-shot masks, no training)")
    p.add_argument("--dataset", type=_dataset, default="auto",
                   help="data for fine-tuning: auto, fashion_mnist, digits")
    p.add_argument("--keep-wrappers", action="store_true",
                   help="save the wrapped (still prunable) model instead of stripping it")
    return _run_prune


def _run_prune(args) -> int:
    import numpy as np
    model = _load_keras_model(args.model)
    prune = _api("prune")
    callbacks = _api("callbacks")
    strip = _api("strip")
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras
    scheme = _make_scheme(args.scheme, args.rate)
    rate = float(getattr(scheme, "rate", None) or args.rate or DEFAULT_RATE)
    if args.epochs:
        from npas_keras import data
        (x, y), _ = data.load(args.dataset)
        want = tuple(model.input_shape[1:])
        if tuple(x.shape[1:]) != want:
            raise CommandError(f"the model takes inputs of shape {want} but dataset "
                               f"{args.dataset} has {tuple(x.shape[1:])}; use --epochs 0 for "
                               "one-shot pruning without data")
        steps = int(np.ceil(len(x) / 32)) * args.epochs
        schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, rate, 0, max(1, steps * 3 // 4),
                                                        frequency=max(1, steps // 20))
        pruned = prune(model, scheme, schedule=schedule)
        pruned.compile(optimizer=keras.optimizers.Adam(5e-4),
                       loss=keras.losses.SparseCategoricalCrossentropy(
                           from_logits=_outputs_logits(model)), metrics=["accuracy"])
        pruned.fit(x, y, batch_size=32, epochs=args.epochs, callbacks=callbacks(), verbose=2)
    else:
        pruned = prune(model, scheme)  # one-shot: masks by magnitude at the scheme's rate
    out = pruned if args.keep_wrappers else strip(pruned)
    out.save(args.output)
    if _has_api("summary"):
        try:
            _api("summary")(out if not args.keep_wrappers else pruned)
        except Exception as exc:  # noqa: BLE001
            _log(f"summary failed: {exc}")
    print(f"saved {args.output}")
    return 0


def _outputs_logits(model) -> bool:
    act = getattr(model.layers[-1], "activation", None)
    return getattr(act, "__name__", "") != "softmax"


@subcommand("export", "convert a Keras model file to .tflite (standard ops or NPAS custom ops)")
def _export_args(p):
    """Converts a saved tf_keras model (.keras/.h5, pruned or not; pruning wrappers are stripped
    first) to a TFLite flatbuffer: `standard` keeps built-in ops (runs anywhere, the delegate
    can claim them), `npas` rewrites pruned layers into compact NPAS custom ops (needs the
    delegate to run)."""
    p.add_argument("model", type=_existing_file, help="input model (.keras or .h5)")
    p.add_argument("-o", "--output", required=True, help="output .tflite path")
    p.add_argument("--format", choices=("standard", "npas"), default="standard",
                   help="standard built-in ops (default) or npas compact custom ops")
    return _run_export


def _run_export(args) -> int:
    model = _load_keras_model(args.model)
    strip = _api("strip")
    export = _api("export")
    try:
        model = strip(model)
    except Exception as exc:  # noqa: BLE001 - a plain model may not need stripping
        _log(f"strip skipped: {exc}")
    export(model, args.output, format=args.format)
    print(f"wrote {args.output} ({_fmt_size(os.path.getsize(args.output))}, "
          f"format {args.format})")
    return 0


@subcommand("inspect", "list a .tflite model's prunable ops: scheme, block shape, density, bits, bytes")
def _inspect_args(p):
    """Reads a .tflite file and prints one row per weight-bearing op: its scheme (as recorded
    by `npas export`, or guessed from the zeros), block shape, density, weight bits and stored
    bytes."""
    p.add_argument("model", type=_existing_file, help=".tflite file")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON ('-' = stdout)")
    return _run_inspect


def _run_inspect(args) -> int:
    inspect = _api("inspect")
    try:
        rows = list(inspect(args.model))
    except (ValueError, OSError) as exc:
        raise CommandError(f"cannot inspect {args.model}: {exc}") from exc
    if args.json == "-":
        print(json.dumps(rows, indent=2, default=_json_default))
        return 0
    from npas_keras.export import format_inspect
    print(format_inspect(rows))
    print(f"file {os.path.getsize(args.model)} bytes")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2, default=_json_default)
    return 0


# --------------------------------------------------------------------------------------------
# bench / report
# --------------------------------------------------------------------------------------------

@subcommand("bench", "time a .tflite model: stock LiteRT (XNNPACK) vs the npas delegate")
def _bench_args(p):
    """Runs the model on random inputs through stock LiteRT (its default XNNPACK delegate) and
    through LiteRT + the npas delegate, interleaved (A B A B ...) in one process, and reports
    the median ms per invoke, the speed-up and the largest output difference. JSON output
    follows DESIGN.md's benchmark format, ready for `npas report`."""
    p.add_argument("model", type=_existing_file, help=".tflite file")
    p.add_argument("--threads", type=_positive_int, nargs="+", default=[1],
                   help="thread counts to measure (default 1)")
    p.add_argument("--runs", type=_positive_int, default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=_nonneg_int, default=10, help="untimed runs (default 10)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="delegate option (repeatable), e.g. --option verbose=1")
    p.add_argument("--json", metavar="PATH", help="write results as JSON ('-' = stdout)")
    p.add_argument("--name", help="case name in the JSON (default: the file name)")
    p.add_argument("--baseline", type=_existing_file, metavar="FILE",
                   help="standard-ops .tflite for the stock side; needed when MODEL is an "
                        "npas-format file (its custom ops run only with the delegate)")
    return _run_bench


def _random_inputs(model_path: str):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter as LiteRTInterpreter
    try:
        interp = LiteRTInterpreter(model_path=model_path)
        details = interp.get_input_details()
    except (ValueError, RuntimeError) as exc:
        # models with NPAS custom ops: the stock interpreter cannot even be built
        raise CommandError(f"cannot read inputs of {model_path}: {exc}") from exc
    rng = np.random.default_rng(0)
    feeds = []
    for d in details:
        shape = [1 if s < 0 else int(s) for s in d["shape_signature"]] or list(d["shape"])
        if np.issubdtype(d["dtype"], np.floating):
            feeds.append(rng.random(shape).astype(d["dtype"]))
        else:
            info = np.iinfo(d["dtype"])
            feeds.append(rng.integers(max(info.min, -128), min(info.max, 127), shape,
                                      dtype=d["dtype"]))
    return feeds


def _run_bench(args) -> int:
    options = {}
    for item in args.option:
        if "=" not in item:
            raise UsageError(f"--option {item!r} is not KEY=VALUE (e.g. --option verbose=1)")
        k, v = item.split("=", 1)
        options[k] = v
    with open(args.model, "rb") as f:
        content = f.read()
    custom = (_has("npas_keras.runtime", "npas_custom_ops")
              and _api_from("npas_keras.runtime", "npas_custom_ops")(content))
    if custom and not args.baseline:
        raise CommandError(f"{args.model} holds NPAS custom ops, which stock LiteRT cannot run: "
                           "give the standard export of the same model as --baseline FILE, or "
                           "bench the standard export itself (npas export MODEL --format standard)")
    feeds = _random_inputs(args.baseline or args.model)
    inputs = feeds[0] if len(feeds) == 1 else feeds
    scheme, density = None, None
    if _has_api("inspect"):
        try:
            rows = list(_api("inspect")(args.model))
            schemes = {r.get("scheme") for r in rows if r.get("scheme")} - {"dense"}
            scheme = schemes.pop() if len(schemes) == 1 else ("mixed" if schemes else "dense")
            weights = [(r["density"], r.get("dense_bytes") or r.get("stored_bytes") or 1)
                       for r in rows if isinstance(r.get("density"), (int, float))]
            if weights:
                density = sum(d * w for d, w in weights) / sum(w for _, w in weights)
        except Exception as exc:  # noqa: BLE001 - annotations only
            _log(f"inspect failed: {exc}")
    name = args.name or os.path.splitext(os.path.basename(args.model))[0]
    cases = []
    for threads in args.threads:
        _log(f"{name}: {threads} thread(s), {args.runs} runs")
        r = interleaved_latency(args.model, inputs, threads, args.runs, args.warmup,
                                delegate_options=options or None, baseline_path=args.baseline)
        cases.append({"name": name, "model": args.model, "scheme": scheme, "density": density,
                      "threads": threads, "baseline": "xnnpack",
                      "baseline_ms": r.get("baseline_ms"), "npas_ms": r.get("npas_ms"),
                      "speedup": r.get("speedup"), "max_abs_err": r.get("max_abs_err")})
    result = {"benchmark": "npas bench", "machine": _machine(), "cases": cases}
    if args.json == "-":
        print(json.dumps(result, indent=2, default=_json_default))
        return 0
    print(format_table(cases, [("threads", "threads"), ("baseline_ms", "stock ms"),
                               ("npas_ms", "npas ms"), ("speedup", "speed-up"),
                               ("max_abs_err", "max |diff|")]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=_json_default)
        print(f"wrote {args.json}")
    return 0


@subcommand("report", "JSON results (bench, search, inspect, demo) -> PNG plots + one HTML page")
def _report_args(p):
    """Reads JSON files written by `npas bench --json`, `npas demo` (demo.json),
    `npas inspect --json`, benchmarks/ scripts or a search (a list of trials with accuracy and
    latency_ms), and writes PNG figures plus report.html (images embedded) into the output
    directory."""
    p.add_argument("inputs", nargs="*", type=_existing_file, help="JSON result files")
    p.add_argument("-o", "--output", default="npas-report", metavar="DIR",
                   help="output directory (default ./npas-report)")
    p.add_argument("--title", default="npas-keras report", help="page title")
    p.add_argument("--masks", metavar="DIR",
                   help="also draw every pruning scheme's mask on a random matrix to "
                        "DIR/scheme_masks.png (the picture in docs/schemes.md: "
                        "`npas report --masks docs/images`); no JSON inputs needed")
    return _run_report


def _run_report(args) -> int:
    if not args.inputs and not args.masks:
        raise UsageError("JSON result files are required (or --masks DIR alone, to draw the "
                         "scheme masks); run `npas report --help` to see the options")
    if args.masks:
        from npas_keras.report import plot_masks
        from npas_keras.report.masks import MASKS_FILENAME
        os.makedirs(args.masks, exist_ok=True)
        result = plot_masks(os.path.join(args.masks, MASKS_FILENAME))
        print(f"wrote {result['path']}")
        if not args.inputs:
            return 0
    from npas_keras.report import build_report
    bar = Progress(len(args.inputs), "report")

    def progress(i, n):
        if i:
            bar.update()
    try:
        result = build_report(args.inputs, args.output, title=args.title, progress=progress)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        bar.close()
    for path, reason in result["skipped"]:
        _log(f"skipped {path}: {reason}")
    for image in result["images"]:
        print(f"wrote {image}")
    print(f"wrote {result['html']}")
    return 0


# --------------------------------------------------------------------------------------------
# subcommands provided by other parts (registered only when their module exists)
# --------------------------------------------------------------------------------------------

@subcommand("latency", "per-layer latency table through the delegate: table, show, validate",
            requires="npas_keras.latency.cli")
def _latency_args(p):
    """Fills, shows and validates this machine's per-layer latency table, measured through the
    npas delegate (see npas_keras.latency). `npas latency ACTION --help` for each action."""
    from npas_keras.latency.cli import add_arguments
    return add_arguments(p)


@subcommand("search", "joint architecture + per-layer pruning search (NPASTuner) on a dataset",
            requires="npas_keras.tuner")
def _search_args(p):
    """Searches a small CNN's width, one operator slot and each layer's pruning scheme / rate
    with npas_keras.tuner.NPASTuner on a dataset on this machine, under a latency budget
    measured on this machine (through the npas delegate when it is built). A dense model is
    trained first; every trial inherits its weights, is pruned one-shot and fine-tuned briefly.
    With --weight-bits the trials are int8 models (latency measured on their int8 export) and,
    with "8,4", each layer's weight width (8 or 4 bits) is searched with its pruning, under a
    BOPs budget (--bops-reduction).
    Writes DIR/search.json (one row per trial: accuracy, latency_ms, feasible; ready for
    `npas report DIR/search.json`) and the best feasible model as DIR/best.tflite."""
    p.add_argument("--dataset", type=_dataset, default="auto",
                   help="auto (Fashion-MNIST if installed, else digits), fashion_mnist, digits")
    p.add_argument("--trials", type=_positive_int, default=10, help="trials (default 10)")
    p.add_argument("--epochs", type=_positive_int, default=1,
                   help="epochs of dense training and of each trial's fine-tune (default 1)")
    p.add_argument("--budget-ms", type=float, default=None, metavar="MS",
                   help="latency budget per batch-1 inference (default: --budget-fraction of "
                        "the measured dense model's latency)")
    p.add_argument("--budget-fraction", type=float, default=0.5, metavar="F",
                   help="budget as a fraction of the dense latency when --budget-ms is not "
                        "given (default 0.5)")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="inference threads for latency measurements (default 1)")
    p.add_argument("--train-samples", type=_positive_int, default=None, metavar="N",
                   help="use only the first N training images (default: all)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="batch size (default 64)")
    p.add_argument("--latency-table", metavar="PATH", default=None,
                   help="latency cache JSON (default: the shared per-machine cache)")
    p.add_argument("--weight-bits", type=_weight_bits, default=None, metavar="BITS",
                   help="search int8 models with these weight widths: 8, 4 or 8,4 (per-layer "
                        "widths searched; trained on their grids by bits_qat; default: float32)")
    p.add_argument("--bops-reduction", type=float, default=None, metavar="R",
                   help="with --weight-bits: BOPs budget = the dense float32 model's BOPs / R "
                        "(e.g. 64)")
    p.add_argument("--power-of-two", action="store_true",
                   help="with --weight-bits: power-of-two quantization steps (DJPQ), kept by "
                        "the int8 export")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument("--out", metavar="DIR", default="npas-search-out",
                   help="output directory: search.json, best.tflite, tuner state "
                        "(default ./npas-search-out)")
    return _run_search


def _run_search(args) -> int:
    from npas_keras import data

    if args.budget_ms is not None and not args.budget_ms > 0:
        raise UsageError(f"--budget-ms must be positive, got {args.budget_ms}")
    if not 0 < args.budget_fraction:
        raise UsageError(f"--budget-fraction must be positive, got {args.budget_fraction}")
    if args.bops_reduction is not None and not (args.weight_bits and args.bops_reduction > 0):
        raise UsageError("--bops-reduction needs --weight-bits and must be positive")
    if args.power_of_two and not args.weight_bits:
        raise UsageError("--power-of-two needs --weight-bits")
    dataset = data.default_dataset_name() if args.dataset == "auto" else args.dataset
    (x, y), (xt, yt) = data.load(dataset)
    if args.train_samples:
        x, y = x[:args.train_samples], y[:args.train_samples]
    os.makedirs(args.out, exist_ok=True)
    _log(f"dataset {dataset}: {len(x)} train / {len(xt)} validation images {x.shape[1:]}; "
         f"{args.trials} trial(s), {args.epochs} epoch(s) each")

    import tensorflow as tf
    import tf_keras as keras
    from keras_tuner import HyperParameters
    NPASTuner = _api_from("npas_keras.tuner", "NPASTuner")
    search_cnn = _api_from("npas_keras.tuner", "search_cnn")
    from npas_keras.latency import LatencyTable, delegate_available
    tf.random.set_seed(args.seed)
    keras.utils.set_random_seed(args.seed)

    build = search_cnn(x.shape[1:], int(max(y.max(), yt.max())) + 1)
    dense = build(HyperParameters())
    _log(f"training the dense model ({dense.count_params()} parameters) for {args.epochs} "
         "epoch(s)")
    dense.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
    dense_acc = float(dense.evaluate(xt, yt, verbose=0)[1])
    table = LatencyTable(path=args.latency_table, threads=args.threads,
                         dtype="int8" if args.weight_bits else "float32")
    runtime = "npas delegate" if delegate_available() else "stock LiteRT (delegate not built)"
    dense_ms = float(table.measure_model(dense))
    budget = args.budget_ms if args.budget_ms is not None else args.budget_fraction * dense_ms
    bops_budget = None
    if args.bops_reduction:
        from npas_keras.quantization import bops
        bops_budget = bops(dense, 32)["total"] / args.bops_reduction
    _log(f"dense model: accuracy {dense_acc:.4f}, {dense_ms:.4f} ms ({table.dtype}, {runtime}, "
         f"{args.threads} thread(s)); budget {budget:.4f} ms"
         + ("" if bops_budget is None else f", {bops_budget:.4g} BOPs"))

    class _ProgressTuner(NPASTuner):
        def on_trial_begin(self, trial):
            super().on_trial_begin(trial)
            self._t0 = time.perf_counter()

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            m = trial.metrics
            get = (lambda k: m.get_last_value(k) if m.exists(k) else None)
            acc, lat, ops = get("val_accuracy"), get("latency_ms"), get("bops")
            done = len(self.oracle.trials)
            _log(f"trial {done}/{args.trials} ({trial.trial_id}): "
                 f"val_accuracy {'-' if acc is None else f'{acc:.4f}'}, latency "
                 f"{'-' if lat is None else f'{lat:.4f}'} ms, "
                 + ("" if ops is None else f"{ops:.4g} BOPs, ")
                 + f"{'feasible' if self._trial_feasible(trial) else 'over budget'}, "
                 f"{time.perf_counter() - getattr(self, '_t0', time.perf_counter()):.1f}s")

    tuner = _ProgressTuner(build, objective="val_accuracy", latency_budget_ms=budget,
                           max_trials=args.trials, pretrained=dense,
                           fine_tune_epochs=args.epochs, batch_size=args.batch_size,
                           latency_table=table, threads=args.threads, seed=args.seed,
                           directory=args.out, project_name="tuner", overwrite=True,
                           weight_bits=args.weight_bits, bops_budget=bops_budget,
                           power_of_two=args.power_of_two,
                           oracle_kwargs={"pool_size": 16, "gp_restarts": 0})
    tuner.search(x, y, validation_data=(xt, yt), verbose=0)

    trials = []
    by_id = dict(tuner.oracle.trials)
    for r in tuner.results():
        t = by_id.get(r["trial_id"])
        density = (t.metrics.get_last_value("density")
                   if t is not None and t.metrics.exists("density") else None)
        trials.append({"name": f"trial {r['trial_id']}", "trial_id": r["trial_id"],
                       "accuracy": r["score"], "latency_ms": r["latency_ms"],
                       "bops": r["bops"], "feasible": bool(r["feasible"]), "density": density,
                       "status": str(r["status"]), "values": r["values"]})
    best_trials = tuner.get_best_trials(1)
    feasible = bool(best_trials)
    if not best_trials:
        best_trials = tuner.get_best_trials(1, feasible_only=False)
    best = None
    if best_trials:
        trial = best_trials[0]
        model = tuner.load_model(trial)
        best_path = os.path.join(args.out, "best.tflite")
        bits = tuner.load_bits(trial)
        if bits is None:
            _api("export")(model, best_path, format="standard")
        else:
            _api("export")(model, best_path, format="standard", quantize="int8",
                           representative_data=x[:200], weight_bits=bits)
        mapping = tuner.load_mapping(trial)
        best = {"trial_id": trial.trial_id, "accuracy": trial.score, "feasible": feasible,
                "latency_ms": next((r["latency_ms"] for r in trials
                                    if r["trial_id"] == trial.trial_id), None),
                "file": best_path, "size_bytes": os.path.getsize(best_path),
                "values": dict(trial.hyperparameters.values), "weight_bits": bits,
                "mapping": {k: (None if v is None else v.to_json()) for k, v in mapping.items()}}
        if not feasible:
            _log("no trial met the latency budget; best.tflite is the most accurate one")
    result = {"kind": "npas-search", "dataset": dataset, "train_samples": int(len(x)),
              "validation_samples": int(len(xt)), "epochs": args.epochs,
              "threads": args.threads, "runtime": runtime, "budget_ms": budget,
              "dtype": table.dtype, "bops_budget": bops_budget,
              "power_of_two": bool(args.power_of_two),
              "dense_latency_ms": dense_ms, "dense_accuracy": dense_acc, "trials": trials,
              "best": best, "machine": _machine()}
    out_json = os.path.join(args.out, "search.json")
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2, default=_json_default)
    print(format_table([dict(r, feasible="yes" if r["feasible"] else "no") for r in trials],
                       [("trial_id", "trial"), ("accuracy", "val accuracy"),
                        ("latency_ms", "latency ms"), ("density", "density"),
                        ("feasible", "within budget")]))
    print(f"dense: accuracy {dense_acc:.4f}, latency {dense_ms:.4f} ms; budget {budget:.4f} ms")
    if best:
        print(f"best: trial {best['trial_id']}, accuracy {best['accuracy']:.4f}, latency "
              f"{best['latency_ms']:.4f} ms -> {best['file']}")
    print(f"results: {out_json}  (make a report: npas report {out_json} -o {args.out}/report)")
    return 0


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from npas_keras import __version__
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show Python tracebacks and TensorFlow logs on errors")
    parser = _Parser(prog=PROG, parents=[common],
                     description="npas-keras: fine-grained structured pruning for tf_keras and a "
                                 "sparse TFLite delegate. Run `npas demo` for the end-to-end "
                                 "example, `npas COMMAND --help` for any command.")
    parser.add_argument("--version", action="version", version=f"npas-keras {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in available_commands():
        sp = subs.add_parser(cmd.name, help=cmd.help, parents=[common],
                             description=cmd.description or cmd.help,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(_run=cmd.add_arguments(sp), _parser=sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        print(f"\n{PROG}: error: choose a command (e.g. `{PROG} demo`)", file=sys.stderr)
        return 2
    _quiet_tensorflow(debug)
    try:
        code = args._run(args)
        return int(code or 0)
    except UsageError as exc:
        args._parser.print_usage(sys.stderr)
        print(f"{args._parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: one line unless --debug
        if debug:
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, (CommandError, FileNotFoundError)):
            msg = f"{type(exc).__name__}: {msg}"
        if len(msg) > 400:
            msg = msg[:400] + "..."
        print(f"{PROG}: error: {msg} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
