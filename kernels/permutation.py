"""The epoch shuffle shared by every backend: a keyed bijection on ``[0, n)``.

Position ``i`` of epoch ``e`` visits sample ``permute(i)``; the permutation is a function of
``(seed, epoch, n)`` only, evaluated per index, so a kernel on the CPU or the GPU can compute
the sample it needs without an ``n``-sized index array, and every backend visits the samples
in the same order.

Construction: ``bits = ceil(log2(n))``; on the domain ``[0, 2**bits)`` apply ``ROUNDS`` rounds
of ``x ^= k0; x *= k1 (odd); x ^= x >> shift`` (each step is a bijection modulo ``2**bits``),
and cycle-walk: re-apply while the result is ``>= n``. The domain is less than ``2n``, so the
expected number of walks is below two. All arithmetic is unsigned 64-bit, wrapping.

Block shuffle (``shuffle="blocks"``)
------------------------------------
The rows are cut into ``nf = n // B`` full blocks of ``B`` contiguous rows (``B`` a power of
two, :func:`block_rows_for`) and a tail of ``t = n - nf * B`` rows. An epoch visits the
blocks in a keyed random order ``beta`` (the bijection above over ``nf``), the tail at a
keyed random slot among them, and the rows of each block in a keyed random order ``pi``
(a second bijection, over ``B``): position ``i`` outside the tail is full slot ``s = i' //
B`` (``i' = i``, or ``i - t`` after the tail) at offset ``o = i' % B``, and visits row
``beta[s] * B + pi[(o + beta[s]) % B]`` (rotating by the block gives each block its own
order); the tail's positions visit ``nf * B + tau[j]``, ``tau`` the second bijection
cycle-walked below ``t``. Each kernel then reads ``B`` contiguous rows (64 KiB of float32
features) before it jumps, and streams the next block in while it reads one (see
:func:`run_row`): near sequential speed, where a row shuffle jumps at every row.

Statistically a block shuffle is a full shuffle of the blocks, not of the rows: a batch
smaller than ``B`` draws its rows from one or two blocks, so rows that are neighbours in
the data are batched together more often than chance. On data whose order is already
random (a synthetic draw, a shuffled file) that is indistinguishable from a row shuffle; on
data sorted by class or by time, batches are far from representative: shuffle such data
once (``shuffle="once"``) or by rows.

The order table
---------------
Every backend evaluates the order from the same uint64 array (:func:`order_table`, copied to
the device by the GPU backends): a header ``[kind, B, nf, tail slot, log2 B]``, the two
bijections' keys (``mask, shift, 2 * ROUNDS keys`` each) and, for a block shuffle, the
orders themselves, ``beta`` (``nf``), ``pi`` (``B``) and ``tau`` (``t``) values, computed
on the host once an epoch (``n / B + B + t`` values: 33 KB for a million rows of 64 features),
so a kernel does two loads per row where it would evaluate three bijections. ``kind`` is 0
in order, 1 a row shuffle (the first bijection over ``n``, evaluated per row), 2 blocks.
:func:`sample_at` is the one scalar evaluation, compiled by Numba for the CPU and by
Numba-CUDA for the GPU kernels (``kernels/cu/dense.cu`` has its C twin); :func:`order` the
vectorised NumPy reference.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np

# the casts of the compiled ``sample_at``/``run_row`` (Numba and Numba-CUDA compile NumPy's
# scalar types as casts; importing numba here would make ``import fastgd`` need it)
int64, uint64 = np.int64, np.uint64

ROUNDS = 4
#: The order table: its header, then two bijections (mask, shift, 2 * ROUNDS keys each),
#: then (a block shuffle) the block order, the rows' order in a block, the tail's order.
KIND, BLOCK_ROWS, FULL_BLOCKS, TAIL_SLOT, BLOCK_SHIFT = 0, 1, 2, 3, 4
FIRST = 5
SECOND = FIRST + 2 + 2 * ROUNDS
TABLE_SIZE = SECOND + 2 + 2 * ROUNDS
IN_ORDER, ROWS, BLOCKS = 0, 1, 2
#: Bytes of float32 features one block of ``shuffle="blocks"`` holds (see block_rows_for).
BLOCK_BYTES = 64 * 1024
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


def epoch_key(seed: int, epoch: int, n: int, salt: int = 0) -> EpochKey:
    """Derive the permutation key of ``epoch`` for ``n`` samples from ``seed`` (``salt``
    gives an independent key from the same pair: the block shuffle's second bijection)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    bits = max(1, int(n - 1).bit_length())
    state = ((int(seed) & _MASK64) * 0x9E3779B97F4A7C15 + int(epoch) + 1) & _MASK64
    state = (state ^ (int(salt) * 0xD1B54A32D192ED03)) & _MASK64
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
    """The whole row permutation of an epoch as an int64 array (reference and tests)."""
    return order(order_table(seed, epoch, n, True), n)


# ----------------------------------------------------------------------------- the order table
def block_rows_for(n_features: int) -> int:
    """Rows per block of ``shuffle="blocks"``: the power of two nearest to
    ``BLOCK_BYTES / (4 * n_features)``, at least 16 (64 KiB of float32 features; a function
    of the width only, so float32 and float64 runs visit the same order)."""
    rows = BLOCK_BYTES / (4 * max(1, int(n_features)))
    return max(16, 1 << max(0, round(np.log2(rows))))


def _put(table: np.ndarray, at: int, key: EpochKey) -> None:
    table[at], table[at + 1] = key.mask, key.shift
    table[at + 2:at + 2 + 2 * ROUNDS] = key.keys


def table_size(n: int, shuffle: bool, block_rows: int = 0) -> int:
    """Length of the order table of an epoch over ``n`` rows (the same every epoch)."""
    if not (shuffle and block_rows):
        return TABLE_SIZE
    return TABLE_SIZE + n // block_rows + block_rows + n % block_rows


def order_table(seed: int, epoch: int, n: int, shuffle: bool, block_rows: int = 0
                ) -> np.ndarray:
    """The uint64 order table of an epoch over ``n`` rows: in order (``shuffle`` False), a
    row shuffle (``block_rows`` 0) or a block shuffle of ``block_rows`` (a power of two)."""
    table = np.zeros(table_size(n, shuffle, block_rows), np.uint64)
    if not shuffle:
        return table
    if not block_rows:
        table[KIND] = ROWS
        _put(table, FIRST, epoch_key(seed, epoch, n))
        return table
    b = int(block_rows)
    if b < 1 or b & (b - 1):
        raise ValueError(f"block_rows must be a power of two; got {b}")
    full, tail = divmod(n, b)
    table[KIND], table[BLOCK_ROWS], table[FULL_BLOCKS] = BLOCKS, b, full
    table[BLOCK_SHIFT] = b.bit_length() - 1  # x // b as a shift
    # the tail's slot among the full blocks, from the same (seed, epoch)
    _, draw = _splitmix64(((int(seed) & _MASK64) * 0xA0761D6478BD642F + int(epoch)) & _MASK64)
    table[TAIL_SLOT] = draw % (full + 1) if tail else 0
    _put(table, FIRST, epoch_key(seed, epoch, max(full, 1)))
    _put(table, SECOND, epoch_key(seed, epoch, b, salt=1))
    at = TABLE_SIZE
    for count, key_at, limit in ((full, FIRST, full), (b, SECOND, b), (tail, SECOND, tail)):
        table[at:at + count] = _walk_all(table, count, key_at, limit)
        at += count
    return table


def walk(x, table, at, limit):
    """The bijection stored at ``table[at:]`` applied to ``x`` (uint64) with cycle-walking
    below ``limit``. The multiplier is masked first: ``(x * k) & mask == (x * (k & mask)) &
    mask``, and for domains up to ``2**32`` the product never wraps (the CUDA simulator
    computes with NumPy scalars, which warn on overflow)."""
    mask, shift = table[at], table[at + 1]
    while True:
        for r in range(ROUNDS):
            x = (x ^ table[at + 2 + 2 * r]) & mask
            x = (x * (table[at + 3 + 2 * r] & mask)) & mask
            x = x ^ (x >> shift)
        if x < limit:
            return x


def sample_at(pos, table, n):
    """The row visited at position ``pos`` of an epoch over ``n`` rows (int64).

    Scalar, written once for the compiled kernels: Numba compiles it for the CPU and
    Numba-CUDA for the GPU (``kernels/cu/dense.cu`` is its C twin). Every value is uint64
    (a uint64 mixed with a signed integer would become a float in Numba)."""
    kind = table[KIND]
    if kind == IN_ORDER:
        return int64(pos)
    x = uint64(pos)
    if kind == ROWS:
        return int64(walk(x, table, FIRST, uint64(n)))
    b, full = table[BLOCK_ROWS], table[FULL_BLOCKS]
    lo = table[TAIL_SLOT] * b
    tail = uint64(n) - full * b
    if x >= lo and x - lo < tail:
        return int64(full * b + table[uint64(TABLE_SIZE) + full + b + x - lo])
    if x >= lo:
        x = x - tail
    block = table[uint64(TABLE_SIZE) + (x >> table[BLOCK_SHIFT])]
    inner = table[uint64(TABLE_SIZE) + full + ((x + block) & (b - uint64(1)))]
    return int64(block * b + inner)


def run_row(pos, table, n):
    """For a block shuffle, the row a prefetch for position ``pos`` asks for: row ``o`` of
    the block ``pos`` visits (or of the tail) in storage order, ``o`` being ``pos``'s
    offset in that block's run of positions. Positions advancing through a run thus walk
    its block sequentially, which the hardware prefetcher follows, while the visits
    themselves are in the permuted order (``kernels/cpu/common.py`` asks one block ahead).
    """
    x = uint64(pos)
    b, full = table[BLOCK_ROWS], table[FULL_BLOCKS]
    lo = table[TAIL_SLOT] * b
    tail = uint64(n) - full * b
    if x >= lo and x - lo < tail:
        return int64(full * b + x - lo)
    if x >= lo:
        x = x - tail
    block = table[uint64(TABLE_SIZE) + (x >> table[BLOCK_SHIFT])]
    return int64(block * b + (x & (b - uint64(1))))


def compile_sample_at(decorate, name: str, fn=None):
    """:func:`sample_at` (or ``fn``, :func:`run_row`) compiled by ``decorate``
    (``njit(...)`` or ``cuda.jit(device=True)``), calling :func:`walk` compiled by the same
    decorator, under its own name ``name`` (its own Numba cache entry)."""
    fn = sample_at if fn is None else fn
    scope = dict(fn.__globals__, walk=decorate(walk))
    copy = types.FunctionType(fn.__code__, scope, name)
    copy.__qualname__, copy.__doc__, copy.__module__ = name, fn.__doc__, __name__
    return decorate(copy)


def _walk_all(table: np.ndarray, count: int, at: int, limit: int) -> np.ndarray:
    """:func:`walk` on positions ``0 .. count`` (int64 out), as :func:`permutation`
    evaluates it."""
    keys, mask, shift = table[at + 2:at + 2 + 2 * ROUNDS], table[at], table[at + 1]
    x = mix(np.arange(count, dtype=np.uint64), keys, mask, shift)
    out_of_range = x >= np.uint64(limit)
    while out_of_range.any():  # cycle-walking
        x[out_of_range] = mix(x[out_of_range], keys, mask, shift)
        out_of_range = x >= np.uint64(limit)
    return x.astype(np.int64)


#: Elements of the rotated offsets a block shuffle's reference gathers at once.
ORDER_CHUNK = 2048


def order(table: np.ndarray, n: int) -> np.ndarray | None:
    """The reference: every position's row of an epoch, vectorised (int64), or ``None`` for
    an epoch in order."""
    kind = int(table[KIND])
    if kind == IN_ORDER:
        return None
    if kind == ROWS:
        return _walk_all(table, n, FIRST, n)
    b, full, slot = int(table[BLOCK_ROWS]), int(table[FULL_BLOCKS]), int(table[TAIL_SLOT])
    tail = n - full * b
    blocks = table[TABLE_SIZE:TABLE_SIZE + full].astype(np.int64)
    inner = table[TABLE_SIZE + full:TABLE_SIZE + full + b].astype(np.int64)
    rows = np.empty(n, np.int64)
    lo = slot * b
    rows[lo:lo + tail] = full * b + table[TABLE_SIZE + full + b:].astype(np.int64)
    step = max(1, ORDER_CHUNK // b)  # whole blocks per chunk
    for part, chosen in ((rows[:lo], blocks[:slot]), (rows[lo + tail:], blocks[slot:])):
        grid = part.reshape(len(chosen), b)
        for c in range(0, len(chosen), step):
            sub, blk = grid[c:c + step], chosen[c:c + step, None]
            np.add(np.arange(b), blk, out=sub)  # offset o of a block, rotated by the block
            sub &= b - 1
            sub[...] = inner[sub]
            sub += blk * b
    return rows


def order_peak(n: int, block_rows: int = 0) -> int:
    """Peak bytes of making an epoch's order table and its :func:`order` over ``n`` rows
    (what the reference backend does each epoch): a row shuffle's uint64 ``x``, the new
    array of each expression of ``mix`` (one more when too small to be reused in place) or
    its bool out-of-range mask, and the int64 result; a block shuffle's table, beside
    either the working arrays of its largest bijection evaluation (four 8-byte arrays and a
    mask) or the int64 result, the block and in-block orders as int64, and the tail's order
    or one chunk of gathered offsets."""
    if not block_rows:
        x = 8 * n
        return x + max(x + (x if x < 256 * 1024 else 0), x + n)
    b = int(block_rows)
    full, tail = divmod(n, b)
    table = 8 * table_size(n, True, b)
    make = 33 * max(full, b, tail)
    use = 8 * n + 8 * (full + b) + max(16 * tail, 8 * b + 8 * min(n, max(b, ORDER_CHUNK)))
    return table + max(make, use)
