"""Pieces shared by the Numba CPU kernel families (``linear.py``, ``dense.py``, ``epoch.py``).

- :class:`EpochConfig`: the scalars of one epoch call.
- The shuffle, evaluated per position (:func:`perm_index`: ``kernels.permutation.sample_at``
  on the epoch's order table, a row or a block shuffle), with a small look-ahead ring
  (:func:`ring_prime`, :func:`ring_take`) so each sample index is computed once and its row
  is prefetched ``RING`` positions before it is used.
- Loss values and loss gradients of one row of logits (PyTorch's definitions).

The loss, activation and optimizer codes are ``kernels/codes.py``'s; the optimizers' update
is in ``optim.py``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from .. import noise
from ..codes import ACTIVATION_CODES, LOSS_CODES  # noqa: F401 (re-exported)
from ..permutation import BLOCK_ROWS, BLOCKS, compile_sample_at
from ..permutation import KIND as BLOCKS_KIND
from ..permutation import run_row as run_row_py
from .prefetch import prefetch_row, prefetch_row_l2

# Reassociation lets LLVM vectorise the float reductions (dot products); NaN/inf semantics
# are kept ("nnan"/"ninf" are not set) so divergence stays visible.
FASTMATH = {"reassoc", "contract", "nsz"}

# Positions of look-ahead in a shuffled epoch: row ``j + RING`` is requested while row ``j``
# is processed (a power of two; measured on the 2-core EPYC, see bench/RESULTS.md).
RING = 16
_RING_MASK = RING - 1


class EpochConfig(NamedTuple):
    """Scalars of one epoch call (a typed tuple for Numba, not 20 positional arguments).
    ``step0`` is the global steps done before the epoch (step ``s`` of the epoch is
    optimizer step ``step0 + s + 1``); the call runs the epoch's steps ``start .. stop``;
    the optimizer itself is a constant of the driver."""

    batch_size: int
    drop_last: bool
    shuffle: bool
    loss: int
    activation: int
    step0: int
    start: int
    stop: int
    rows_per_group: int
    max_groups: int


jit = njit(cache=True, fastmath=FASTMATH, nogil=True)
# Two ways to inline a helper into the kernels that call it, chosen per helper by measuring:
# - ``inline``: compiled once per signature and inlined by LLVM (``forceinline`` marks it
#   ``alwaysinline``), so its constant arguments still fold away in each caller. The
#   default: Numba's IR-level inlining deep-copies the callee's IR at every call site, with
#   the whole variable scope of everything already inlined into it, so nested helpers cost
#   compile time that grows much faster than the code (the linear serial driver took 66 s
#   to compile, 51 s of it in that pass; 9 s this way, with the same epoch times).
#   ``error_model="numpy"`` as in the drivers: a helper compiled on its own would
#   otherwise check every float division for zero, and those branches keep loops scalar.
# - ``inline_ir``: inlined at the Numba IR level, typed inside the caller. Kept where LLVM
#   inlining measured slower: the loops inside the MLP tile passes (``dense.py``; MLP
#   64-128-10 batch 32 at ~147 ms an epoch against ~120), the shuffle's look-ahead ring
#   (row-shuffled linear batch 256 at ~87 against ~68 ms), and the linear kernels' step
#   bodies, which make views of ``theta`` (a view made in a separately compiled function
#   is reference counted).
inline = njit(cache=True, fastmath=FASTMATH, nogil=True, forceinline=True,
              error_model="numpy")
inline_ir = njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
_leaf = njit(cache=True, nogil=True, forceinline=True, error_model="numpy")
#: ``perm_index(i, table, n)``: the row visited at position ``i`` of an epoch whose order
#: table (``kernels.permutation.order_table``) is ``table``.
perm_index = compile_sample_at(_leaf, "perm_index")
#: ``run_row(i, table, n)``: a block shuffle's storage-order row at position ``i``'s run offset.
run_row = compile_sample_at(_leaf, "run_row", run_row_py)


@inline_ir
def prefetch_run(X, Y, keys, j, n):
    """A block shuffle visits a block's rows in a permuted order, which the hardware
    prefetcher cannot follow; so position ``j`` also asks (into L2) for row ``j``'s run
    offset of the block visited one block later: while a block is read in its permuted
    order, the next one streams in sequentially (measured, linear d=64 batch 256: 20 ns a
    row without it, against 15 in order). A no-op for a row shuffle."""
    if keys[BLOCKS_KIND] == BLOCKS:
        ahead = j + np.int64(keys[BLOCK_ROWS])
        if ahead < n:
            r = run_row(ahead, keys, n)
            prefetch_row_l2(X, r)
            prefetch_row_l2(Y, r)


@inline_ir
def ring_prime(X, Y, ring, keys, cfg, j0, limit):
    """Fill ``ring`` with the samples of positions ``j0 .. j0+RING`` (below ``limit``) and
    request their rows."""
    n = X.shape[0]
    for j in range(j0, min(j0 + RING, limit)):
        r = perm_index(j, keys, n)
        ring[j & _RING_MASK] = r
        prefetch_row(X, r)
        prefetch_row(Y, r)
    if keys[BLOCKS_KIND] == BLOCKS:  # the current block, in storage order
        for j in range(j0, min(j0 + np.int64(keys[BLOCK_ROWS]), limit)):
            r = run_row(j, keys, n)
            prefetch_row_l2(X, r)
            prefetch_row_l2(Y, r)


@inline_ir
def ring_take(X, Y, ring, keys, cfg, j, limit):
    """Sample of position ``j`` (primed earlier); refill its slot with position ``j+RING``."""
    slot = j & _RING_MASK
    r = ring[slot]
    ahead = j + RING
    if ahead < limit:
        r_ahead = perm_index(ahead, keys, X.shape[0])
        ring[slot] = r_ahead
        prefetch_row(X, r_ahead)
        prefetch_row(Y, r_ahead)
    prefetch_run(X, Y, keys, j, X.shape[0])
    return r


@inline
def step_bounds(step, n, cfg, n_out):
    """``(start, rows, scale)`` of step ``step``: its first position, its row count and the
    mean-reduction factor (MSELoss/BCEWithLogits average every element, CrossEntropy rows)."""
    start = step * cfg.batch_size
    rows = min(cfg.batch_size, n - start)
    scale = 1.0 / rows if cfg.loss == 2 else 1.0 / (rows * n_out)
    return start, rows, scale


@inline
def row_sq(X, r, d):
    """``|X[r, :d]|^2`` in float64 (a per-example gradient norm's input factor)."""
    s = 0.0
    for p in range(d):
        v = np.float64(X[r, p])
        s += v * v
    return s


_step_estimates = _leaf(noise.step_estimates)


@inline
def add_noise_estimates(acc, grad, sq, rows, n):
    """Add one step's unbiased ``(tr(Sigma), |G|^2)`` estimates and a count to ``acc``
    (``kernels/noise.py``): ``grad`` is the batch's mean gradient and ``sq`` the sum over
    its rows of ``|g_i|^2`` with the batch's scale (each own-loss gradient is ``rows``
    times a row's share, so ``S_B = sq * rows``). Steps of one row are skipped."""
    if rows < 2:
        return
    g2 = 0.0
    for i in range(grad.size):
        v = np.float64(grad[i])
        g2 += v * v
    trace, grad_sq = _step_estimates(sq * rows, g2, rows, n)
    acc[0] += trace
    acc[1] += grad_sq
    acc[2] += 1.0


@jit
def n_groups(rows, rows_per_group, max_groups):
    """How many parallel groups a step of ``rows`` rows is split into (thread-independent)."""
    g = (rows + rows_per_group - 1) // rows_per_group
    return max(1, min(g, max_groups))


@inline
def row_loss(z, o, n_out, Y, r, loss):
    """Loss of one row of logits ``z[o:o + n_out]`` against targets ``Y[r]`` (summed over
    outputs), in float64. (``Y, r`` rather than a row view: a view per row costs reference
    counting.)"""
    s = 0.0
    if loss == 0:
        for q in range(n_out):
            d = np.float64(z[o + q]) - np.float64(Y[r, q])
            s += d * d
    elif loss == 1:
        for q in range(n_out):
            v = np.float64(z[o + q])
            s += max(v, 0.0) - v * np.float64(Y[r, q]) + math.log1p(math.exp(-abs(v)))
    else:
        zmax = np.float64(z[o])
        for q in range(n_out):
            zmax = max(zmax, np.float64(z[o + q]))
        e = 0.0
        for q in range(n_out):
            e += math.exp(np.float64(z[o + q]) - zmax)
        s = zmax + math.log(e) - np.float64(z[o + np.uint64(Y[r, 0])])
    return s


@inline
def unit_grad(v, t, loss, scale):
    """``scale * dLoss/dv`` of one logit ``v`` against its target ``t`` for the elementwise
    losses, MSE (0) and BCEWithLogits (1); any other code is taken as 1 (a softmax needs the
    whole row, see :func:`loss_and_grad`). ``v - t`` is taken in the input dtype and the
    rest in float64, exactly as the row path did before, so the bits are the same. A scalar
    in and out, so a single-output model keeps it in a register (a round trip through the
    logits row in memory measured 13.3 against 11.4 ns a row, linear d=64, batch 256)."""
    if loss == 0:
        return 2 * (v - t) * scale
    if v >= 0:
        p = 1 / (1 + math.exp(-v))
    else:
        e = math.exp(v)
        p = e / (1 + e)
    return (p - t) * scale


@inline
def unit_grad_loss(v, t, loss, scale):
    """``(unit_grad(v, t, loss, scale), the loss of v against t)`` for the elementwise
    losses, the loss in the data's dtype (the caller sums a tile's rows, then adds in
    float64). The gradient's bits are :func:`unit_grad`'s.

    The batch loss is reported, never differentiated, so the data's dtype is enough (a
    relative error of about 1e-7 a row in float32); converting every row to float64 cost
    10% of a memory-bound epoch (linear 1M x 64 float32, batch 256: 11.9 against 10.6 ms).
    BCEWithLogits shares the sigmoid's exponential: ``e = exp(-|v|)`` gives both the
    sigmoid and ``log1p(e)`` (a separate float64 loss evaluation measured 32 ms an epoch,
    this 25, against 22 without a loss; logistic 1M x 64 float32, batch 256)."""
    if loss == 0:
        err = v - t
        return 2 * err * scale, err * err
    if v >= 0:
        e = math.exp(-v)
        p = 1 / (1 + e)
    else:
        e = math.exp(v)
        p = e / (1 + e)
    zero = v - v
    return (p - t) * scale, max(v, zero) - v * t + math.log1p(e)


@inline
def row_weight(Y, r, n_targets):
    """Row ``r``'s sample weight: ``Y``'s extra last column when it has one (more than the
    ``n_targets`` target columns: ``fit(sample_weight=...)``), else 1. A weighted batch
    loss is the mean of ``w_i * loss_i`` (PyTorch's ``(criterion(reduction="none") *
    w).mean()``), so a row's gradient is scaled by its weight; the check is one compare of
    the shape, the same for every row."""
    if Y.shape[1] > n_targets:
        return Y[r, Y.shape[1] - 1]
    return Y.dtype.type(1)


@inline
def add_batch_loss(acc, loss_sum, scale, rows):
    """Add one step's mean batch loss times its rows, and its rows, to ``acc`` (float64, 2):
    ``loss_sum`` is the step's rows' losses summed over outputs; ``scale`` the step's
    mean-reduction factor."""
    acc[0] += loss_sum * scale * rows
    acc[1] += rows


@inline
def loss_and_grad(z, o, n_out, Y, r, loss, scale):
    """Loss of one row of logits ``z[o:o + n_out]`` against targets ``Y[r]`` (summed over
    outputs, float64, as :func:`row_loss`), and overwrite the logits with
    ``scale * dLoss/dz``. A softmax row takes its exponentials once for both (a separate
    ``row_loss`` took them again, about half the time of this step for ten classes); the
    loss comes from those exponentials in the data's dtype (it is reported, never
    differentiated)."""
    if loss != 2:
        row = row_loss(z, o, n_out, Y, r, loss)
        for q in range(n_out):
            z[o + q] = unit_grad(z[o + q], Y[r, q], loss, scale)
        return row
    zmax = z[o]
    for q in range(n_out):
        zmax = max(zmax, z[o + q])
    label = np.uint64(Y[r, 0])
    picked = np.float64(z[o + label])
    total = 0.0
    for q in range(n_out):
        z[o + q] = math.exp(z[o + q] - zmax)
        total += z[o + q]
    for q in range(n_out):
        z[o + q] = (z[o + q] / total - (1.0 if q == label else 0.0)) * scale
    return np.float64(zmax) + math.log(total) - picked
