"""Host-side tables shared by the GPU kernel families (``kernels/cuda`` for Numba-CUDA,
``kernels/cu`` for CuPy): both read the same layer table and the same shuffle array, so
their kernels index parameters and evaluate the epoch permutation identically.
"""

from __future__ import annotations

import numpy as np

from .permutation import FIRST, SECOND, TABLE_SIZE, order_table, table_size  # noqa: F401

# Largest block size the kernels launch with (the size of the block reductions' shared
# array; above it the step kernels would need more registers than a block has).
MAX_THREADS = 256

# The cooperative kernels' decomposition of a step (the same on every GPU, so the bits do
# not depend on the device): a block's threads work together on a tile of rows whose
# activations and deltas live in shared memory; block ``b`` takes tiles ``b, b + blocks,
# ...``. A tile holds at most ``TILE_MAX`` rows (the row-id array's size) and at most
# ``SHARED_BUDGET`` bytes of activations; a step aims at ``TARGET_TILES`` tiles (enough
# blocks to spread over the SMs of a large GPU) and uses at most ``MAX_BLOCKS`` blocks.
# A small network's parameters are copied into shared memory too, after the tile (every
# block reads each weight once per tile row, and the backward pass reads them by row, not
# by column: shared memory serves both without the cache misses), when they and at least
# one row fit the ``DYNAMIC_MAX`` bytes a block may use beside the kernels' static arrays
# (``STATIC_RESERVE``) within the 48 KiB it gets without an opt-in (64-128-10 in float32:
# 37.5 KiB of weights and tiles of up to 4 rows).
TILE_MAX = 32
SHARED_BUDGET = 36 * 1024
STATIC_RESERVE = 4 * 1024
DYNAMIC_MAX = 48 * 1024 - STATIC_RESERVE
TARGET_TILES = 128
MAX_BLOCKS = 512


# A step is one launch (its last block sums the blocks' partial gradients and updates) while
# that sum has at most ``FUSED_MAX`` terms; above, a second launch with a thread per
# parameter spreads it over the device (the same order: the same bits either way). A
# throughput constant, not a correctness one: to be tuned where a GPU is lent.
FUSED_MAX = 1 << 16


def fused_step(blocks: int, n_params: int) -> bool:
    """Whether a step of ``blocks`` blocks on ``n_params`` parameters is one launch."""
    return blocks * n_params <= FUSED_MAX


def weights_shared(width: int, itemsize: int, n_params: int) -> bool:
    """Whether the kernels keep the ``n_params`` parameters in shared memory (they and one
    row of activations ``width = sum(sizes)`` wide fit :data:`DYNAMIC_MAX`)."""
    return 0 < n_params and (n_params + 2 * width) * itemsize <= DYNAMIC_MAX


def max_tile_rows(width: int, itemsize: int, n_params: int = 0) -> int:
    """The most rows a tile holds for activations ``width = sum(sizes)`` wide (two halves,
    activations and deltas) of ``itemsize`` bytes, beside the parameters when they are in
    shared memory; ``ValueError`` when not even one row fits the shared-memory budget."""
    budget = SHARED_BUDGET
    if weights_shared(width, itemsize, n_params):
        budget = min(budget, DYNAMIC_MAX - n_params * itemsize)
    fit = budget // (2 * width * itemsize)
    if fit < 1:
        raise ValueError(
            f"the GPU kernels keep a row's activations in shared memory: a network whose "
            f"layer sizes sum to {width} needs {2 * width * itemsize} bytes a row, more than "
            f"the {SHARED_BUDGET} available; use smaller layers or backend='numba-cpu'")
    return min(TILE_MAX, fit)


def tile_rows(width: int, itemsize: int, rows: int, n_params: int = 0) -> int:
    """Rows per tile of a step of ``rows`` rows: about ``rows / TARGET_TILES``, at least
    one, at most :func:`max_tile_rows` (a function of the model, dtype and batch size only)."""
    return max(1, min(max_tile_rows(width, itemsize, n_params), -(-rows // TARGET_TILES)))


def max_blocks(width: int, itemsize: int, n: int, n_params: int = 0) -> int:
    """The most blocks :func:`launch_shape` gives any launch over at most ``n`` rows (the
    rows of the per-block buffers): at most ``TARGET_TILES`` while a tile is below its
    maximum, ``ceil(n / max tile)`` beyond."""
    tiles = max(min(n, TARGET_TILES), -(-n // max_tile_rows(width, itemsize, n_params)))
    return max(1, min(MAX_BLOCKS, tiles))


def launch_shape(width: int, itemsize: int, rows: int,
                 n_params: int = 0) -> tuple[int, int, int, bool]:
    """``(blocks, tile rows, dynamic shared bytes, parameters in shared memory)`` of a
    launch over ``rows`` rows of a network of ``n_params`` parameters (0: never in shared
    memory)."""
    tile = tile_rows(width, itemsize, rows, n_params)
    shared = weights_shared(width, itemsize, n_params)
    nbytes = (tile * 2 * width + (n_params if shared else 0)) * itemsize
    return min(MAX_BLOCKS, -(-rows // tile)), tile, nbytes, shared

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
