"""Shared pytest set-up: quiet TensorFlow, deterministic seeds."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    yield


def delegate_built() -> bool:
    """Whether the delegate library is built (tests that need it skip otherwise)."""
    try:
        from npas_keras.runtime import delegate_path
        delegate_path()
        return True
    except Exception:  # noqa: BLE001
        return False
