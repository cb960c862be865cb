"""The Numba CPU epoch driver: every step of an epoch in one compiled call.

:func:`run_epoch` walks the epoch's steps; for each it computes the batch gradient (rows
from ``linear.py`` or ``dense.py``) and applies the ``torch.optim.SGD`` update in place on
the flat ``theta``/``mom``. Python never runs per step.

Parallelism and determinism
---------------------------
A step's rows are split into ``groups`` contiguous ranges, a function of the batch size and
the model only (``n_groups``), never of the thread count; groups run in parallel into their
own row of ``partial`` and are summed in a fixed order, so results do not depend on the
number of threads. Small steps run serially (one group): the fork/join of a parallel region
costs more than a small batch's arithmetic.

Shuffled epochs
---------------
Sample indices come from a look-ahead ring (``common.RING`` positions ahead): each index
is computed once and its row prefetched before it is used. Serial steps share one ring
across the whole epoch (the look-ahead crosses step boundaries); a parallel group primes its
own ring and looks ahead within its range only.

Buffers: ``act`` (max_groups, >= sum(sizes)) scratch rows, ``partial`` (max_groups,
n_params), ``ring`` (max_groups, RING) int64. ``hyper = [lr, momentum, weight_decay]`` in the
parameters' dtype so the update loop stays in that dtype (float32 SIMD lanes are not widened).
"""

from __future__ import annotations

from numba import njit, prange

from .common import FASTMATH, n_groups, row_loss, sgd_update
from .dense import dense_loss_rows, dense_rows
from .linear import linear_logits, linear_rows, linear_sgd_step

_parallel = njit(cache=True, fastmath=FASTMATH, parallel=True, nogil=True)
_inline = njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")


@_inline
def _table(v, cfg, d):
    """``v`` as the ``(d + 1, k)`` table of a linear model (see ``linear.py``); a single
    row for an MLP, which does not use it."""
    return v.reshape((d + 1, v.size // (d + 1))) if cfg.linear else v.reshape((1, v.size))


@_inline
def _rows(X, Y, theta, T, act, grad, keys, ring, j0, j1, limit, primed, layout, cfg, scale):
    if cfg.linear:
        G = _table(grad, cfg, X.shape[1])
        linear_rows(X, Y, theta, T, act, grad, G, keys, ring, j0, j1, limit, primed, cfg,
                    scale)
    else:
        dense_rows(X, Y, theta, act, grad, keys, ring, j0, j1, limit, primed, layout, cfg,
                   scale)


@_parallel
def run_epoch(X, Y, theta, mom, hyper, keys, layout, act, partial, ring, cfg):
    """Run every step of one epoch in place on ``theta``/``mom``; returns the step count.

    ``X``: (n, d) C-contiguous; ``Y``: (n, k) targets (class id in column 0 for softmax).
    """
    n, d = X.shape
    bs = cfg.batch_size
    n_out = layout[0][layout[0].size - 1]
    T, M = _table(theta, cfg, d), _table(mom, cfg, d)
    n_steps = n // bs
    if n % bs and not cfg.drop_last:
        n_steps += 1
    serial_next = -1  # the position the serial ring (ring[0]) is primed for, -1 if none
    for step in range(n_steps):
        start = step * bs
        rows = min(bs, n - start)
        # mean reduction: MSELoss/BCEWithLogits over every element, CrossEntropy over rows
        scale = 1.0 / rows if cfg.loss == 2 else 1.0 / (rows * n_out)
        groups = n_groups(rows, cfg.rows_per_group, cfg.max_groups)
        if groups == 1:
            primed = serial_next == start
            if cfg.linear and rows == 1:
                linear_sgd_step(X, Y, theta, T, mom, M, hyper, keys, ring[0], start, primed,
                                act[0], cfg, scale)
            else:
                _rows(X, Y, theta, T, act[0], partial[0], keys, ring[0], start, start + rows,
                      n, primed, layout, cfg, scale)
                sgd_update(theta, mom, partial[0], hyper, cfg.nesterov)
            serial_next = start + rows
        else:
            for g in prange(groups):
                lo = start + g * rows // groups
                hi = start + (g + 1) * rows // groups
                _rows(X, Y, theta, T, act[g], partial[g], keys, ring[g], lo, hi, hi, False,
                      layout, cfg, scale)
            total = partial[0]
            for g in range(1, groups):
                other = partial[g]
                for i in range(total.size):
                    total[i] += other[i]
            sgd_update(theta, mom, total, hyper, cfg.nesterov)
            serial_next = -1
    return n_steps


@_parallel
def dataset_loss(X, Y, theta, layout, act, sums, cfg):
    """Mean loss over all rows of ``X`` (float64), rows split into fixed groups."""
    n = X.shape[0]
    n_out = layout[0][layout[0].size - 1]
    groups = n_groups(n, cfg.rows_per_group, cfg.max_groups)
    T = _table(theta, cfg, X.shape[1])
    for g in prange(groups):
        row = act[g]
        lo, hi = g * n // groups, (g + 1) * n // groups
        if cfg.linear:
            s = 0.0
            for r in range(lo, hi):
                linear_logits(X, r, theta, T, row, X.shape[1], T.shape[1])
                s += row_loss(row, 0, n_out, Y, r, cfg.loss)
        else:
            s = dense_loss_rows(X, Y, theta, row, lo, hi, layout, cfg)
        sums[g] = s
    total = 0.0
    for g in range(groups):
        total += sums[g]
    return total / n if cfg.loss == 2 else total / (n * n_out)
