"""Pruning-preserving quantization-aware training (tfmot's PQAT on a stripped model)."""
from __future__ import annotations

__all__ = ["prune_preserving_qat"]


def prune_preserving_qat(model, *, strip_first: bool = True):
    """Returns a tfmot QAT model whose fake-quantized weights keep the model's zeros.

    The model may be pruned (npas `PruneWrapper`s: stripped first with `npas_keras.strip`, which
    keeps the zeros in place) or already stripped / plain tf_keras. Uses
    `tfmot.quantization.keras.quantize_apply(quantize_annotate_model(m),
    tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())`: per-channel symmetric
    int8 weights whose sparsity masks are frozen, so fine-tuning cannot revive a pruned weight.
    Compile and fit it as usual, then `npas_keras.export(qat, path, quantize="int8",
    representative_data=x)` (tfmot's quantize layers convert to the same int8 ops).

    Layers tfmot cannot annotate (e.g. custom layers) raise tfmot's error; wrap such models in
    a supported architecture or use `npas_keras.quantization.apply_bits` (post-training
    fake quantization) instead.
    """
    import tensorflow_model_optimization as tfmot
    from npas_keras.compat import check_model
    check_model(model)
    if strip_first:
        from npas_keras.export.converter import _has_wrappers
        if _has_wrappers(model):
            from npas_keras.pruning import strip
            model = strip(model, verbose=False)
    q = tfmot.quantization.keras
    annotated = q.quantize_annotate_model(model)
    return q.quantize_apply(annotated,
                            tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
