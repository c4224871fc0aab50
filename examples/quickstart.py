"""Quickstart: prune a small CNN on scikit-learn's digits, export it, run it with the delegate.

    python examples/quickstart.py [OUT_DIR]     # OUT_DIR keeps the two .tflite files

Steps: train a dense tf_keras CNN (8x8 digits, bundled with scikit-learn, no download) ->
prune it with BCR (block-based column-row) sparsity at rate 0.75 -> fine-tune one epoch ->
strip the wrappers -> export to TFLite (standard ops, and the compact NPAS format) -> run the
test set through stock LiteRT (XNNPACK) and through LiteRT + the npas delegate, and compare.
Runs in well under a minute on two CPU cores.
"""
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

import npas_keras  # noqa: E402
from npas_keras.data import load_digits  # noqa: E402
from npas_keras.runtime import Interpreter, delegate_stats  # noqa: E402
from npas_keras.schemes import Scheme  # noqa: E402


def predict(interp, x):
    """Batch-1 inference over x with an allocated LiteRT interpreter -> logits [n, classes]."""
    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]
    logits = []
    for i in range(len(x)):
        interp.set_tensor(inp, x[i:i + 1])
        interp.invoke()
        logits.append(interp.get_tensor(out)[0].copy())
    return np.stack(logits)


def main(out_dir):
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_digits()

    # 1. a small dense CNN
    model = keras.Sequential([
        keras.Input(shape=(8, 8, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
    dense_acc = model.evaluate(x_test, y_test, verbose=0)[1]

    # 2. prune: BCR blocks of 8x8, 75% of the weights removed (layers too small are skipped)
    scheme = Scheme("bcr", rate=0.75, block_shape=(8, 8))
    pruned = npas_keras.prune(model, scheme)
    pruned.compile(optimizer=keras.optimizers.Adam(5e-4), loss=loss, metrics=["accuracy"])
    pruned.fit(x_train, y_train, epochs=1, batch_size=32, verbose=0,
               callbacks=npas_keras.callbacks())

    # 3. strip the wrappers (a plain tf_keras model with exact zeros) and export
    final = npas_keras.strip(pruned)
    final.compile(loss=loss, metrics=["accuracy"])
    pruned_acc = final.evaluate(x_test, y_test, verbose=0)[1]
    std_path = os.path.join(out_dir, "digits_bcr.tflite")
    npas_path = os.path.join(out_dir, "digits_bcr_npas.tflite")
    npas_keras.export(final, std_path)                  # standard TFLite ops
    npas_keras.export(final, npas_path, format="npas")  # compact NPAS custom ops
    for row in npas_keras.inspect(std_path):
        print(f"layer {row['layer']}: {row['op']} scheme={row['scheme']} "
              f"density={row['density']:.3f}")

    # 4. stock LiteRT (XNNPACK) vs LiteRT + npas delegate, on the same file
    stock = Interpreter(model_path=std_path, delegate=False)
    stock.allocate_tensors()
    fast = Interpreter(model_path=std_path)  # delegate=True is the default
    fast.allocate_tensors()
    stock_logits, fast_logits = predict(stock, x_test), predict(fast, x_test)
    stats = delegate_stats(fast)

    def acc(logits):
        return float((logits.argmax(-1) == y_test).mean())

    print(f"dense keras accuracy: {dense_acc:.4f}")
    print(f"pruned keras accuracy: {pruned_acc:.4f}")
    print(f"stock tflite accuracy: {acc(stock_logits):.4f}")
    print(f"delegate tflite accuracy: {acc(fast_logits):.4f}")
    same = bool((stock_logits.argmax(-1) == fast_logits.argmax(-1)).all())
    print(f"identical predictions (stock vs delegate): {same}")
    print(f"max abs logit difference: {float(np.abs(stock_logits - fast_logits).max()):.3g}")
    print(f"delegate claimed {stats['claimed']} node(s), declined {stats['declined']}")
    # the compact file's custom ops run only with the delegate (stock LiteRT refuses them)
    try:
        compact = Interpreter(model_path=npas_path)
        compact.allocate_tensors()
        print(f"npas-format tflite accuracy: {acc(predict(compact, x_test)):.4f}")
    except RuntimeError as exc:
        print(f"npas-format tflite did not run: {' '.join(str(exc).split())}")
    print(f"file sizes: standard {os.path.getsize(std_path)} bytes, "
          f"npas format {os.path.getsize(npas_path)} bytes")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        os.makedirs(sys.argv[1], exist_ok=True)
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
