"""Rule-based per-layer scheme mapping (after Gong et al. 2021): kind and shape first, then the
measured latency table decides among the candidates and against staying dense.

Rules (without a table):
  * depthwise convolutions stay dense (few weights per output, sparse kernels do not pay);
  * layers with fewer than `min_params` weights, or fewer than `min_reduction` reduction inputs
    (e.g. a first conv on 1-3 channels), stay dense;
  * a 3x3 convolution gets `pattern` (kernel patterns + connectivity pruning);
  * Dense layers and other convolutions (1x1, 5x5, ...) get `block_punched`.
With a table, every candidate (pattern, block_punched and bcr at a few block shapes) is looked up
(measured if missing) and the fastest wins, provided it beats the dense layer by `min_speedup`;
otherwise the layer stays dense.
"""
from npas_keras.latency.predictor import model_layer_specs

DEFAULT_BLOCK_SHAPES = ((16, 16), (8, 16), (4, 16))


def _scheme(name, rate, block_shape=None):
    from npas_keras.schemes import Scheme

    if block_shape is not None:
        return Scheme(name, rate=rate, block_shape=tuple(block_shape))
    return Scheme(name, rate=rate)


def candidate_schemes(spec, rate, block_shapes=DEFAULT_BLOCK_SHAPES):
    """Structured schemes that apply to a layer of this spec (kind and kernel size)."""
    if spec.kind == "depthwise_conv2d":
        return []
    out = []
    if spec.kind == "conv2d" and tuple(spec.kernel_size) == (3, 3):
        out.append(_scheme("pattern", rate))
    out_rows, red = spec.matrix_shape()
    for name in ("block_punched", "bcr"):
        for bs in block_shapes:
            bs = (min(bs[0], out_rows), min(bs[1], red))
            s = _scheme(name, rate, bs)
            if s not in out:
                out.append(s)
    return out


def rule_scheme(spec, rate, table=None, min_params=2048, min_reduction=16, min_speedup=1.1,
                block_shapes=DEFAULT_BLOCK_SHAPES):
    """The scheme (or None = dense) the rules give one layer."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be strictly between 0 and 1, got {rate}")
    if spec.kind == "depthwise_conv2d":
        return None
    out_rows, red = spec.matrix_shape()
    if spec.num_params() < min_params or red < min_reduction:
        return None
    candidates = candidate_schemes(spec, rate, block_shapes)
    if not candidates:
        return None
    if table is None:
        if spec.kind == "conv2d" and tuple(spec.kernel_size) == (3, 3):
            return candidates[0]  # pattern
        # the first block shape, clipped to the layer (a 10-unit classifier cannot take 16x16)
        return next(c for c in candidates if c.name == "block_punched")
    dense_ms = table.layer_cost(spec, None)
    best, best_ms = None, float("inf")
    for scheme in candidates:
        try:
            ms = table.layer_cost(spec, scheme)
        except ValueError:  # a scheme the layer's shape cannot take
            continue
        if ms < best_ms:
            best, best_ms = scheme, ms
    if best is None or best_ms * min_speedup >= dense_ms:
        return None
    return best


def map_schemes(model, rate, table=None, **rule_kwargs):
    """{layer name: Scheme | None} for every prunable layer of `model` at pruning `rate`.

    `table`: a LatencyTable (measured; missing entries are measured on demand). Without it the
    kind/shape rules alone decide. Feed the result to npas_keras.prune(model, mapping).
    """
    return {name: rule_scheme(spec, rate, table, **rule_kwargs)
            for name, spec in model_layer_specs(model)}
