"""Host-side tables shared by the GPU kernel families (``kernels/cuda`` for Numba-CUDA,
``kernels/cu`` for CuPy): both read the same layer table and the same shuffle array, so
their kernels index parameters and evaluate the epoch permutation identically.
"""

from __future__ import annotations

import numpy as np

from .permutation import FIRST, SECOND, TABLE_SIZE, order_table, table_size  # noqa: F401

# Largest block size the loss reduction's shared array holds (a CUDA limit as well).
MAX_THREADS = 1024

# The ``perm`` device array is ``kernels.permutation.order_table``'s: [kind, block rows, full
# blocks, tail slot, log2 block rows | mask, shift, keys (at FIRST) | mask, shift, keys (at
# SECOND) | block order, rows' order in a block, tail order (at TABLE_SIZE)].


def layout(sizes) -> tuple[np.ndarray, int]:
    """The ``(L, 6)`` int64 layer table (``n_in, n_out, w_off, b_off, a_in, a_out``) and the
    activation width ``A = sum(sizes)`` of one scratch half."""
    rows, pos = [], 0
    act = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        rows.append([n_in, n_out, pos, pos + n_in * n_out, act[layer], act[layer + 1]])
        pos += n_in * n_out + n_out
    return np.array(rows, dtype=np.int64), int(act[-1])


def perm_table(seed: int = 0, epoch: int = 0, n: int = 1, shuffle: bool = False,
               block_rows: int = 0) -> np.ndarray:
    """The uint64 ``perm`` array of one epoch (``kernels.permutation.order_table``); the
    defaults give the identity (in order)."""
    return order_table(seed, epoch, n, shuffle, block_rows)


def perm_capacity(plan, n: int) -> np.ndarray:
    """A zeroed uint64 host array long enough for every order table a GPU run of ``plan``
    on ``n`` rows writes (its epochs' and the warm-up's, on at most two rows)."""
    sizes = (table_size(rows, plan.shuffle, plan.block_rows) for rows in (n, min(2, n)))
    return np.zeros(max(sizes), np.uint64)
