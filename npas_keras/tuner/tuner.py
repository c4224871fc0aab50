"""NPASTuner: KerasTuner search over architecture and per-layer pruning, with fast evaluation.

A trial: build the (dense) candidate from the user's build function, inherit weights from a
pre-trained dense model when given, prune it one-shot with the trial's per-layer schemes
(npas_keras.prune with a {layer: Scheme | None} mapping), fine-tune briefly with
npas_keras.callbacks() holding the masks, strip it (npas_keras.strip, shrink=False), then report
the objective, the *measured* latency of the exported TFLite model and whether it fits the
budget. The model kept for each trial is a plain tf_keras model whose kernels carry the scheme's
zeros, ready for npas_keras.strip / npas_keras.export.

It subclasses keras_tuner's BaseTuner (the base of keras_tuner.Tuner): keras_tuner.Tuner itself
is tied to the Keras 3 package installed alongside, while npas-keras models are tf_keras.
"""
import itertools
import json
import os

import numpy as np
from keras_tuner.src.engine import base_tuner
from keras_tuner.src.engine import hypermodel as hm_module
from keras_tuner.src.engine import trial as trial_module

from npas_keras.latency.predictor import model_layer_specs
from npas_keras.latency.specs import unwrap
from npas_keras.tuner.oracle import LATENCY_METRIC, NPASOracle
from npas_keras.tuner.space import discrete_values

DEFAULT_SCHEMES = ("dense", "block_punched", "bcr", "pattern")
DEFAULT_RATES = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
DEFAULT_BLOCKS = ("4x16", "8x16", "16x16")
# rule_seeds() tries every architecture of the space up to this many combinations.
MAX_SEED_ARCHITECTURES = 12


def scheme_hp_name(layer_name, spec, prefix="scheme"):
    if spec.kind == "dense":
        return f"{prefix}:{layer_name}"
    kh, kw = spec.kernel_size
    return f"{prefix}:{layer_name}:{kh}x{kw}"


def rate_hp_name(layer_name, spec):
    return scheme_hp_name(layer_name, spec, "rate")


def bits_hp_name(layer_name, spec):
    return scheme_hp_name(layer_name, spec, "bits")


def _is_pruning_hp(name):
    """True for the hps NPASHyperModel adds (block, rate, scheme:*, rate:*, bits:*)."""
    return name in ("block", "rate") or name.split(":", 1)[0] in ("scheme", "rate", "bits")


def _parse_block(text):
    r, c = str(text).lower().split("x")
    return int(r), int(c)


