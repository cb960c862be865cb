"""The input checks' one parallel pass: finiteness, and the conversion to the compute dtype
in the same pass (``fastgd/validate.py`` calls these once before training).

A single-threaded NumPy check (``np.isfinite``, or a sum) reads at one core's bandwidth and a
conversion (``astype``) then reads the data a second time: on a million rows of 64 float64
features that was as long as two training epochs. Here rows are split into fixed chunks run
in parallel, and a value is tested on its bits: NaN or inf is an all-ones exponent, so the
largest ``bits & ABS`` of a chunk is at least ``EXP`` exactly when the chunk holds one (an
integer maximum LLVM vectorises; a float test would need fast-math flags that let it assume
no NaN). The answer cannot depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Rows per chunk of the parallel pass.
CHUNK_ROWS = 16384
#: (unsigned view, magnitude mask, all-ones exponent) of each float dtype.
BITS = {np.dtype(np.float32): (np.uint32, np.uint32(0x7FFFFFFF), np.uint32(0x7F800000)),
        np.dtype(np.float64): (np.uint64, np.uint64(0x7FFFFFFFFFFFFFFF),
                               np.uint64(0x7FF0000000000000))}

_parallel = njit(cache=True, parallel=True, nogil=True)


@_parallel
def _finite_bits(bits, magnitude, exponent):
    """True when no value of the 2-D unsigned view ``bits`` of a float array is NaN/inf."""
    n, d = bits.shape
    chunks = (n + CHUNK_ROWS - 1) // CHUNK_ROWS
    ok = np.zeros(chunks, np.bool_)
    for c in prange(chunks):
        top = bits.dtype.type(0)
        for i in range(c * CHUNK_ROWS, min(n, (c + 1) * CHUNK_ROWS)):
            for j in range(d):
                top = max(top, bits[i, j] & magnitude)
        ok[c] = top < exponent
    return ok.all()


@_parallel
def _convert(src, dst, bits, magnitude, exponent):
    """``dst[...] = src`` cast, row by row, each row then tested through ``bits`` (``dst``'s
    unsigned view) while it is in cache; True when the converted values are finite."""
    n, d = src.shape
    chunks = (n + CHUNK_ROWS - 1) // CHUNK_ROWS
    ok = np.zeros(chunks, np.bool_)
    for c in prange(chunks):
        top = bits.dtype.type(0)
        for i in range(c * CHUNK_ROWS, min(n, (c + 1) * CHUNK_ROWS)):
            for j in range(d):
                dst[i, j] = src[i, j]
            for j in range(d):
                top = max(top, bits[i, j] & magnitude)
        ok[c] = top < exponent
    return ok.all()


def all_finite_2d(a: np.ndarray) -> bool:
    """True when the C-contiguous 2-D float32/float64 array ``a`` holds no NaN or inf."""
    view, magnitude, exponent = BITS[a.dtype]
    return bool(_finite_bits(a.view(view), magnitude, exponent))


def convert_2d(src: np.ndarray, dst: np.ndarray) -> bool:
    """``dst[...] = src`` (``dst`` C-contiguous float32/float64, ``src`` any 2-D real array)
    in one parallel pass; True when the converted values hold no NaN or inf (a float64
    beyond float32's range becomes inf)."""
    view, magnitude, exponent = BITS[dst.dtype]
    return bool(_convert(src, dst, dst.view(view), magnitude, exponent))
