"""The epoch orders: the keyed row shuffle and the block shuffle are bijections, seeded,
different per epoch, well mixed, and every evaluation of them (the NumPy reference, the
compiled scalar one of the CPU kernels, the C twin of the CuPy kernels) agrees."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources

import numpy as np
import pytest
from numba import njit

from fastgd.kernels import permutation as perm
from fastgd.kernels.cpu.common import perm_index
from fastgd.kernels.permutation import order, order_table, permutation


@njit
def _order_numba(table, n):
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = perm_index(i, table, n)
    return out


SIZES = [1, 2, 3, 7, 15, 16, 17, 64, 1000, 4097]


@pytest.mark.parametrize("block_rows", [0, 16, 256])
@pytest.mark.parametrize("n", SIZES)
def test_is_a_permutation_and_matches_compiled(n, block_rows):
    """Every index appears once; the Numba evaluation equals the NumPy one (a row shuffle,
    and block shuffles with and without a tail, fewer rows than a block included)."""
    seed = int(np.random.default_rng().integers(1 << 40))
    table = order_table(seed, 3, n, True, block_rows)
    p = order(table, n)
    assert np.array_equal(np.sort(p), np.arange(n))
    assert np.array_equal(p, _order_numba(table, n))
    if not block_rows:
        assert np.array_equal(p, permutation(seed, 3, n))


def test_in_order_table():
    """shuffle=False: the table says in order, every evaluation gives the identity."""
    table = order_table(1, 2, 50, False, 16)
    assert order(table, 50) is None
    assert np.array_equal(_order_numba(table, 50), np.arange(50))


@pytest.mark.parametrize("n", [4096, 5000])
def test_blocks_are_contiguous_runs(n):
    """A block shuffle visits each full block's rows one block at a time (the reads it is
    for), the blocks in a new order each epoch, and the tail's rows together."""
    b = 256
    rows = order(order_table(9, 0, n, True, b), n)
    full = n // b
    slot = int(order_table(9, 0, n, True, b)[perm.TAIL_SLOT])
    tail = n - full * b
    body = np.concatenate([rows[:slot * b], rows[slot * b + tail:]]).reshape(full, b)
    assert (body // b == body[:, :1] // b).all()  # one block per run of b positions
    assert np.array_equal(np.sort(body // b, axis=None).reshape(full, b)[:, 0], np.arange(full))
    assert (rows[slot * b:slot * b + tail] >= full * b).all()
    other = order(order_table(9, 1, n, True, b), n)
    assert not np.array_equal(rows, other)
    # the rows inside a block are permuted, and not the same way in every block
    offsets = body % b
    assert not np.array_equal(offsets[0], np.arange(b))
    assert not np.array_equal(offsets[0], offsets[1])


def test_block_rows_for():
    """Powers of two near 64 KiB of float32 features, at least 16 rows."""
    assert perm.block_rows_for(64) == 256 and perm.block_rows_for(784) == 16
    for d in (1, 3, 10, 100, 5000):
        b = perm.block_rows_for(d)
        assert b >= 16 and b & (b - 1) == 0
        assert b == 16 or 0.5 <= b * 4 * d / perm.BLOCK_BYTES <= 2
    with pytest.raises(ValueError, match="power of two"):
        order_table(0, 0, 100, True, 24)


_HARNESS = r"""
#include <cstdio>
#include <cstdlib>
#define __host__
#define __device__
#define __global__
typedef long long i64;
typedef unsigned long long u64;
%s
int main(int argc, char** argv) {
    const i64 n = atoll(argv[1]);
    u64* perm = new u64[argc - 2];
    for (int i = 0; i < argc - 2; ++i) perm[i] = strtoull(argv[2 + i], nullptr, 10);
    for (i64 i = 0; i < n; ++i) printf("%%lld\n", sample_at(i, perm, n));
}
"""


@pytest.fixture(scope="module")
def c_twin(tmp_path_factory):
    """The CuPy kernels' ``sample_at`` (``kernels/cu/dense.cu``), compiled for the host."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++) on PATH: the C twin of the shuffle is not checked")
    source = resources.files("fastgd.kernels").joinpath("cu/dense.cu").read_text()
    start = source.index("__host__ __device__ inline u64 perm_walk")
    end = source.index("// out[i] = sample_at(i)")
    folder = tmp_path_factory.mktemp("c_twin")
    (folder / "twin.cpp").write_text(_HARNESS % source[start:end])
    subprocess.run([cxx, "-O1", f"-DFASTGD_ROUNDS={perm.ROUNDS}",
                    f"-DFASTGD_PERM_FIRST={perm.FIRST}",
                    f"-DFASTGD_PERM_ORDERS={perm.TABLE_SIZE}",
                    "-o", str(folder / "twin"), str(folder / "twin.cpp")], check=True)
    return folder / "twin"


@pytest.mark.parametrize("block_rows", [0, 16])
@pytest.mark.parametrize("n", [1, 5, 16, 100, 1000])
def test_c_twin_matches_reference(c_twin, n, block_rows):
    """The C ``sample_at`` the GPU kernels use gives the reference's order (no GPU needed)."""
    table = order_table(12345, 4, n, True, block_rows)
    out = subprocess.run([str(c_twin), str(n), *map(str, table.tolist())], check=True,
                         capture_output=True, text=True).stdout.split()
    assert np.array_equal(np.array(out, np.int64), order(table, n))


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
