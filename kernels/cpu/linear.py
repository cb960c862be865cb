"""Numba CPU kernels for linear models (linear, logistic, softmax regression).

A linear model is the one-layer case of ``dense.py``, but its per-row work is only a dot
product and an axpy, so the generic row path (input copied to a scratch row, per-layer
offsets read from arrays) would cost more than the arithmetic. Here rows are read in place
from ``X`` and the single-output case (``k == 1``) has its own contiguous loops.

Layout: the flat ``theta = [W (d, k) row-major, b (k)]`` is exactly a ``(d + 1, k)`` array
whose last row is ``b``; kernels receive both the flat vector (``theta``, used when
``k == 1``) and that 2-D view (``T``), and the same for gradients (``grad``/``G``). The
optimizer state ``state`` is ``(n_state, d * k + k)``, one row per buffer. Indices are
signed loop counters starting at 0 (LLVM then proves them non-negative and drops NumPy's
wraparound check, which would block vectorisation); a computed flat index such as
``p * k + q`` could not be proven so, hence the 2-D views (the rank-1 update of a
multi-output model is the exception: its flat state index is cheap next to its ``k``
dot products). ``z`` is a scratch row of at least ``k`` elements.
"""

from __future__ import annotations

import numpy as np

from .common import (
    add_batch_loss,
    add_noise_estimates,
    inline,
    inline_ir,
    jit,
    loss_and_grad,
    ring_prime,
    ring_take,
    row_loss,
    row_sq,
    row_weight,
    step_bounds,
    unit_grad_loss,
)
from .optim import step_scalars, update_at, update_flat


@inline
def single_logit(X, r, theta, d):
    """``X[r] @ w + b`` of a single-output model (``theta = [w, b]``)."""
    s = theta[d]
    for p in range(d):
        s += X[r, p] * theta[p]
    return s


@inline
def linear_logits(X, r, theta, T, z, d, k):
    """``z[0:k] = X[r] @ W + b``."""
    if k == 1:
        z[0] = single_logit(X, r, theta, d)
    else:
        for q in range(k):
            z[q] = T[d, q]
        for p in range(d):
            a = X[r, p]
            for q in range(k):
                z[q] += a * T[p, q]


@inline
def linear_accumulate(X, r, z, grad, G, d, k):
    """``G += [outer(X[r], z); z]``: the gradient of one row whose dLoss/dlogits is ``z``."""
    if k == 1:
        g = z[0]
        for p in range(d):
            grad[p] += g * X[r, p]
        grad[d] += g
    else:
        for p in range(d):
            a = X[r, p]
            for q in range(k):
                G[p, q] += a * z[q]
        for q in range(k):
            G[d, q] += z[q]


@inline
def single_output_tile(X, Y, theta, grad, r0, r1, r2, r3, d, loss, scale, noise):
    """``grad += `` the gradient of rows ``r0..r3`` of a single-output model (``k == 1``);
    returns the rows' summed loss (summed in the data's dtype, returned as float64) and
    the sum of their squared gradient norms when ``noise`` (else 0).

    Four rows per pass: theta is loaded once for four dot products and the gradient once for
    four updates (a single row per pass is load/store-bound, not read-bound). The four
    dLoss/dlogit stay in registers, rounded to the parameters' dtype. A row's gradient is
    ``g [x; 1]``, so its squared norm is ``g^2 (|x|^2 + 1)``."""
    cast = X.dtype.type
    s0 = s1 = s2 = s3 = theta[d]
    # the rows' |x|^2 (noise only) ride on the same loads, in the input dtype
    n0 = n1 = n2 = n3 = theta[d] * 0
    for p in range(d):
        t = theta[p]
        x0, x1, x2, x3 = X[r0, p], X[r1, p], X[r2, p], X[r3, p]
        s0 += x0 * t
        s1 += x1 * t
        s2 += x2 * t
        s3 += x3 * t
        if noise:
            n0 += x0 * x0
            n1 += x1 * x1
            n2 += x2 * x2
            n3 += x3 * x3
    w0, w1 = row_weight(Y, r0, 1), row_weight(Y, r1, 1)
    w2, w3 = row_weight(Y, r2, 1), row_weight(Y, r3, 1)
    g0, l0 = unit_grad_loss(s0, Y[r0, 0], loss, scale * w0)
    g1, l1 = unit_grad_loss(s1, Y[r1, 0], loss, scale * w1)
    g2, l2 = unit_grad_loss(s2, Y[r2, 0], loss, scale * w2)
    g3, l3 = unit_grad_loss(s3, Y[r3, 0], loss, scale * w3)
    g0, g1, g2, g3 = cast(g0), cast(g1), cast(g2), cast(g3)
    lsum = np.float64(l0 * w0 + l1 * w1 + l2 * w2 + l3 * w3)
    for p in range(d):
        grad[p] += g0 * X[r0, p] + g1 * X[r1, p] + g2 * X[r2, p] + g3 * X[r3, p]
    grad[d] += g0 + g1 + g2 + g3
    sq = 0.0
    if noise:
        for g, nx in ((g0, n0), (g1, n1), (g2, n2), (g3, n3)):
            sq += np.float64(g) * np.float64(g) * (np.float64(nx) + 1.0)
    return lsum, sq


