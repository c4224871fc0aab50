"""Joint pruning + quantization (DESIGN.md, "quantization/"; docs/quantization.md).

    from npas_keras import quantization as q
    qat = q.prune_preserving_qat(pruned_or_stripped_model)      # tfmot PQAT, zeros kept
    q.bops(model, bits=8)                                      # bit-operations per layer
    choice = q.select_bits(model, budget=0.6)                  # per-layer 8/4-bit weights
    q.summary(model, bits=choice["bits"])                      # table with bits and BOPs
    q.apply_bits(model, choice["bits"])                        # fake-quantized copy
    model.fit(x, y, callbacks=[q.bits_qat(model, choice["bits"])])  # or QAT on the grid (STE)
    q.int8_weight_zeros(tflite_bytes)                          # zeros kept through int8 export

Export with `npas_keras.export(model, path, quantize="int8", representative_data=x)`; the npas
delegate runs the pruned int8 layers (docs/quantization.md).
"""
from npas_keras.quantization.bops import bops, summary
from npas_keras.quantization.mixed import fake_quantize, select_bits, apply_bits, bits_qat
from npas_keras.quantization.qat import prune_preserving_qat
from npas_keras.quantization.inspect import int8_weight_zeros

__all__ = ["bops", "summary", "fake_quantize", "select_bits", "apply_bits", "bits_qat",
           "prune_preserving_qat", "int8_weight_zeros"]
