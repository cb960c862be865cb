"""Numba CPU kernels for dense networks (linear models are networks with no hidden layer).

One call of :func:`dense_epoch` runs every step of an epoch in compiled code: the shuffle
(evaluated per index, see ``kernels/permutation.py``), the forward pass, the loss gradient,
backpropagation and the fused ``torch.optim.SGD`` update. Python never runs per step.

Memory layout
-------------
- ``theta``/``mom``: flat parameter and momentum vectors, ``W1, b1, W2, b2, ...``; ``W`` of
  layer ``l`` is row-major ``(sizes[l], sizes[l+1])`` starting at ``w_off[l]``.
- ``act``: one scratch row per group: the input row at ``act_off[0] = 0``, then layer
  ``l``'s output at ``act_off[l + 1]``. Offsets and sizes are uint64 (see ``forward_row``).
  Each sample is pushed forward and backward before the next one starts, so activations
  never need more than one row per group (no batch-sized buffer) and the weights stay in
  cache between the two passes. The backward pass overwrites a layer's output with its
  gradient in place.
- ``partial``: one gradient vector per group. A step's rows are split into ``groups``
  contiguous ranges (a function of the batch size and the model only, never of the thread
  count); groups run in parallel and their partial gradients are summed in a fixed order,
  so results do not depend on the number of threads.

Hyper-parameters travel in ``hyper = [lr, momentum, weight_decay]`` of the parameters'
dtype so that the update loop stays in that dtype (float32 SIMD lanes are not widened).
Codes: loss 0 mse, 1 logistic, 2 softmax; activation 0 relu, 1 tanh, 2 sigmoid.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from ..permutation import mix
from .prefetch import prefetch_row

# Rows ahead whose cache lines are requested while the current row is processed (shuffled
# epochs only; measured on the 2-core EPYC, see bench/RESULTS.md).
PREFETCH_DISTANCE = 8

# Reassociation lets LLVM vectorise the float reductions (dot products); NaN/inf semantics
# are kept ("nnan"/"ninf" are not set) so divergence stays visible.
FASTMATH = {"reassoc", "contract", "nsz"}

LOSS_CODES = {"mse": 0, "logistic": 1, "softmax": 2}
ACTIVATION_CODES = {"relu": 0, "tanh": 1, "sigmoid": 2}


class EpochConfig(NamedTuple):
    """Scalars of one epoch call (a typed tuple for Numba, not 20 positional arguments)."""

    batch_size: int
    drop_last: bool
    shuffle: bool
    loss: int
    activation: int
    nesterov: bool
    rows_per_group: int
    max_groups: int
    perm_mask: np.uint64
    perm_shift: np.uint64


_jit = njit(cache=True, fastmath=FASTMATH, nogil=True)
# Helpers called once per row are inlined at the Numba IR level: returned array views then
# need no reference counting (atomic increments per call cost more than a 64-wide dot).
_inline = njit(cache=True, fastmath=FASTMATH, nogil=True, inline="always")
_mix = njit(cache=True, nogil=True)(mix)


@njit(cache=True, nogil=True, inline="always")
def perm_index(i, keys, mask, shift, n):
    """Sample visited at position ``i``: the keyed bijection with cycle-walking."""
    x = np.uint64(i)
    nn = np.uint64(n)
    while True:
        x = _mix(x, keys, mask, shift)
        if x < nn:
            return np.int64(x)


@_jit
def n_groups(rows, rows_per_group, max_groups):
    """How many parallel groups a step of ``rows`` rows is split into (thread-independent)."""
    g = (rows + rows_per_group - 1) // rows_per_group
    return max(1, min(g, max_groups))


@_inline
def _activate(z, code):
    if code == 0:
        return z if z > 0 else z * 0
    if code == 1:
        return math.tanh(z)
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


@_inline
def _activation_grad(a, code):
    """Derivative of the activation from its output ``a``."""
    if code == 0:
        return 1.0 if a > 0 else 0.0
    if code == 1:
        return 1 - a * a
    return a * (1 - a)


@_inline
def forward_row(x, theta, act, sizes, w_off, b_off, act_off, activation):
    """Push one input row ``x`` through the network; layer ``l``'s output lands at
    ``act[act_off[l + 1]:]`` (the row itself is copied to ``act[0:d]``).

    All offsets are uint64 and loops run over uint64 ranges: a signed index computed from an
    offset gets a negative-index wraparound check that stops LLVM from vectorising, and
    slicing views per row costs atomic reference counting once branches are involved
    (both measured: 4x and 3x slower).
    """
    for p in range(x.size):
        act[p] = x[p]
    n_layers = sizes.size - 1
    for l in range(n_layers):
        n_in, n_out = sizes[l], sizes[l + 1]
        wo, bo, si, so = w_off[l], b_off[l], act_off[l], act_off[l + 1]
        if n_out == 1:
            # single output: a contiguous dot product (vectorised thanks to reassoc)
            s = theta[bo]
            for p in range(n_in):
                s += act[si + p] * theta[wo + p]
            act[so] = s
        else:
            # several outputs: add rows of W (contiguous in q) scaled by the inputs, four
            # rows per pass so each load/store of the output feeds four FMAs
            for q in range(n_out):
                act[so + q] = theta[bo + q]
            p4 = n_in - n_in % np.uint64(4)
            for p in range(np.uint64(0), p4, np.uint64(4)):
                a0, a1 = act[si + p], act[si + p + np.uint64(1)]
                a2, a3 = act[si + p + np.uint64(2)], act[si + p + np.uint64(3)]
                r0 = wo + p * n_out
                r1, r2, r3 = r0 + n_out, r0 + np.uint64(2) * n_out, r0 + np.uint64(3) * n_out
                for q in range(n_out):
                    act[so + q] += (a0 * theta[r0 + q] + a1 * theta[r1 + q]
                                    + a2 * theta[r2 + q] + a3 * theta[r3 + q])
            for p in range(p4, n_in):
                a = act[si + p]
                r0 = wo + p * n_out
                for q in range(n_out):
                    act[so + q] += a * theta[r0 + q]
        if l < n_layers - 1:
            for q in range(n_out):
                act[so + q] = _activate(act[so + q], activation)


@_inline
def row_loss(act, o, n_out, y, loss):
    """Loss of one row of logits ``act[o:o + n_out]`` (summed over outputs), in float64."""
    s = 0.0
    if loss == 0:
        for q in range(n_out):
            d = np.float64(act[o + q]) - np.float64(y[q])
            s += d * d
    elif loss == 1:
        for q in range(n_out):
            z = np.float64(act[o + q])
            s += max(z, 0.0) - z * np.float64(y[q]) + math.log1p(math.exp(-abs(z)))
    else:
        zmax = np.float64(act[o])
        for q in range(n_out):
            zmax = max(zmax, np.float64(act[o + q]))
        e = 0.0
        for q in range(n_out):
            e += math.exp(np.float64(act[o + q]) - zmax)
        s = zmax + math.log(e) - np.float64(act[o + np.uint64(y[0])])
    return s


@_inline
def output_grad(act, o, n_out, y, loss, scale):
    """Overwrite logits ``act[o:o + n_out]`` with ``scale * dLoss/dz`` for one row."""
    if loss == 0:
        for q in range(n_out):
            act[o + q] = 2 * (act[o + q] - y[q]) * scale
    elif loss == 1:
        for q in range(n_out):
            z = act[o + q]
            if z >= 0:
                p = 1 / (1 + math.exp(-z))
            else:
                e = math.exp(z)
                p = e / (1 + e)
            act[o + q] = (p - y[q]) * scale
    else:
        zmax = act[o]
        for q in range(n_out):
            zmax = max(zmax, act[o + q])
        total = 0.0
        for q in range(n_out):
            act[o + q] = math.exp(act[o + q] - zmax)
            total += act[o + q]
        label = np.uint64(y[0])
        for q in range(n_out):
            act[o + q] = (act[o + q] / total - (1.0 if q == label else 0.0)) * scale


@_inline
def backward_row(theta, act, grad, sizes, w_off, b_off, act_off, activation):
    """Backpropagate one row whose output gradient sits in ``act``; accumulate into ``grad``.

    Each layer's input slot in ``act`` is overwritten with the gradient w.r.t. it once the
    weight gradient has used it.
    """
    n_layers = sizes.size - 1
    for l in range(n_layers - 1, -1, -1):
        n_in, n_out = sizes[l], sizes[l + 1]
        wo, bo, si, so = w_off[l], b_off[l], act_off[l], act_off[l + 1]
        for q in range(n_out):
            grad[bo + q] += act[so + q]
        if n_out == 1:
            d = act[so]
            for p in range(n_in):
                grad[wo + p] += act[si + p] * d
        else:
            for p in range(n_in):
                a = act[si + p]
                r0 = wo + p * n_out
                for q in range(n_out):
                    grad[r0 + q] += a * act[so + q]
        if l > 0:
            for p in range(n_in):
                r0 = wo + p * n_out
                s = theta[r0] * act[so]
                for q in range(np.uint64(1), n_out):
                    s += theta[r0 + q] * act[so + q]
                act[si + p] = s * _activation_grad(act[si + p], activation)


@_jit
def _group_gradient(X, Y, theta, act, grad, keys, start, lo, hi, layout, cfg, scale):
    """Gradient of batch rows ``lo:hi`` (positions ``start+lo:start+hi`` of the epoch),
    accumulated into ``grad`` (zeroed here). Each row's sample index is computed on the spot."""
    sizes, w_off, b_off, act_off = layout
    out0 = act_off[act_off.size - 1]
    n_out = sizes[sizes.size - 1]
    for i in range(grad.size):
        grad[i] = 0
    n = X.shape[0]
    for j in range(start + lo, start + hi):
        if cfg.shuffle:
            r = perm_index(j, keys, cfg.perm_mask, cfg.perm_shift, n)
            ahead = j + PREFETCH_DISTANCE
            if ahead < n:
                r_ahead = perm_index(ahead, keys, cfg.perm_mask, cfg.perm_shift, n)
                prefetch_row(X, r_ahead)
                prefetch_row(Y, r_ahead)
        else:
            r = j
        forward_row(X[r], theta, act, sizes, w_off, b_off, act_off, cfg.activation)
        output_grad(act, out0, n_out, Y[r], cfg.loss, scale)
        backward_row(theta, act, grad, sizes, w_off, b_off, act_off, cfg.activation)


