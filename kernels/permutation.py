"""The epoch shuffle shared by every backend: a keyed bijection on ``[0, n)``.

Position ``i`` of epoch ``e`` visits sample ``permute(i)``; the permutation is a function of
``(seed, epoch, n)`` only, evaluated per index, so a kernel on the CPU or the GPU can compute
the sample it needs without an ``n``-sized index array, and every backend visits the samples
in the same order.

Construction: ``bits = ceil(log2(n))``; on the domain ``[0, 2**bits)`` apply ``ROUNDS`` rounds
of ``x ^= k0; x *= k1 (odd); x ^= x >> shift`` (each step is a bijection modulo ``2**bits``),
and cycle-walk: re-apply while the result is ``>= n``. The domain is less than ``2n``, so the
expected number of walks is below two. All arithmetic is unsigned 64-bit, wrapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROUNDS = 4
_MASK64 = (1 << 64) - 1


def _splitmix64(state: int) -> tuple[int, int]:
    """One step of SplitMix64 on a Python int: returns (new_state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


@dataclass(frozen=True)
class EpochKey:
    """Everything a kernel needs to evaluate the permutation of one epoch.

    ``keys`` holds ``2 * ROUNDS`` uint64 values (xor key, odd multiplier per round);
    ``mask = 2**bits - 1``; ``shift = (bits + 1) // 2``.
    """

    keys: np.ndarray
    mask: int
    shift: int
    n: int


def epoch_key(seed: int, epoch: int, n: int) -> EpochKey:
    """Derive the permutation key of ``epoch`` for ``n`` samples from ``seed``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    bits = max(1, int(n - 1).bit_length())
    state = ((int(seed) & _MASK64) * 0x9E3779B97F4A7C15 + int(epoch) + 1) & _MASK64
    keys = []
    for _ in range(ROUNDS):
        state, k0 = _splitmix64(state)
        state, k1 = _splitmix64(state)
        keys += [k0, k1 | 1]
    return EpochKey(
        keys=np.array(keys, dtype=np.uint64),
        mask=(1 << bits) - 1,
        shift=(bits + 1) // 2,
        n=int(n),
    )


def mix(x, keys, mask, shift):
    """One pass of the bijection on ``[0, mask]``.

    Written once for both callers: on NumPy uint64 arrays (the reference) and, compiled by
    Numba, on uint64 scalars inside the CPU kernels. ``mask`` and ``shift`` are np.uint64.
    """
    for r in range(ROUNDS):
        x = (x ^ keys[2 * r]) & mask
        x = (x * keys[2 * r + 1]) & mask
        x = x ^ (x >> shift)
    return x


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The whole permutation of an epoch as an int64 array (reference and tests)."""
    key = epoch_key(seed, epoch, n)
    mask, shift = np.uint64(key.mask), np.uint64(key.shift)
    x = mix(np.arange(n, dtype=np.uint64), key.keys, mask, shift)
    out_of_range = x >= np.uint64(n)
    while out_of_range.any():  # cycle-walking
        x[out_of_range] = mix(x[out_of_range], key.keys, mask, shift)
        out_of_range = x >= np.uint64(n)
    return x.astype(np.int64)
