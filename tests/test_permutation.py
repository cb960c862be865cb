"""The keyed epoch shuffle: a bijection, seeded, different per epoch, well mixed."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from fastgd.kernels.cpu.common import perm_index
from fastgd.kernels.permutation import epoch_key, permutation


@njit
def _perm_numba(n, keys, mask, shift):
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = perm_index(i, keys, mask, shift, n)
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_is_a_permutation_and_matches_compiled(n):
    """Every index appears once; the Numba evaluation equals the NumPy one."""
    seed = int(np.random.default_rng().integers(1 << 40))
    p = permutation(seed, 3, n)
    assert np.array_equal(np.sort(p), np.arange(n))
    key = epoch_key(seed, 3, n)
    q = _perm_numba(n, key.keys, np.uint64(key.mask), np.uint64(key.shift))
    assert np.array_equal(p, q)


def test_deterministic_and_varies_with_seed_and_epoch():
    """Same (seed, epoch) -> same order; a new epoch or seed -> a new order."""
    a = permutation(5, 0, 1000)
    assert np.array_equal(a, permutation(5, 0, 1000))
    assert not np.array_equal(a, permutation(5, 1, 1000))
    assert not np.array_equal(a, permutation(6, 0, 1000))


def test_positions_look_uniform():
    """Over many epochs each sample lands near the middle position on average."""
    n, epochs = 100, 400
    pos = np.zeros(n)
    for e in range(epochs):
        pos[permutation(1, e, n)] += np.arange(n)
    mean = pos / epochs
    # the mean position of a uniform shuffle is 49.5 with sd ~ 28.9/sqrt(400) = 1.44
    assert np.abs(mean - 49.5).max() < 8
    # no sample stays near its own index (the identity would give corr 1)
    p = permutation(1, 0, 10_000)
    assert abs(np.corrcoef(p, np.arange(10_000))[0, 1]) < 0.05
