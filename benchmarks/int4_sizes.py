"""File sizes (and accuracy) of 4-bit weights in the npas export format (issue 6).

A Fashion-MNIST CNN (conv 32 3x3, pool, conv 64 3x3, pool, dense 128, dense 10; 421 k weights),
trained, pruned 8x (block_punched 8x8, rate 0.875, fine-tuned), then exported as:

  dense_int8        unpruned model, standard int8 (builtin ops)
  pruned_int8       pruned, standard int8 (builtin ops, zeros in place)
  pruned_npas_int8  pruned, npas format int8 (quantized NPAS custom ops, int8 values)
  pruned_4bit_std   pruned + every kernel on a 4-bit grid (apply_bits), standard int8 with
                    weight_bits=4 (builtin int8 ops holding -8..7: the stock-runnable equivalent)
  pruned_npas_4bit  the same, npas format: 4-bit values packed two per byte

and scored on the test set: builtin models by stock LiteRT (reference kernels), npas models by
the npas delegate; the 4-bit npas outputs are compared with pruned_4bit_std run by stock LiteRT
(reference and optimized kernels) and by the delegate. Writes JSON; the accuracy figures are from
one short training run.

    python benchmarks/int4_sizes.py --out benchmarks/results/int4_sizes.json [--epochs 2]
"""
import argparse
import json
import os
import platform
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _accuracy(content, x, y, mode):
    """mode: "npas" (delegate, auto), "forced" (delegate claiming every builtin int8 layer),
    "ref" / "opt" (stock LiteRT reference / optimized builtin kernels, no XNNPACK)."""
    from ai_edge_litert import interpreter as litert
    from npas_keras.runtime import Interpreter
    t = litert.OpResolverType
    if mode in ("npas", "forced"):
        it = Interpreter(model_content=content, delegate_options={} if mode == "npas" else
                         {"kernel": "row_block", "min_sparsity": 0})
    else:
        it = litert.Interpreter(model_content=content, experimental_op_resolver_type=t.BUILTIN_REF
                                if mode == "ref" else t.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    s, z = d["quantization"]
    xq = np.clip(np.round(x / s + z), -128, 127).astype(np.int8)
    out = []
    for i in range(len(x)):
        it.set_tensor(d["index"], xq[i:i + 1])
        it.invoke()
        out.append(it.get_tensor(it.get_output_details()[0]["index"]).astype(np.int32))
    out = np.concatenate(out)
    return float(np.mean(out.argmax(1) == y)), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/int4_sizes.json")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--test-samples", type=int, default=2000)
    args = ap.parse_args(argv)

    import tf_keras as keras
    import npas_keras
    from npas_keras.data import load_fashion_mnist
    from npas_keras.quantization import apply_bits

    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = load_fashion_mnist()
    xt, yt = xt[:args.test_samples], yt[:args.test_samples]
    L = keras.layers
    model = keras.Sequential([keras.Input(x.shape[1:]),
                              L.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
                              L.MaxPooling2D(), L.Conv2D(64, 3, padding="same", activation="relu",
                                                         name="conv2"),
                              L.MaxPooling2D(), L.Flatten(),
                              L.Dense(128, activation="relu", name="fc1"), L.Dense(10, name="fc2")])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    t0 = time.time()
    model.fit(x, y, epochs=args.epochs, batch_size=128, verbose=0)
    pm = npas_keras.prune(model, npas_keras.Scheme("block_punched", rate=0.875,
                                                   block_shape=(8, 8)))
    pm.compile("adam", loss, metrics=["accuracy"])
    pm.fit(x, y, epochs=args.finetune_epochs, batch_size=128, verbose=0,
           callbacks=npas_keras.callbacks())
    pruned = npas_keras.strip(pm)
    pruned.compile("adam", loss, metrics=["accuracy"])
    m4 = apply_bits(pruned, 4)
    m4.compile("adam", loss, metrics=["accuracy"])
    train_s = time.time() - t0

    exp = dict(quantize="int8", representative_data=x[:200])
    files = {
        "dense_int8": (npas_keras.export(model, None, **exp), "ref"),
        "pruned_int8": (npas_keras.export(pruned, None, **exp), "ref"),
        "pruned_npas_int8": (npas_keras.export(pruned, None, format="npas", **exp), "npas"),
        "pruned_4bit_std": (npas_keras.export(m4, None, weight_bits=4, **exp), "ref"),
        "pruned_npas_4bit": (npas_keras.export(m4, None, format="npas", weight_bits=4, **exp),
                             "npas"),
    }
    cases, outputs = [], {}
    for name, (content, mode) in files.items():
        acc, outputs[name] = _accuracy(content, xt, yt, mode)
        rows = npas_keras.inspect(content)
        cases.append({"name": name, "bytes": len(content), "test_accuracy": acc,
                      "weight_bytes": sum(r["stored_bytes"] or 0 for r in rows),
                      "layers": [{k: r[k] for k in ("layer", "op", "bits", "density",
                                                    "encoding", "stored_bytes")}
                                 for r in rows]})
        print(f"{name:18s} {len(content):8d} bytes  weights {cases[-1]['weight_bytes']:8d}  "
              f"acc {acc:.4f}", flush=True)
    # the 4-bit npas model against its builtin equivalent run three ways
    std4 = files["pruned_4bit_std"][0]
    exact = {}
    for label, ref in (("stock_reference", outputs["pruned_4bit_std"]),
                       ("stock_optimized", _accuracy(std4, xt, yt, "opt")[1]),
                       ("delegate_on_builtin", _accuracy(std4, xt, yt, "forced")[1])):
        diff = np.abs(outputs["pruned_npas_4bit"] - ref)
        exact[label] = {"max_abs_diff_lsb": int(diff.max()),
                        "outputs_differing": int((diff > 0).sum()), "outputs": int(diff.size)}
    keras_acc = {n: float(m.evaluate(xt, yt, verbose=0)[1])
                 for n, m in (("dense_fp32", model), ("pruned_fp32", pruned),
                              ("pruned_4bit_fake_quant_fp32", m4))}
    doc = {"benchmark": "int4_sizes", "machine": platform.processor() or platform.machine(),
           "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
           "epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
           "test_samples": len(xt), "train_seconds": round(train_s, 1),
           "keras_accuracy": keras_acc,
           "npas_4bit_vs_builtin_4bit": exact,
           "cases": cases}
    print(json.dumps({k: doc[k] for k in ("keras_accuracy", "npas_4bit_vs_builtin_4bit")}))
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