@inline_ir
def linear_rows(X, Y, theta, T, z, grad, G, keys, ring, j0, j1, limit, primed, cfg, scale,
                noise):
    """Gradient of epoch positions ``j0:j1`` into ``grad`` (zeroed here), ``scale`` applied;
    returns the rows' summed loss (float64, from the same logits) and the sum of their
    squared gradient norms (with ``scale``) when ``noise``, a compile-time constant of the
    caller (else 0, nothing computed).

    Inlined into the serial driver (and into ``group_rows``): called as a compiled function
    once per step, a batch-256 epoch ran at 15 ns a row against 11-13 inlined (linear d=64;
    the read floor is ~11).

    With shuffling, samples come from ``ring`` (primed here unless ``primed``); look-ahead
    stops at ``limit``.
    """
    d, k = X.shape[1], T.shape[1]
    for i in range(grad.size):
        grad[i] = 0
    if cfg.shuffle and not primed:
        ring_prime(X, Y, ring, keys, cfg, j0, limit)
    j = j0
    sq = lsum = 0.0
    if k == 1:
        while j + 4 <= j1:
            r0 = ring_take(X, Y, ring, keys, cfg, j, limit) if cfg.shuffle else j
            r1 = ring_take(X, Y, ring, keys, cfg, j + 1, limit) if cfg.shuffle else j + 1
            r2 = ring_take(X, Y, ring, keys, cfg, j + 2, limit) if cfg.shuffle else j + 2
            r3 = ring_take(X, Y, ring, keys, cfg, j + 3, limit) if cfg.shuffle else j + 3
            tile_loss, tile_sq = single_output_tile(X, Y, theta, grad, r0, r1, r2, r3, d,
                                                    cfg.loss, scale, noise)
            lsum += tile_loss
            sq += tile_sq
            j += 4
    tail = j
    for j in range(tail, j1):
        r = ring_take(X, Y, ring, keys, cfg, j, limit) if cfg.shuffle else j
        linear_logits(X, r, theta, T, z, d, k)
        w = row_weight(Y, r, 1 if cfg.loss == 2 else k)
        lsum += loss_and_grad(z, 0, k, Y, r, cfg.loss, scale * w) * w
        linear_accumulate(X, r, z, grad, G, d, k)
        if noise:
            dz = 0.0
            for q in range(k):
                dz += np.float64(z[q]) * np.float64(z[q])
            sq += dz * (row_sq(X, r, d) + 1.0)
    return lsum, sq


