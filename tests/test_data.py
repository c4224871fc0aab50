"""Dataset loaders: shapes, dtypes, value and label ranges, IDX parsing and its errors."""
import gzip
import os

import numpy as np
import pytest

from npas_keras import data


def _check_split(x, y, hw):
    assert x.dtype == np.float32
    assert x.ndim == 4 and x.shape[1:] == (hw, hw, 1)
    assert len(x) == len(y)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert float(x.max()) == pytest.approx(1.0)
    assert np.issubdtype(y.dtype, np.integer)
    assert set(np.unique(y).tolist()) == set(range(10))


def test_load_digits_shapes_and_ranges():
    (x_train, y_train), (x_test, y_test) = data.load_digits()
    _check_split(x_train, y_train, 8)
    _check_split(x_test, y_test, 8)
    assert len(x_train) + len(x_test) == 1797
    assert len(x_test) == pytest.approx(0.2 * 1797, abs=1)


def test_load_digits_is_deterministic():
    (a, _), _ = data.load_digits()
    (b, _), _ = data.load_digits()
    np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not data.fashion_mnist_available(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_load_fashion_mnist():
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist()
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    _check_split(x_train, y_train, 28)
    _check_split(x_test, y_test, 28)
    # balanced classes: 6000 / 1000 of each
    assert np.bincount(y_test).tolist() == [1000] * 10


def test_load_default_picks_what_is_installed(tmp_path):
    expected = "fashion_mnist" if data.fashion_mnist_available() else "digits"
    assert data.default_dataset_name() == expected
    # an empty directory: falls back to digits
    assert data.default_dataset_name(str(tmp_path)) == "digits"
    (x, _), _ = data.load_default(str(tmp_path))
    assert x.shape[1:] == (8, 8, 1)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(str(tmp_path))


def test_load_by_name_rejects_unknown():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("cifar10")


def _write_idx(path, magic, shape, payload):
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in shape)
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(payload))


def _fake_fashion(tmp_path, n_train=5, n_test=3):
    rng = np.random.default_rng(0)
    for stem, magic, shape in (("train-images-idx3-ubyte", 0x803, (n_train, 28, 28)),
                               ("train-labels-idx1-ubyte", 0x801, (n_train,)),
                               ("t10k-images-idx3-ubyte", 0x803, (n_test, 28, 28)),
                               ("t10k-labels-idx1-ubyte", 0x801, (n_test,))):
        hi = 256 if len(shape) == 3 else 10
        payload = rng.integers(0, hi, int(np.prod(shape)), dtype=np.uint8)
        if len(shape) == 3:
            payload[0] = 255
        _write_idx(os.path.join(tmp_path, stem + ".gz"), magic, shape, payload.tobytes())


def test_fashion_reader_on_synthetic_idx(tmp_path):
    _fake_fashion(tmp_path)
    assert data.fashion_mnist_available(str(tmp_path))
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist(str(tmp_path))
    assert x_train.shape == (5, 28, 28, 1) and x_test.shape == (3, 28, 28, 1)
    assert x_train.dtype == np.float32 and x_train.max() == 1.0
    assert y_train.max() < 10


def test_idx_bad_magic_rejected(tmp_path):
    path = str(tmp_path / "bad.gz")
    _write_idx(path, 0x0D03, (2, 2, 2), b"\0" * 8)  # float type code, not unsigned byte
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(path)
    _write_idx(path, 0x801, (8,), b"\0" * 8)  # labels where images are expected
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(path, expected_magic=0x803)


def test_idx_truncated_payload_rejected(tmp_path):
    path = str(tmp_path / "short.gz")
    _write_idx(path, 0x803, (2, 28, 28), b"\0" * 100)
    with pytest.raises(ValueError, match="header says"):
        data.read_idx(path)


def test_fashion_wrong_file_type_rejected(tmp_path):
    _fake_fashion(tmp_path)
    # swap a labels file in for the train images
    os.replace(tmp_path / "train-labels-idx1-ubyte.gz", tmp_path / "train-images-idx3-ubyte.gz")
    _write_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"), 0x801, (5,), b"\0" * 5)
    with pytest.raises(ValueError, match="magic"):
        data.load_fashion_mnist(str(tmp_path))
