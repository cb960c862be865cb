"""Host-side tables shared by the GPU kernel families (``kernels/cuda`` for Numba-CUDA,
``kernels/cu`` for CuPy): both read the same layer table and the same shuffle array, so
their kernels index parameters and evaluate the epoch permutation identically.
"""

from __future__ import annotations

import numpy as np

from .permutation import ROUNDS, EpochKey

# Largest block size the loss reduction's shared array holds (a CUDA limit as well).
MAX_THREADS = 1024

# ``perm`` device array: [shuffle flag, mask, shift, k0, k1, k0, k1, ...]
PERM_HEADER = 3


def layout(sizes) -> tuple[np.ndarray, int]:
    """The ``(L, 6)`` int64 layer table (``n_in, n_out, w_off, b_off, a_in, a_out``) and the
    activation width ``A = sum(sizes)`` of one scratch half."""
    rows, pos = [], 0
    act = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        rows.append([n_in, n_out, pos, pos + n_in * n_out, act[layer], act[layer + 1]])
        pos += n_in * n_out + n_out
    return np.array(rows, dtype=np.int64), int(act[-1])


def perm_table(key: EpochKey | None) -> np.ndarray:
    """The uint64 ``perm`` array of one epoch: ``None`` (no shuffle) gives the identity."""
    out = np.zeros(PERM_HEADER + 2 * ROUNDS, dtype=np.uint64)
    if key is not None:
        out[0], out[1], out[2] = 1, key.mask, key.shift
        out[PERM_HEADER:] = key.keys
    return out