@inline_ir
def linear_rank1_step(X, Y, theta, T, state, keys, ring, j, primed, z, cfg, scale, s, code,
                      rows):
    """One step on the single sample at position ``j``: the gradient is the rank-1
    ``[outer(x, dz); dz]``, applied element by element with no gradient buffer (``s``: the
    step's scalars of optimizer ``code``, whose state has ``rows`` rows). Returns the row's
    loss (float64, before the update)."""
    d, k, n = X.shape[1], T.shape[1], X.shape[0]
    if cfg.shuffle and not primed:
        ring_prime(X, Y, ring, keys, cfg, j, n)
    r = ring_take(X, Y, ring, keys, cfg, j, n) if cfg.shuffle else j
    w = row_weight(Y, r, 1 if cfg.loss == 2 else k)
    if k == 1:
        # dLoss/dlogit kept in a register (see ``unit_grad``), rounded to the params' dtype
        g, row = unit_grad_loss(single_logit(X, r, theta, d), Y[r, 0], cfg.loss, scale * w)
        g = X.dtype.type(g)
        for p in range(d):
            update_at(code, theta, state, p, g * X[r, p], s, rows)
        update_at(code, theta, state, d, g, s, rows)
        return np.float64(row * w)
    linear_logits(X, r, theta, T, z, d, k)
    row = loss_and_grad(z, 0, k, Y, r, cfg.loss, scale * w) * w
    for p in range(d):
        a = X[r, p]
        for q in range(k):
            update_at(code, theta, state, p * k + q, a * z[q], s, rows)
    for q in range(k):
        update_at(code, theta, state, d * k + q, z[q], s, rows)
    return row


# The three entry points ``epoch.py`` drives (the same signatures in ``dense.py``).


@inline_ir
def serial_steps(X, Y, theta, state, hyper, lrs, keys, ring, z, grad, layout, cfg, code, rows,
                 noise, acc, losses):
    """Steps ``cfg.start .. cfg.stop`` of an epoch, one after the other (gradient, then the
    update of optimizer ``code`` with ``rows`` state rows); a single-row step takes the
    fused rank-1 path. The look-ahead ring runs across steps. Every step adds its batch
    loss to ``losses``; with ``noise`` (a constant), its gradient-noise estimates to
    ``acc``."""
    n, d = X.shape
    k = theta.size // (d + 1)
    T, G = theta.reshape((d + 1, k)), grad.reshape((d + 1, k))
    cast = theta.dtype.type
    for step in range(cfg.start, cfg.stop):
        start, n_rows, scale = step_bounds(step, n, cfg, k)
        s = step_scalars(code, hyper, lrs[step], cfg.step0 + step + 1, cast)
        if n_rows == 1:
            row = linear_rank1_step(X, Y, theta, T, state, keys, ring, start,
                                    step > cfg.start, z, cfg, scale, s, code, rows)
            add_batch_loss(losses, row, scale, 1)
        else:
            lsum, sq = linear_rows(X, Y, theta, T, z, grad, G, keys, ring, start,
                                   start + n_rows, n, step > cfg.start, cfg, scale, noise)
            add_batch_loss(losses, lsum, scale, n_rows)
            if noise:
                add_noise_estimates(acc, grad, sq, n_rows, n)
            update_flat(theta, state, grad, code, s, rows)


@inline_ir
def _group(X, Y, theta, z, grad, keys, ring, lo, hi, cfg, scale, noise):
    d = X.shape[1]
    k = theta.size // (d + 1)
    # not primed: a group primes its own look-ahead ring
    return linear_rows(X, Y, theta, theta.reshape((d + 1, k)), z, grad,
                       grad.reshape((d + 1, k)), keys, ring, lo, hi, hi, False, cfg, scale,
                       noise)


@jit
def group_rows(X, Y, theta, z, grad, keys, ring, lo, hi, layout, cfg, scale):
    """Gradient of positions ``lo:hi`` (one parallel group) into ``grad``; returns the rows'
    summed loss."""
    return _group(X, Y, theta, z, grad, keys, ring, lo, hi, cfg, scale, 0)[0]


@jit
def group_noise_rows(X, Y, theta, z, grad, keys, ring, lo, hi, layout, cfg, scale):
    """:func:`group_rows`, returning ``(summed loss, sum of the rows' squared gradient
    norms)``."""
    return _group(X, Y, theta, z, grad, keys, ring, lo, hi, cfg, scale, 1)


@jit
def loss_rows(X, Y, theta, z, lo, hi, layout, cfg):
    """Summed loss of rows ``lo:hi`` (float64)."""
    d = X.shape[1]
    k = theta.size // (d + 1)
    T = theta.reshape((d + 1, k))
    s = 0.0
    for r in range(lo, hi):
        linear_logits(X, r, theta, T, z, d, k)
        s += row_loss(z, 0, k, Y, r, cfg.loss) * row_weight(Y, r, 1 if cfg.loss == 2 else k)
    return s