class NPASHyperModel(hm_module.HyperModel):
    """Wraps a user build function (hp -> dense tf_keras model) and adds the pruning space:

    'block' (Choice over `block_shapes`, 'RxC' strings) and, per prunable layer with at least
    `min_params` weights, 'scheme:<layer>[:<kh>x<kw>]' over the schemes that apply to its kind
    ('pattern' only for 3x3 convolutions; depthwise layers stay dense) and its pruning rate
    'rate:<layer>[:<kh>x<kw>]' (Choice over `rates`, active when the scheme is not 'dense'), or
    one global 'rate' with per_layer_rates=False. With `weight_bits` (bit widths, e.g. (8, 4):
    the models are int8 and each layer's weights take one of these widths) and more than one
    width, every such layer also gets 'bits:<layer>[:<kh>x<kw>]' (Choice, default the widest),
    so mixed precision is searched jointly with the pruning. The user's own hps (operators,
    widths, anything) stay in the space as declared.
    """

    def __init__(self, build_fn, schemes=DEFAULT_SCHEMES, rates=DEFAULT_RATES,
                 block_shapes=DEFAULT_BLOCKS, min_params=256, per_layer_rates=True, name=None,
                 tunable=True, weight_bits=None):
        super().__init__(name=name, tunable=tunable)
        if weight_bits is not None:
            weight_bits = tuple(sorted({int(b) for b in weight_bits}, reverse=True))
            if not weight_bits or any(b not in (4, 8) for b in weight_bits):
                raise ValueError(f"weight_bits must be a non-empty subset of (8, 4) (the widths "
                                 f"the int8 export stores), got {weight_bits!r}")
        self.weight_bits = weight_bits
        self.per_layer_rates = bool(per_layer_rates)
        if not callable(build_fn) and not hasattr(build_fn, "build"):
            raise TypeError("build_fn must be a callable hp -> tf_keras model or a HyperModel")
        self.build_fn = build_fn
        self.schemes = tuple(schemes)
        self.rates = tuple(float(r) for r in rates)
        self.block_shapes = tuple(block_shapes)
        self.min_params = int(min_params)
        for r in self.rates:
            if not 0.0 < r < 1.0:
                raise ValueError(f"rates must be strictly between 0 and 1, got {r}")

    def build_dense(self, hp):
        import tf_keras as keras

        from npas_keras.compat import check_model

        keras.backend.clear_session()  # deterministic layer names across builds
        build = self.build_fn.build if hasattr(self.build_fn, "build") else self.build_fn
        return check_model(build(hp), "build_fn's result")

    def allowed_schemes(self, spec):
        if spec.kind == "depthwise_conv2d" or spec.num_params() < self.min_params:
            return ["dense"]
        out = []
        for s in self.schemes:
            if s == "pattern" and not (spec.kind == "conv2d" and spec.kernel_size == (3, 3)):
                continue
            out.append(s)
        return out or ["dense"]

    def _default_rate(self):
        return self.rates[len(self.rates) // 2]

    def declare(self, hp, model):
        if len(self.rates) > 1 and not self.per_layer_rates:
            hp.Choice("rate", list(self.rates), default=self._default_rate())
        if len(self.block_shapes) > 1 and any(s in ("block_punched", "bcr") for s in self.schemes):
            hp.Choice("block", list(self.block_shapes), default=self.block_shapes[-1])
        for name, spec in model_layer_specs(model):
            allowed = self.allowed_schemes(spec)
            if len(allowed) > 1:
                default = allowed[1] if allowed[0] == "dense" else allowed[0]
                hp.Choice(scheme_hp_name(name, spec), allowed, default=default)
                if len(self.rates) > 1 and self.per_layer_rates:
                    with hp.conditional_scope(scheme_hp_name(name, spec),
                                              [a for a in allowed if a != "dense"]):
                        hp.Choice(rate_hp_name(name, spec), list(self.rates),
                                  default=self._default_rate())
            if self.weight_bits is not None and len(self.weight_bits) > 1:
                hp.Choice(bits_hp_name(name, spec), list(self.weight_bits),
                          default=self.weight_bits[0])

    def build(self, hp):
        model = self.build_dense(hp)
        self.declare(hp, model)
        return model

    def mapping(self, model, values):
        """{layer name: Scheme | None} from a trial's hp values for this (built) model."""
        from npas_keras.schemes import Scheme

        global_rate = float(values.get("rate", self._default_rate()))
        block = _parse_block(values.get("block", self.block_shapes[-1]))
        out = {}
        for name, spec in model_layer_specs(model):
            rate = float(values.get(rate_hp_name(name, spec), global_rate))
            allowed = self.allowed_schemes(spec)
            choice = values.get(scheme_hp_name(name, spec),
                                "dense" if len(allowed) == 1 else
                                (allowed[1] if allowed[0] == "dense" else allowed[0]))
            if choice not in allowed and allowed == ["dense"]:
                choice = "dense"  # too small at this width (the hp was declared at another)
            if choice not in allowed:
                raise ValueError(f"scheme {choice!r} does not apply to layer {name!r} "
                                 f"({spec.kind} {spec.kernel_size})")
            if choice == "dense":
                out[name] = None
            elif choice in ("block_punched", "bcr"):
                rows, red = spec.matrix_shape()
                out[name] = Scheme(choice, rate=rate,
                                   block_shape=(min(block[0], rows), min(block[1], red)))
            else:
                out[name] = Scheme(choice, rate=rate)
        return out

    def bits(self, model, values):
        """{layer name: weight bits} from a trial's hp values for this (built) model; None when
        the space is float32 (no `weight_bits`)."""
        if self.weight_bits is None:
            return None
        return {name: int(values.get(bits_hp_name(name, spec), self.weight_bits[0]))
                for name, spec in model_layer_specs(model)}

    def values_for_mapping(self, model, mapping, base=None):
        """The hp values closest to `mapping` ({layer: Scheme | None}, e.g. from
        npas_keras.mapping.map_schemes) on `model`, from `base` values: each layer's scheme and
        rate, and one block shape (the largest pruned layer's, as the space has one). None when
        the space cannot express it (a scheme or rate it does not offer)."""
        values = dict(base or {})
        block, block_size, rates = None, -1, set()
        for name, spec in model_layer_specs(model):
            scheme = mapping.get(name)
            allowed = self.allowed_schemes(spec)
            choice = "dense" if scheme is None else scheme.name
            if choice not in allowed:
                return None
            if len(allowed) > 1:
                values[scheme_hp_name(name, spec)] = choice
            if scheme is None:
                continue
            rate = min(self.rates, key=lambda r: abs(r - float(scheme.rate)))
            if abs(rate - float(scheme.rate)) > 1e-6:
                return None
            rates.add(rate)
            if self.per_layer_rates:
                values[rate_hp_name(name, spec)] = rate
            bs = getattr(scheme, "block_shape", None)
            if (choice in ("block_punched", "bcr") and bs is not None
                    and spec.num_params() > block_size):
                rows, red = spec.matrix_shape()
                block_size = spec.num_params()
                block = next((b for b in self.block_shapes if tuple(min(x, m) for x, m in zip(
                    _parse_block(b), (rows, red))) == tuple(bs)), None)
        if not self.per_layer_rates and len(rates) > 1:
            return None
        if block is not None and len(self.block_shapes) > 1:
            values["block"] = block
        if rates and not self.per_layer_rates and len(self.rates) > 1:
            values["rate"] = rates.pop()
        return values


def _l1_top(kernel, k, out_axis):
    """Indices (ascending) of the `k` output units of `kernel` with the largest L1 norm."""
    axes = tuple(a for a in range(kernel.ndim) if a != out_axis % kernel.ndim)
    norms = np.abs(kernel).sum(axis=axes)
    return np.sort(np.argsort(-norms, kind="stable")[:k])


def _expand(prev, s_in, d_in):
    """Source input indices for a layer fed by the last inherited layer: `prev` = (its source
    width, kept source indices); a Flatten in between repeats them per spatial position."""
    if prev is None:
        return None
    c_s, idx = prev
    if s_in == c_s and d_in == len(idx):
        return idx
    if c_s and s_in % c_s == 0 and d_in == (s_in // c_s) * len(idx):
        return (np.arange(s_in // c_s)[:, None] * c_s + idx[None, :]).reshape(-1)
    return None


def inherit_weights(source, target):
    """Copies weights from a pre-trained dense `source` into `target`, layer by layer.

    Layers are paired by class and order of appearance. Where the target is narrower (width
    multiplier < 1) a Dense / Conv2D layer keeps the source's output units with the largest L1
    norm (as L1 filter pruning / network slimming do), and the next layer keeps the matching
    input channels (through a Flatten too; a depthwise or batch-norm layer keeps the channels of
    the layer before it), so the narrow model starts from the dense one's strongest filters, not
    from its first ones. Other weights copy their leading slice where shapes differ. Returns the
    number of layers that inherited."""
    import tf_keras as keras

    layers_ = keras.layers

    def weighted(model):
        out = {}
        for layer in model.layers:
            layer = unwrap(layer)
            if layer.weights:
                out.setdefault(type(layer).__name__, []).append(layer)
        return out

    src = weighted(source)
    seen, count, prev = {}, 0, None
    for layer in (unwrap(lr) for lr in target.layers):
        if not layer.weights:
            continue
        cls = type(layer).__name__
        i = seen[cls] = seen.get(cls, -1) + 1
        if cls not in src or i >= len(src[cls]):
            prev = None if isinstance(layer, (layers_.Dense, layers_.Conv2D)) else prev
            continue
        s_w, d_w = src[cls][i].get_weights(), layer.get_weights()
        if len(s_w) != len(d_w) or any(s.ndim != d.ndim for s, d in zip(s_w, d_w)):
            prev = None
            continue
        per_channel = isinstance(layer, (layers_.DepthwiseConv2D, layers_.BatchNormalization))
        core = isinstance(layer, (layers_.Dense, layers_.Conv2D)) and not per_channel
        kernel = s_w[0]
        in_idx = out_idx = None
        if core:
            in_axis = kernel.ndim - 2
            in_idx = _expand(prev, kernel.shape[in_axis], d_w[0].shape[in_axis])
            if d_w[0].shape[-1] < kernel.shape[-1]:
                out_idx = _l1_top(kernel, d_w[0].shape[-1], -1)
            else:
                out_idx = np.arange(kernel.shape[-1])
        elif per_channel and prev is not None:
            c_axis = 2 if isinstance(layer, layers_.DepthwiseConv2D) else 0
            in_idx = _expand(prev, kernel.shape[c_axis], d_w[0].shape[c_axis])
        new = []
        for s, d in zip(s_w, d_w):
            ix = [np.arange(min(a, b)) for a, b in zip(s.shape, d.shape)]
            if core and s.ndim == kernel.ndim:
                if in_idx is not None:
                    ix[-2] = in_idx
                ix[-1] = out_idx[: d.shape[-1]]
            elif core and s.ndim == 1:
                ix[0] = out_idx[: d.shape[0]]
            elif per_channel and in_idx is not None:
                ix[2 if s.ndim == 4 else 0] = in_idx
            ix = [a[: n] for a, n in zip(ix, d.shape)]
            out = d.copy()
            out[tuple(slice(0, len(a)) for a in ix)] = s[np.ix_(*ix)]
            new.append(out)
        layer.set_weights(new)
        count += 1
        if core:
            prev = (kernel.shape[-1], out_idx[: d_w[0].shape[-1]])
    return count


def pruned_for_fine_tune(model, mapping):
    """npas_keras.prune(model, mapping) (one-shot magnitude masks, kept fixed by
    npas_keras.callbacks() during fit), compiled with `model`'s loss / metrics / optimizer config,
    or the tuner's default (Adam 1e-3, sparse categorical cross-entropy, accuracy) when `model`
    is not compiled. Returns `model` itself (compiled) when the mapping prunes no layer."""
    import npas_keras

    compiled = model.optimizer is not None and getattr(model, "compiled_loss", None)
    args = _compile_args(model)
    if not any(s is not None for s in mapping.values()):
        if not compiled:
            model.compile(**args)
        return model
    pruned = npas_keras.prune(model, mapping, verbose=False)
    pruned.compile(**args)
    return pruned


def predicted_bops(model, mapping, bits):
    """BOPs per sample (activations 8 bits, `quantization.bops`) of `model` (built, dense) once
    pruned by `mapping` at weight `bits` ({layer: bits}): the model's prunable weights are
    zeroed here in place by the schemes' masks, so the count is the trial's own, less any
    weights that later round to 0 at 4 bits (never more)."""
    from npas_keras.latency.specs import prune_layer_weights
    from npas_keras.quantization.bops import bops

    by_name = {layer.name: layer for layer in model.layers}
    for name, scheme in mapping.items():
        if scheme is not None:
            prune_layer_weights(by_name[name], scheme)
    return float(bops(model, bits)["total"])


def _compile_args(model):
    """`model`'s compile arguments with a fresh optimizer of the same config, or the tuner's
    default (Adam 1e-3, sparse categorical cross-entropy, accuracy) when it is not compiled."""
    import tf_keras as keras

    if model.optimizer is not None and getattr(model, "compiled_loss", None):
        args = model._get_compile_args()
        opt = model.optimizer
        args["optimizer"] = type(opt).from_config(opt.get_config())
        return args
    return {"optimizer": keras.optimizers.Adam(1e-3),
            "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}


def _last(trial, metric):
    """A trial's last value of `metric`, or None."""
    return trial.metrics.get_last_value(metric) if trial.metrics.exists(metric) else None


def _density(model, names):
    """Fraction of nonzero entries in the prunable weights of the layers `names`."""
    from npas_keras.layers.views import prunable_weights

    by_name = {layer.name: layer for layer in model.layers}
    total = kept = 0
    for name in names:
        for view in prunable_weights(unwrap(by_name[name])):
            w = view.variable.numpy()
            total += w.size
            kept += int(np.count_nonzero(w))
    return kept / max(total, 1)


class NPASTuner(base_tuner.BaseTuner):
    """Joint architecture + per-layer pruning search under a latency budget.

    Args:
        hypermodel: the user's build function (hp -> dense tf_keras model, compiled or not) or a
            keras_tuner HyperModel. Use npas_keras.tuner.width / operator for searched widths
            and operators; any other hp the function declares is searched too.
        objective: metric to optimize (e.g. 'val_accuracy').
        latency_budget_ms: candidates predicted over it are never trained; trials measured over
            it are reported infeasible (metric 'feasible' = 0) and ranked after feasible ones.
        max_trials: number of trials.
        pretrained: optional pre-trained dense model to inherit weights from (fast evaluation).
        fine_tune_epochs, batch_size: the short fine-tune after the one-shot prune.
        latency_fn: callable(tflite bytes) -> ms measuring each trial's model. Default: the
            latency table's measure function (the npas delegate when built).
        latency_predictor: callable(model, mapping) -> ms for the oracle's filter. Default:
            latency.TablePredictor(latency_table).
        latency_table: a LatencyTable (default: LatencyTable(threads=threads)).
        oracle: another keras_tuner Oracle (e.g. RandomSearchOracle, for comparisons); default a
            NPASOracle built from `oracle_kwargs`.
        schemes, rates, block_shapes, min_params, per_layer_rates: the pruning search space
            (NPASHyperModel).
        initial_values: hp value dicts the NPASOracle tries first.
        seed_rules: also seed the NPASOracle with `rule_seeds()` (per architecture, the dense
            model or the rule-based mapping at the lowest rate predicted within the budget; the
            least pruned first, as many as the oracle's num_initial_points), so the search
            starts where the rules are.
        weight_bits: None (float32 models) or the weight bit widths to search, e.g. (8, 4):
            trials are then int8 models (`export(..., quantize="int8", weight_bits=...)`),
            their latency is measured on that int8 file and predicted from an int8 latency
            table, and with two widths each layer's width is one more hp ('bits:<layer>'),
            searched jointly with the schemes and rates. (8,) searches pruning for int8.
        bops_budget: with weight_bits, the most BOPs per sample (`quantization.bops`,
            activations 8 bits) a trial may have: counted exactly before training (the model
            pruned by the candidate's masks), so the NPASOracle never proposes a candidate over
            it; trials report it as metric 'bops'.
        qat_epochs: with weight_bits, epochs of fine-tuning on the chosen grids
            (`quantization.bits_qat`) after the pruning fine-tune; 0 rounds the weights
            post-training (`quantization.apply_bits`) instead.
        representative_data: inputs that calibrate the int8 export (default: the first 200
            training inputs given to `search`).
        power_of_two: with weight_bits, put every layer on power-of-two quantization steps
            (DJPQ's restricted scales; `bits_qat` / `apply_bits` / `select_bits` with
            power_of_two=True); the int8 export keeps them at 4 and 8 bits.
    """

    def __init__(self, hypermodel, objective="val_accuracy", latency_budget_ms=None,
                 max_trials=10, pretrained=None, fine_tune_epochs=1, batch_size=32,
                 latency_fn=None, latency_predictor=None, latency_table=None, threads=1,
                 oracle=None, oracle_kwargs=None, schemes=DEFAULT_SCHEMES, rates=DEFAULT_RATES,
                 block_shapes=DEFAULT_BLOCKS, min_params=256, per_layer_rates=True,
                 initial_values=None, seed_rules=True, seed=None, directory=None,
                 project_name=None, overwrite=False, verbose=0, weight_bits=None,
                 bops_budget=None, qat_epochs=1, representative_data=None, power_of_two=False,
                 **kwargs):
        hm = hypermodel if isinstance(hypermodel, NPASHyperModel) else NPASHyperModel(
            hypermodel, schemes=schemes, rates=rates, block_shapes=block_shapes,
            min_params=min_params, per_layer_rates=per_layer_rates, weight_bits=weight_bits)
        quantized = hm.weight_bits is not None
        if bops_budget is not None and not (quantized and bops_budget > 0):
            raise ValueError("bops_budget needs weight_bits (an int8 search) and must be "
                             f"positive, got {bops_budget!r}")
        if int(qat_epochs) < 0:
            raise ValueError(f"qat_epochs must be >= 0, got {qat_epochs!r}")
        if power_of_two and not quantized:
            raise ValueError("power_of_two needs weight_bits (an int8 search)")
        self.power_of_two = bool(power_of_two)
        self.bops_budget = None if bops_budget is None else float(bops_budget)
        self.qat_epochs = int(qat_epochs)
        self.representative_data = representative_data
        self._candidates = {}
        self.initial_values = [dict(v) for v in (initial_values or [])]
        self.seed_rules = bool(seed_rules)
        self.latency_budget_ms = latency_budget_ms
        self.pretrained = pretrained
        self.fine_tune_epochs = int(fine_tune_epochs)
        self.batch_size = int(batch_size)
        self.fit_verbose = verbose
        if latency_table is None and (latency_fn is None or latency_predictor is None):
            from npas_keras.latency.table import LatencyTable

            latency_table = LatencyTable(threads=threads, measure_fn=latency_fn,
                                         runtime=None if latency_fn is None else "custom",
                                         dtype="int8" if quantized else "float32")
        if quantized and getattr(latency_table, "dtype", "int8") != "int8":
            raise ValueError("weight_bits searches int8 models: pass a LatencyTable(dtype='int8') "
                             "(its entries are timed on int8 layers)")
        self.latency_table = latency_table
        self.latency_fn = latency_fn or latency_table.measure_bytes
        if latency_predictor is None:
            from npas_keras.latency.predictor import TablePredictor

            latency_predictor = TablePredictor(latency_table)
        self.latency_predictor = latency_predictor
        if oracle is None:
            oracle = NPASOracle(objective=objective, max_trials=max_trials,
                                latency_predictor=self.predict_latency,
                                latency_budget_ms=latency_budget_ms, seed=seed,
                                **(oracle_kwargs or {}))
        if isinstance(oracle, NPASOracle):
            oracle.signature = self.signature
            if self.bops_budget is not None:
                oracle.constraint = self._over_bops
        super().__init__(oracle=oracle, hypermodel=hm, directory=directory,
                         project_name=project_name, overwrite=overwrite, **kwargs)

    def _candidate(self, values):
        """{"ms", "signature", "bops"} of the configuration `values`, from one build of it
        (cached; so is the ValueError of a configuration the space cannot build)."""
        key = json.dumps(values, sort_keys=True, default=str)
        if key not in self._candidates:
            hm = self.hypermodel
            hp = self.oracle.get_space()
            hp.values = dict(values)
            try:
                model = hm.build_dense(hp)
                mapping, bits = hm.mapping(model, values), hm.bits(model, values)
                ms = float(self.latency_predictor(model, mapping))
                own = {k: v for k, v in values.items() if not _is_pruning_hp(k)}
                self._candidates[key] = {
                    "ms": ms,
                    "signature": json.dumps(
                        [own, {k: None if s is None else s.to_json() for k, s in mapping.items()},
                         bits], sort_keys=True, default=str),
                    "bops": None if bits is None else predicted_bops(model, mapping, bits)}
            except ValueError as exc:
                self._candidates[key] = exc
        entry = self._candidates[key]
        if isinstance(entry, ValueError):
            raise entry
        return entry

    def predict_latency(self, values):
        """Predicted ms of the configuration `values` (the NPASOracle's latency predictor: the
        candidate built, its schemes mapped, `latency_predictor(model, mapping)`); ValueError
        when the space cannot build it."""
        return self._candidate(values)["ms"]

    def signature(self, values):
        """A string equal for configurations that build the same pruned model: the build
        function's own hp values, the per-layer schemes and the bits the built model gets (the
        oracle's duplicate check: a scheme hp of a layer that is too small at this width, or
        absent in this architecture, changes nothing). A configuration the space cannot build
        is its own signature."""
        try:
            return self._candidate(values)["signature"]
        except ValueError:
            return json.dumps(values, sort_keys=True, default=str)

    def predict_bops(self, values):
        """Exact BOPs per sample of the configuration `values` (cached; see `predicted_bops`)."""
        return self._candidate(values)["bops"]

    def _over_bops(self, values):
        """The NPASOracle's constraint: 'over_bops' when `values` exceed the BOPs budget (the
        oracle asks only after the latency prediction built the configuration)."""
        return "over_bops" if self.predict_bops(values) > self.bops_budget else None

    def architectures(self, limit=MAX_SEED_ARCHITECTURES):
        """[hp values]: the architectures of the space, as values of the build function's own
        Choice / Boolean hps (widths, operators; not the pruning hps): every combination when
        there are at most `limit`, else the default and each one-hp variation of it."""
        from keras_tuner import HyperParameters

        hp = HyperParameters()
        self.hypermodel.build_dense(hp)
        own = [h for h in hp.space if type(h).__name__ in ("Choice", "Boolean")
               and hp.is_active(h)]
        default = {h.name: hp.values[h.name] for h in own}
        choices = [(h.name, discrete_values(h)) for h in own]
        if int(np.prod([len(v) for _, v in choices])) <= limit:
            combos = [dict(zip([n for n, _ in choices], vals))
                      for vals in itertools.product(*[v for _, v in choices])]
        else:
            combos = [default] + [dict(default, **{n: v}) for n, vs in choices for v in vs
                                  if v != default[n]]
        combos.sort(key=lambda c: c != default)  # the default first (a stable sort)
        return combos

    def rule_seeds(self, max_seeds=None):
        """[hp values]: per architecture (`architectures()`), the least pruning the rule-based
        mapping finds within the budget: the dense model when it fits, else
        npas_keras.mapping.map_schemes with the latency table (among the space's block shapes)
        at the lowest of the space's rates predicted within it. Ordered by mean layer density
        (the fraction of each prunable layer's weights kept, averaged), most kept first: at
        equal latency, a narrower or cheaper-operator model that needs little pruning usually
        keeps more accuracy after a short fine-tune than a wide one pruned hard. At most
        `max_seeds` (None: all)."""
        from keras_tuner import HyperParameters

        from npas_keras.mapping import map_schemes

        hm = self.hypermodel
        blocks = tuple(_parse_block(b) for b in hm.block_shapes)
        seeds = []  # (mean density, predicted ms, values)
        for arch in self.architectures():
            hp = HyperParameters()
            hp.values.update(arch)
            model = hm.build(hp)
            base = dict(hp.values)
            specs = dict(model_layer_specs(model))
            families = itertools.chain(  # lazy: the rules' table lookups only as far as needed
                [{name: None for name in specs}],
                (map_schemes(model, rate, self.latency_table, block_shapes=blocks)
                 for rate in sorted(hm.rates)))
            for mapping in families:
                values = hm.values_for_mapping(model, mapping, base)
                if values is None or any(values == v for _, _, v in seeds):
                    continue
                mapped = hm.mapping(model, values)
                ms = self.latency_predictor(model, mapped)
                if self.latency_budget_ms is None or ms <= self.latency_budget_ms:
                    if hm.weight_bits is not None:
                        values = self._seed_bits(values)
                        if values is None:  # over the BOPs budget at any bit widths
                            continue
                    kept = [1.0 if s is None else 1.0 - float(s.rate) for name, s in
                            mapped.items() if len(hm.allowed_schemes(specs[name])) > 1]
                    seeds.append((float(np.mean(kept)) if kept else 1.0, ms, values))
                    break
        seeds.sort(key=lambda s: (-s[0], -s[1]))  # stable: ties keep architecture order
        return [v for _, _, v in seeds][:max_seeds]

    def _seed_bits(self, values):
        """`values` with every layer at the widest of `weight_bits`, or, where that is over the
        BOPs budget, at the widths `quantization.select_bits` picks to fit it (on the
        pretrained weights when given); None when no choice of widths fits."""
        from keras_tuner import HyperParameters

        from npas_keras.quantization import bops, select_bits

        hm = self.hypermodel
        hp = HyperParameters()
        hp.values.update(values)
        model = hm.build_dense(hp)
        if self.pretrained is not None:
            inherit_weights(self.pretrained, model)
        specs = dict(model_layer_specs(model))
        bits = {name: hm.weight_bits[0] for name in specs}
        total = predicted_bops(model, hm.mapping(model, values), bits)  # prunes `model`
        if self.bops_budget is not None and total > self.bops_budget:
            if len(hm.weight_bits) == 1:
                return None
            choice = select_bits(model, budget=self.bops_budget / total,
                                 candidates=hm.weight_bits, power_of_two=self.power_of_two)
            bits.update({n: b for n, b in choice["bits"].items() if n in bits})
            if bops(model, bits)["total"] > self.bops_budget:
                return None
        out = dict(values)
        if len(hm.weight_bits) > 1:
            out.update({bits_hp_name(n, specs[n]): b for n, b in bits.items()})
        return out

    def search(self, *fit_args, **fit_kwargs):
        if self.hypermodel.weight_bits is not None and self.representative_data is None:
            x = fit_args[0] if fit_args else fit_kwargs.get("x")
            if not isinstance(x, np.ndarray):
                raise ValueError("an int8 search (weight_bits) calibrates its exports on sample "
                                 "inputs: pass representative_data=, or x as a NumPy array")
            self.representative_data = x[:200]
        if isinstance(self.oracle, NPASOracle) and not self.oracle.initial_values:
            self.oracle.initial_values = list(self.initial_values) + (
                self.rule_seeds(max(1, self.oracle.num_initial_points))
                if self.seed_rules else [])
        return super().search(*fit_args, **fit_kwargs)

    # -- a trial ---------------------------------------------------------------------------------
    def run_trial(self, trial, x=None, y=None, validation_data=None, epochs=None,
                  batch_size=None, callbacks=None, **fit_kwargs):
        import npas_keras
        from npas_keras.latency.measure import to_tflite
        from npas_keras.quantization import bops

        fit_kwargs.pop("verbose", None)  # the tuner's own fit_verbose decides
        hp = trial.hyperparameters
        model = self.hypermodel.build(hp)
        if self.pretrained is not None:
            inherit_weights(self.pretrained, model)
        mapping = self.hypermodel.mapping(model, hp.values)
        built = model
        model = pruned_for_fine_tune(built, mapping)
        wrapped = model is not built
        epochs = self.fine_tune_epochs if epochs is None else int(epochs)
        metrics = {}
        if epochs > 0:
            history = model.fit(x, y, validation_data=validation_data, epochs=epochs,
                                batch_size=batch_size or self.batch_size,
                                callbacks=(list(npas_keras.callbacks()) if wrapped else [])
                                + list(callbacks or []),
                                verbose=self.fit_verbose, **fit_kwargs)
            metrics = {k: float(v[-1]) for k, v in history.history.items()}
        objective = self.oracle.objective.name
        if objective not in metrics:
            if validation_data is not None:
                ev = model.evaluate(*validation_data[:2], verbose=0, return_dict=True)
                metrics.update({f"val_{k}": float(v) for k, v in ev.items()})
            if objective not in metrics and x is not None:
                ev = model.evaluate(x, y, verbose=0, return_dict=True)
                metrics.update({k: float(v) for k, v in ev.items() if k not in metrics})
        if wrapped:
            model = npas_keras.strip(model, shrink=False)
        bits = self.hypermodel.bits(model, hp.values)
        if bits is None:
            latency = float(self.latency_fn(to_tflite(model)))
        else:
            model = self._on_grids(model, built, bits, metrics, x, y, validation_data,
                                   batch_size, callbacks, fit_kwargs)
            latency = float(self.latency_fn(to_tflite(
                model, quantize="int8", representative_data=self.representative_data,
                weight_bits=bits)))
            metrics["bops"] = float(bops(model, bits)["total"])
        metrics[LATENCY_METRIC] = latency
        metrics["density"] = _density(model, mapping) if mapping else 1.0
        metrics["feasible"] = float(self._within_budgets(latency, metrics.get("bops")))
        self.save_model(trial.trial_id, model)
        trial_dir = self.get_trial_dir(trial.trial_id)
        with open(os.path.join(trial_dir, "mapping.json"), "w") as f:
            json.dump({k: (None if v is None else v.to_json()) for k, v in mapping.items()}, f,
                      indent=1)
        if bits is not None:
            with open(os.path.join(trial_dir, "bits.json"), "w") as f:
                json.dump(bits, f, indent=1)
        return metrics

    def _on_grids(self, model, built, bits, metrics, x, y, validation_data, batch_size,
                  callbacks, fit_kwargs):
        """The stripped trial model with its kernels on their `bits` grids (power-of-two steps
        with `power_of_two`): fine-tuned there for `qat_epochs` (`bits_qat`, pruned zeros
        kept), or rounded post-training; `metrics` are updated to the quantized model's."""
        from npas_keras.quantization import apply_bits, bits_qat

        if self.qat_epochs == 0:
            model = apply_bits(model, bits, power_of_two=self.power_of_two)
            model.compile(**_compile_args(built))
            fresh = {}
        else:
            model.compile(**_compile_args(built))
            on_grids = bits_qat(model, bits, power_of_two=self.power_of_two)
            history = model.fit(x, y, validation_data=validation_data, epochs=self.qat_epochs,
                                batch_size=batch_size or self.batch_size,
                                callbacks=[on_grids] + list(callbacks or []),
                                verbose=self.fit_verbose, **fit_kwargs)
            fresh = {k: float(v[-1]) for k, v in history.history.items()}
        objective = self.oracle.objective.name
        if objective not in fresh:
            data = validation_data if objective.startswith("val_") else (x, y)
            prefix = "val_" if objective.startswith("val_") else ""
            ev = model.evaluate(*data[:2], verbose=0, return_dict=True)
            fresh.update({prefix + k: float(v) for k, v in ev.items()})
        metrics.update(fresh)
        return model

    def _within_budgets(self, latency, bops_count):
        return ((self.latency_budget_ms is None or latency <= self.latency_budget_ms)
                and (self.bops_budget is None or bops_count is None
                     or bops_count <= self.bops_budget))

    def _checkpoint(self, trial_id):
        return os.path.join(self.get_trial_dir(trial_id), "checkpoint")

    def save_model(self, trial_id, model, step=0):
        model.save_weights(self._checkpoint(trial_id))

    def load_model(self, trial):
        model = self.hypermodel.build(trial.hyperparameters)
        model.load_weights(self._checkpoint(trial.trial_id)).expect_partial()
        return model

    def load_bits(self, trial):
        """{layer: weight bits} of an int8 search's trial (export the loaded model with
        `npas_keras.export(model, ..., quantize="int8", weight_bits=tuner.load_bits(trial))`);
        None for a float32 search."""
        path = os.path.join(self.get_trial_dir(trial.trial_id), "bits.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return {k: int(v) for k, v in json.load(f).items()}

    def load_mapping(self, trial):
        from npas_keras.schemes import Scheme

        with open(os.path.join(self.get_trial_dir(trial.trial_id), "mapping.json")) as f:
            raw = json.load(f)
        return {k: (None if v is None else Scheme.from_json(v)) for k, v in raw.items()}

    # -- results ---------------------------------------------------------------------------------
    def _trial_feasible(self, trial):
        latency = _last(trial, LATENCY_METRIC)
        if latency is None:
            return self.latency_budget_ms is None and self.bops_budget is None
        return self._within_budgets(latency, _last(trial, "bops"))

    def get_best_trials(self, num_trials=1, feasible_only=True):
        """Completed trials by objective, those within the latency budget first (only those
        when feasible_only)."""
        n = max(len(getattr(self.oracle, "trials", {}) or {}), self.oracle.max_trials or 1, 1)
        trials = [t for t in self.oracle.get_best_trials(n)
                  if t.status == trial_module.TrialStatus.COMPLETED]
        feasible = [t for t in trials if self._trial_feasible(t)]
        if feasible_only:
            return feasible[:num_trials]
        return (feasible + [t for t in trials if not self._trial_feasible(t)])[:num_trials]

    def get_best_models(self, num_models=1):
        """The best feasible pruned models (plain tf_keras, zeros in place; strip/export-ready)."""
        return [self.load_model(t) for t in self.get_best_trials(num_models)]

    def get_best_hyperparameters(self, num_trials=1):
        return [t.hyperparameters for t in self.get_best_trials(num_trials)]

    def results(self):
        """[{trial_id, values, score, latency_ms, bops, feasible, status}] for all trials
        (bops None in a float32 search)."""
        out = []
        trials = getattr(self.oracle, "trials", None)
        if trials is None:
            return out
        for t in trials.values():
            out.append({"trial_id": t.trial_id, "values": dict(t.hyperparameters.values),
                        "score": t.score, "latency_ms": _last(t, LATENCY_METRIC),
                        "bops": _last(t, "bops"), "status": t.status,
                        "feasible": self._trial_feasible(t)})
        return out
