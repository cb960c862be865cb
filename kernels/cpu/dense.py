"""Numba CPU kernels for dense networks (MLPs): one row forward and backward at a time.

:func:`dense_rows` computes a range of rows' gradient; ``epoch.py`` drives the steps and the
update. Linear models have their own, leaner rows in ``linear.py``.

Memory layout
-------------
- ``theta``: flat parameter vector ``W1, b1, W2, b2, ...``; ``W`` of layer ``l`` is
  row-major ``(sizes[l], sizes[l+1])`` starting at ``w_off[l]``.
- ``act``: one scratch row per group: the input row at ``act_off[0] = 0``, then layer
  ``l``'s output at ``act_off[l + 1]``. Offsets and sizes are uint64 (see ``forward_row``).
  Each sample is pushed forward and backward before the next one starts, so activations
  never need more than one row per group (no batch-sized buffer) and the weights stay in
  cache between the two passes. The backward pass overwrites a layer's output with its
  gradient in place.
"""

from __future__ import annotations

import math

import numpy as np

from .common import inline, output_grad, ring_prime, ring_take

# Rows pushed backward together (``act`` holds TILE rows per group; see backward_tile).
TILE = 4


@inline
def _activate(z, code):
    if code == 0:
        return z if z > 0 else z * 0
    if code == 1:
        return math.tanh(z)
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


@inline
def _activation_grad(a, code):
    """Derivative of the activation from its output ``a``."""
    if code == 0:
        return 1.0 if a > 0 else 0.0
    if code == 1:
        return 1 - a * a
    return a * (1 - a)


@inline
def forward_row(X, r, theta, act, base, sizes, w_off, b_off, act_off, activation):
    """Push row ``r`` of ``X`` through the network; layer ``l``'s output lands at
    ``act[base + act_off[l + 1]:]`` (the row itself is copied to ``act[base:base + d]``).

    All offsets are uint64 and loops run over uint64 ranges: a signed index computed from an
    offset gets a negative-index wraparound check that stops LLVM from vectorising, and
    slicing views per row costs atomic reference counting once branches are involved
    (both measured: 4x and 3x slower).
    """
    for p in range(X.shape[1]):
        act[base + p] = X[r, p]
    n_layers = sizes.size - 1
    for l in range(n_layers):
        n_in, n_out = sizes[l], sizes[l + 1]
        wo, bo, si, so = w_off[l], b_off[l], base + act_off[l], base + act_off[l + 1]
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


@inline
def backward_tile(theta, act, grad, width, sizes, w_off, b_off, act_off, activation):
    """Backpropagate ``TILE`` rows at once and accumulate their gradient into ``grad``.

    Row ``i`` of the tile sits at ``act[i * width:]`` with its output gradient in the logits
    slot. The weight gradient of four rows is summed before it touches ``grad``: one load and
    one store of ``grad`` per four multiply-adds (one row at a time is load/store-bound).
    Each layer's input slot is then overwritten with the gradient w.r.t. it.
    """
    w1, w2, w3 = width, np.uint64(2) * width, np.uint64(3) * width
    n_layers = sizes.size - 1
    for l in range(n_layers - 1, -1, -1):
        n_in, n_out = sizes[l], sizes[l + 1]
        wo, bo, si, so = w_off[l], b_off[l], act_off[l], act_off[l + 1]
        for q in range(n_out):
            grad[bo + q] += act[so + q] + act[w1 + so + q] + act[w2 + so + q] + act[w3 + so + q]
        for p in range(n_in):
            a0, a1, a2, a3 = act[si + p], act[w1 + si + p], act[w2 + si + p], act[w3 + si + p]
            r0 = wo + p * n_out
            for q in range(n_out):
                grad[r0 + q] += (a0 * act[so + q] + a1 * act[w1 + so + q]
                                 + a2 * act[w2 + so + q] + a3 * act[w3 + so + q])
        if l > 0:
            # four dot products per row of W: W is read once for the tile
            for p in range(n_in):
                r0 = wo + p * n_out
                s0 = s1 = s2 = s3 = act[so] * 0
                for q in range(n_out):
                    t = theta[r0 + q]
                    s0 += t * act[so + q]
                    s1 += t * act[w1 + so + q]
                    s2 += t * act[w2 + so + q]
                    s3 += t * act[w3 + so + q]
                act[si + p] = s0 * _activation_grad(act[si + p], activation)
                act[w1 + si + p] = s1 * _activation_grad(act[w1 + si + p], activation)
                act[w2 + si + p] = s2 * _activation_grad(act[w2 + si + p], activation)
                act[w3 + si + p] = s3 * _activation_grad(act[w3 + si + p], activation)


@inline
def dense_rows(X, Y, theta, act, grad, keys, ring, j0, j1, limit, primed, layout, cfg, scale):
    """Gradient of epoch positions ``j0:j1`` into ``grad`` (zeroed here), ``scale`` applied
    to the loss gradient. Samples come from the look-ahead ``ring`` when shuffling (primed
    here unless ``primed``; look-ahead stops at ``limit``)."""
    sizes, w_off, b_off, act_off = layout
    out0 = act_off[act_off.size - 1]
    n_out = sizes[sizes.size - 1]
    for i in range(grad.size):
        grad[i] = 0
    if cfg.shuffle and not primed:
        ring_prime(X, Y, ring, keys, cfg, j0, limit)
    width = np.uint64(act.size) // np.uint64(TILE)
    for j in range(j0, j1, TILE):
        m = min(TILE, j1 - j)
        for i in range(m):
            r = ring_take(X, Y, ring, keys, cfg, j + i, limit) if cfg.shuffle else j + i
            base = np.uint64(i) * width
            forward_row(X, r, theta, act, base, sizes, w_off, b_off, act_off, cfg.activation)
            output_grad(act, base + out0, n_out, Y, r, cfg.loss, scale)
        if m < TILE:
            # a partial tile: the missing rows contribute exact zeros (stale values could
            # be inf/NaN after a divergence, and 0 * NaN is NaN)
            for i in range(np.uint64(m) * width, np.uint64(act.size)):
                act[i] = 0
        backward_tile(theta, act, grad, width, sizes, w_off, b_off, act_off, cfg.activation)
