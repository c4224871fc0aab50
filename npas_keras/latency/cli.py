"""`npas latency ...`: fill, show and validate the per-machine latency table.

    npas latency table --kind conv2d --input-shape 28,28,64 --units 64 --kernel 3 \
        --schemes pattern,bcr --densities 0.1,0.25,0.5 [--threads 1] [--cache PATH]
    npas latency table --model model.keras --schemes bcr --densities 0.25
    npas latency show [--threads 1] [--cache PATH]
    npas latency validate model.keras [--rate 0.8 --mapping rules|dense]

Register with `add_latency_subcommand(subparsers)` (an argparse subparsers object), or with the
`npas` CLI's decorator through `add_arguments(parser) -> run function`.
"""
import json
import sys


def _ints(text):
    try:
        return tuple(int(t) for t in str(text).split(",") if t.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text):
    try:
        return [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None


def add_arguments(parser):
    """Adds the `latency` actions to `parser`; returns the function(args) that runs them."""
    actions = parser.add_subparsers(dest="latency_action", metavar="ACTION")
    actions.required = True

    def common(p):
        p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
        p.add_argument("--cache", default=None,
                       help="latency cache JSON (default ~/.cache/npas_keras/latency.json)")
        p.add_argument("--runs", type=int, default=50, help="timed invokes per entry (median)")
        p.add_argument("--warmup", type=int, default=5)

    t = actions.add_parser("table", help="measure layers into the cache (progress on stderr)")
    common(t)
    t.add_argument("--model", default=None, help="take the layer specs from a saved Keras model")
    t.add_argument("--kind", default="conv2d", choices=["dense", "conv2d", "depthwise_conv2d"])
    t.add_argument("--input-shape", default="28,28,64", help="e.g. 28,28,64 or 512 (dense)")
    t.add_argument("--units", type=int, default=64, help="units / filters / depth multiplier")
    t.add_argument("--kernel", type=int, default=3)
    t.add_argument("--stride", type=int, default=1)
    t.add_argument("--schemes", default="bcr,block_punched,pattern")
    t.add_argument("--densities", default="0.1,0.25,0.5")
    t.add_argument("--no-progress", action="store_true")

    s = actions.add_parser("show", help="print this machine's cached entries")
    common(s)
    s.add_argument("--json", action="store_true")

    v = actions.add_parser("validate", help="predicted vs measured latency of a saved model")
    common(v)
    v.add_argument("model", help="a saved tf_keras model (.keras / .h5 / SavedModel dir)")
    v.add_argument("--mapping", default="dense", choices=["dense", "rules"],
                   help="schemes to predict with: all dense, or map_schemes' rules (the model "
                        "is pruned by them before measuring)")
    v.add_argument("--rate", type=float, default=0.8)
    return run


def add_latency_subcommand(subparsers):
    """Registers `latency` on an argparse subparsers object (sets defaults func=run)."""
    parser = subparsers.add_parser("latency", help="per-layer latency table through the delegate",
                                   description=__doc__.split("\n\n")[0])
    fn = add_arguments(parser)
    parser.set_defaults(func=fn)
    return parser


def _table(args, **kw):
    from npas_keras.latency.table import LatencyTable

    return LatencyTable(path=args.cache, threads=args.threads, runs=args.runs,
                        warmup=args.warmup, **kw)


def _load_model(path):
    import tf_keras as keras

    return keras.models.load_model(path, compile=False)


def run(args):
    action = args.latency_action
    if action == "table":
        return _run_table(args)
    if action == "show":
        return _run_show(args)
    if action == "validate":
        return _run_validate(args)
    raise ValueError(f"unknown latency action {action!r}")


def _run_table(args):
    from npas_keras.latency.predictor import model_layer_specs
    from npas_keras.latency.specs import LayerSpec
    from npas_keras.latency.table import build_table

    if args.model:
        specs = [spec for _, spec in model_layer_specs(_load_model(args.model))]
    else:
        k = args.kernel if args.kind != "dense" else 1
        specs = [LayerSpec(args.kind, _ints(args.input_shape), args.units, (k, k),
                           (args.stride, args.stride))]
    schemes = [s for s in args.schemes.split(",") if s.strip()]
    table = build_table(specs, schemes, _floats(args.densities), progress=not args.no_progress,
                        table=_table(args))
    print(f"{len(table.entries())} entries for {table.machine} in {table.path}")
    return 0


def _run_show(args):
    table = _table(args)
    entries = table.entries()
    if args.json:
        print(json.dumps({"machine": table.machine, "overhead_ms":
                          table._section().get("overhead_ms"), "entries": entries}, indent=1))
        return 0
    print(f"machine: {table.machine}\ncache: {table.path}\nentries: {len(entries)}")
    for key, ms in sorted(entries.items()):
        spec, scheme = key.split("|", 1)
        print(f"{ms:10.4f} ms  {spec}  {scheme}")
    return 0


def _run_validate(args):
    from npas_keras.latency.predictor import validate
    from npas_keras.latency.specs import prune_layer_weights

    model = _load_model(args.model)
    table = _table(args)
    mapping = None
    if args.mapping == "rules":
        from npas_keras.mapping import map_schemes

        mapping = map_schemes(model, args.rate, table)
        by_name = {layer.name: layer for layer in model.layers}
        for name, scheme in mapping.items():
            if scheme is not None:
                prune_layer_weights(by_name[name], scheme)
    out = validate(model, table, mapping, details=True)
    sys.stdout.write(f"predicted {out['predicted_ms']:.4f} ms, measured "
                     f"{out['measured_ms']:.4f} ms, relative error "
                     f"{100 * out['relative_error']:.1f}% ({out['machine']})\n")
    return 0
