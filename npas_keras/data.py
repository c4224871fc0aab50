"""Datasets that are already on the machine: never a download at run time.

- Fashion-MNIST from Debian's `dataset-fashion-mnist` package (gzip IDX files under
  `/usr/share/datasets/fashion-mnist`), read with NumPy alone.
- scikit-learn's bundled 8x8 handwritten digits (ships inside the scikit-learn wheel).

Every loader returns `(x_train, y_train), (x_test, y_test)`: images float32 in [0, 1] with a
trailing channel axis (`[n, h, w, 1]`), labels int64 in [0, 10).
"""
from __future__ import annotations

import gzip
import os

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DATASETS = ("fashion_mnist", "digits")

_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# IDX magic: two zero bytes, the element type (0x08 = unsigned byte), the number of dimensions.
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


def read_idx(path: str, expected_magic: int | None = None) -> np.ndarray:
    """Reads one (optionally gzip-compressed) IDX file of unsigned bytes into a NumPy array.

    Raises ValueError when the header is not an unsigned-byte IDX header (or not the
    `expected_magic`), or when the payload size does not match the header's dimensions.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: bad IDX magic 0x{magic:08x} (expected unsigned-byte data, "
                         f"0x000008NN)")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"{path}: bad IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(raw) - header != count:
        raise ValueError(f"{path}: header says {shape} ({count} bytes) but the file holds "
                         f"{len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(path: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            return full
    return None


def fashion_mnist_available(path: str = FASHION_MNIST_DIR) -> bool:
    """True when all four Fashion-MNIST IDX files are present under `path`."""
    return all(_find(path, stem) is not None for stem in _FILES.values())


def load_fashion_mnist(path: str = FASHION_MNIST_DIR):
    """Fashion-MNIST (60,000 train / 10,000 test 28x28 grey images, 10 classes) from local files.

    Returns `(x_train, y_train), (x_test, y_test)` with x float32 `[n, 28, 28, 1]` in [0, 1] and
    y int64. Raises FileNotFoundError (saying how to install the Debian package) when missing.
    """
    arrays = {}
    for key, stem in _FILES.items():
        full = _find(path, stem)
        if full is None:
            raise FileNotFoundError(
                f"Fashion-MNIST not found: no {stem}.gz under {path}. Install it with "
                f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or use "
                f"load_digits() / --dataset digits, which needs nothing extra.")
        magic = _IDX_IMAGES_MAGIC if key.startswith("x") else _IDX_LABELS_MAGIC
        arrays[key] = read_idx(full, expected_magic=magic)
    for split in ("train", "test"):
        if len(arrays["x_" + split]) != len(arrays["y_" + split]):
            raise ValueError(f"Fashion-MNIST {split}: {len(arrays['x_' + split])} images but "
                             f"{len(arrays['y_' + split])} labels")

    def images(a):
        return (a.astype(np.float32) / np.float32(255.0))[..., None]

    return ((images(arrays["x_train"]), arrays["y_train"].astype(np.int64)),
            (images(arrays["x_test"]), arrays["y_test"].astype(np.int64)))


def load_digits(test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes), no network.

    Split into train/test (stratified, fixed seed). Returns x float32 `[n, 8, 8, 1]` in [0, 1]
    (the raw pixel values go from 0 to 16) and y int64.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[..., None]
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return (x_train, y_train), (x_test, y_test)


def load(name: str = "auto", path: str = FASHION_MNIST_DIR):
    """Loads a dataset by name: "fashion_mnist" (alias "fashion-mnist"), "digits" or "auto"."""
    key = name.replace("-", "_").lower()
    if key == "auto":
        return load_default(path)
    if key == "fashion_mnist":
        return load_fashion_mnist(path)
    if key == "digits":
        return load_digits()
    raise ValueError(f"unknown dataset {name!r}; choose one of: auto, " + ", ".join(DATASETS))


def default_dataset_name(path: str = FASHION_MNIST_DIR) -> str:
    """"fashion_mnist" when its files are on the machine, else "digits"."""
    return "fashion_mnist" if fashion_mnist_available(path) else "digits"


def load_default(path: str = FASHION_MNIST_DIR):
    """Fashion-MNIST if the Debian package is installed, else scikit-learn's digits."""
    if default_dataset_name(path) == "fashion_mnist":
        return load_fashion_mnist(path)
    return load_digits()
