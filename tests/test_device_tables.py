"""The GPU kernels' launch decomposition (``kernels/device_tables.py``), shared by both GPU
backends: a function of the model, the dtype and the batch size only, within the shared
memory and block limits, and never more blocks than the per-block buffers hold."""

from __future__ import annotations

import numpy as np
import pytest

from fastgd.kernels import device_tables as dt

WIDTHS = [(6, 8), (202, 4), (202, 8), (922, 4), (3594, 4)]  # sum(sizes), itemsize


@pytest.mark.parametrize("width,item", WIDTHS)
def test_every_launch_fits_and_covers_its_rows(width, item):
    """For every row count up to n: the tile fits the shared budget and TILE_MAX, the
    blocks' tiles cover the rows, and no launch has more blocks than ``max_blocks(n)``
    (the rows of the per-block buffers), for several n."""
    rng = np.random.default_rng()
    for n in (1, 2, 127, 128, 129, 300, 4097, int(rng.integers(1, 200_000))):
        cap = dt.max_blocks(width, item, n)
        rows_seen = sorted({1, min(2, n), n, *rng.integers(1, n + 1, 200).tolist()})
        for rows in rows_seen:
            blocks, tile, shared, wsh = dt.launch_shape(width, item, rows)
            assert 1 <= tile <= dt.TILE_MAX and shared == tile * 2 * width * item
            assert shared <= dt.SHARED_BUDGET and not wsh  # no parameters given
            assert 1 <= blocks <= min(cap, dt.MAX_BLOCKS)
            tiles = -(-rows // tile)
            assert blocks == min(tiles, dt.MAX_BLOCKS)  # every block has a tile


def test_max_blocks_is_reached():
    """The bound is tight: some row count up to n needs exactly max_blocks(n) blocks."""
    for n in (5, 128, 129, 1000, 100_000):
        cap = dt.max_blocks(202, 4, n)
        assert max(dt.launch_shape(202, 4, r)[0] for r in range(1, n + 1, max(1, n // 3000))
                   ) <= cap
        assert any(dt.launch_shape(202, 4, r)[0] == cap for r in (min(n, 128), n))


def test_the_decomposition_depends_on_the_batch_only():
    """Small batches get one-row tiles (up to TARGET_TILES blocks); larger ones grow the
    tile to about rows / TARGET_TILES, up to what the shared memory holds."""
    assert dt.launch_shape(202, 4, 32) == (32, 1, 1616, False)
    assert dt.launch_shape(202, 4, 256) == (128, 2, 2 * 1616, False)
    assert dt.launch_shape(202, 4, 1024)[:2] == (128, 8)
    biggest = dt.max_tile_rows(202, 4)
    assert dt.launch_shape(202, 4, 10_000_000)[:2] == (dt.MAX_BLOCKS, biggest)


def test_a_row_too_wide_for_shared_memory_is_a_clear_error():
    """A network whose row of activations exceeds the shared budget is refused, naming
    the sizes and what to do."""
    with pytest.raises(ValueError, match=r"layer sizes sum to 5000.*numba-cpu"):
        dt.max_tile_rows(5000, 4)


@pytest.mark.parametrize("sizes,item,shared", [((64, 128, 10), 4, True), ((64, 128, 10), 8, False),
                                               ((5, 6, 3), 8, True), ((784, 128, 10), 4, False)])
def test_parameters_in_shared_memory_when_they_fit(sizes, item, shared):
    """A small network's parameters go to shared memory after the tile when they and at
    least one row fit the dynamic budget (64-128-10 in float32: 37.5 KiB, tiles of up to
    4 rows); every launch then stays within it, and the tiles shrink to make room."""
    width = sum(sizes)
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
    assert dt.weights_shared(width, item, params) is shared
    for rows in (1, 32, 256, 1024, 100_000):
        blocks, tile, nbytes, wsh = dt.launch_shape(width, item, rows, params)
        assert wsh is shared
        assert nbytes == (tile * 2 * width + (params if shared else 0)) * item
        assert nbytes <= (dt.DYNAMIC_MAX if shared else dt.SHARED_BUDGET)
        assert blocks <= dt.max_blocks(width, item, rows, params)
    if sizes == (64, 128, 10) and item == 4:
        assert dt.max_tile_rows(width, item, params) == 4