@_jit
def sgd_update(theta, mom, grad, hyper, nesterov):
    """``torch.optim.SGD`` (dampening 0) on flat vectors: weight decay, momentum, Nesterov."""
    lr, m, wd = hyper[0], hyper[1], hyper[2]
    if m == 0:
        for i in range(theta.size):
            theta[i] -= lr * (grad[i] + wd * theta[i])
    elif nesterov:
        for i in range(theta.size):
            g = grad[i] + wd * theta[i]
            buf = m * mom[i] + g
            mom[i] = buf
            theta[i] -= lr * (g + m * buf)
    else:
        for i in range(theta.size):
            buf = m * mom[i] + grad[i] + wd * theta[i]
            mom[i] = buf
            theta[i] -= lr * buf


@njit(cache=True, fastmath=FASTMATH, parallel=True, nogil=True)
def dense_epoch(X, Y, theta, mom, hyper, keys, layout, act, partial, cfg):
    """Run every step of one epoch in place on ``theta``/``mom``.

    ``X``: (n, d) C-contiguous; ``Y``: (n, k) targets (class id in column 0 for softmax);
    ``act``: (max_groups, width); ``partial``:
    (max_groups, len(theta)). Returns the number of steps taken.
    """
    n = X.shape[0]
    bs = cfg.batch_size
    n_out = layout[0][layout[0].size - 1]
    n_steps = n // bs
    if n % bs and not cfg.drop_last:
        n_steps += 1
    for step in range(n_steps):
        start = step * bs
        rows = min(bs, n - start)
        # mean reduction: MSELoss/BCEWithLogits over every element, CrossEntropy over rows
        scale = 1.0 / rows if cfg.loss == 2 else 1.0 / (rows * n_out)
        groups = n_groups(rows, cfg.rows_per_group, cfg.max_groups)
        if groups == 1:
            _group_gradient(X, Y, theta, act[0], partial[0], keys, start, 0, rows, layout, cfg,
                            scale)
        else:
            for g in prange(groups):
                lo = g * rows // groups
                hi = (g + 1) * rows // groups
                _group_gradient(X, Y, theta, act[g], partial[g], keys, start, lo, hi, layout,
                                cfg, scale)
            total = partial[0]
            for g in range(1, groups):
                other = partial[g]
                for i in range(total.size):
                    total[i] += other[i]
        sgd_update(theta, mom, partial[0], hyper, cfg.nesterov)
    return n_steps


@njit(cache=True, fastmath=FASTMATH, parallel=True, nogil=True)
def dense_loss(X, Y, theta, layout, act, sums, cfg):
    """Mean loss over all rows of ``X`` (float64), rows split into fixed groups."""
    sizes, w_off, b_off, act_off = layout
    n = X.shape[0]
    n_out = sizes[sizes.size - 1]
    out0 = act_off[act_off.size - 1]
    groups = n_groups(n, cfg.rows_per_group, cfg.max_groups)
    for g in prange(groups):
        s = 0.0
        row = act[g]
        for r in range(g * n // groups, (g + 1) * n // groups):
            forward_row(X[r], theta, row, sizes, w_off, b_off, act_off, cfg.activation)
            s += row_loss(row, out0, n_out, Y[r], cfg.loss)
        sums[g] = s
    total = 0.0
    for g in range(groups):
        total += sums[g]
    return total / n if cfg.loss == 2 else total / (n * n_out)
