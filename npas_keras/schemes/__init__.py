"""Pruning schemes in pure NumPy: scheme definitions -> masks, checks and structure inference.

No Keras or TensorFlow here: everything works on the GEMM view ``W[out, red]`` of a weight
(see DESIGN.md, "Weight views") and on NumPy arrays.  Definitions: docs/schemes.md.

    from npas_keras.schemes import Scheme, get_scheme, compute_mask, project, satisfies
    mask = compute_mask(W, Scheme("bcr", rate=0.75, block_shape=(8, 8)))
"""
from .check import describe_mask, satisfies
from .masks import compute_mask, pattern_set, project
from .scheme import (BLOCK_SCHEMES, DEFAULT_BLOCK_SHAPE, SCHEME_NAMES, Scheme, bcr_row_density,
                     get_scheme)

__all__ = [
    "SCHEME_NAMES", "BLOCK_SCHEMES", "DEFAULT_BLOCK_SHAPE", "Scheme", "get_scheme",
    "compute_mask", "project", "satisfies", "describe_mask", "pattern_set", "bcr_row_density",
]
