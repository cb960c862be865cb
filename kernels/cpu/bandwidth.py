"""Read-only reductions that measure this machine's read bandwidth (the limit a memory-bound
epoch is quoted against): one thread, and all of Numba's threads over fixed chunks.

Each sums a float32 array in float32 lanes (``fastmath`` lets LLVM vectorise and unroll
the reduction, so the loop is bound by the loads, not by a dependency chain); the result is
returned so the reads cannot be optimised away.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import FASTMATH


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def serial_read(a):
    """Sum of ``a`` on one thread."""
    s = np.float32(0)
    for i in range(a.size):
        s += a[i]
    return s


@njit(cache=True, fastmath=FASTMATH, nogil=True, parallel=True)
def parallel_read(a, parts):
    """Sum of ``a`` in ``parts`` contiguous chunks, one per parallel iteration.

    Each chunk is summed by :func:`serial_read` on a slice: the same loop written inline in
    the ``prange`` body is not vectorised by the parfor lowering (measured on the 2-core
    EPYC: 7 GB/s a thread, 13 GB/s with both, against 30 for one thread of
    ``serial_read`` and 34 for this), which made the all-core limit the lowest method."""
    sums = np.zeros(parts, np.float32)
    n = a.size
    for g in prange(parts):
        sums[g] = serial_read(a[g * n // parts:(g + 1) * n // parts])
    return sums.sum()
