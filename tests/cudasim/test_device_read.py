"""The numba-cuda read probe of ``fastgd.benchmarking`` (the device read limit where only
numba-cuda sees a GPU), under the CUDA simulator: it reads every element exactly once,
whatever the array's size against the grid."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (pip install numba-cuda)")

from numba import cuda  # noqa: E402

from fastgd.benchmarking import _numba_read_kernel  # noqa: E402

BLOCKS, THREADS = 2, 8


@pytest.mark.parametrize("n", [0, 1, 15, 16, 63, 64, 65, 100, 131])
def test_read_kernel_sums_every_element_once(n):
    """Sizes around the grid (16 threads) and the unrolled stride (64 elements): the per-
    thread partial sums add up to the array's sum (distinct integers: an element skipped
    or read twice changes it)."""
    a = np.arange(1, n + 1, dtype=np.float32)
    out = cuda.to_device(np.full(BLOCKS * THREADS, np.nan, np.float32))
    _numba_read_kernel()[BLOCKS, THREADS](cuda.to_device(a), out)
    partials = out.copy_to_host()
    assert np.isfinite(partials).all()  # every thread wrote its partial
    assert partials.sum(dtype=np.float64) == n * (n + 1) / 2
