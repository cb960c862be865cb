"""Numba CPU kernels for dense networks (MLPs), four rows (a tile) at a time.

:func:`dense_rows` computes a range of rows' gradient and :func:`loss_rows` their loss;
``epoch.py`` drives the steps and the update (``optim.py``). Linear models have their own,
leaner rows in ``linear.py``.

Memory layout
-------------
- ``theta``: flat parameter vector ``W1, b1, W2, b2, ...`` at offsets ``w_off``/``b_off``.
  A *wide* layer (``n_out >= WIDE``) keeps ``W`` as ``(n_in, n_out)``: its inner loops run
  along ``n_out`` as axpys. A *narrow* one stores ``W`` **transposed**, ``(n_out, n_in)``
  (PyTorch's ``nn.Linear.weight`` layout), so its inner loops run along ``n_in`` as dot
  products (a 10-class output layer would otherwise leave 10-long inner loops to scalar
  remainders). :func:`to_kernel_layout` / :func:`from_kernel_layout` convert at the backend
  boundary; the public layout stays ``(n_in, n_out)``. The update is elementwise.
- ``act``: ``TILE`` rows of ``width`` each; row ``i`` holds the input at ``act_off[0] = 0``,
  layer ``l``'s output at ``act_off[l + 1]`` and a scratch vector at ``act_off[-1] +
  n_outputs`` and one slot per layer at the end of the row (``width = sum(sizes) +
  max(sizes) + n_layers``). The backward pass overwrites each output with its gradient in
  place. Offsets are uint64: a signed index computed from an
  offset gets a negative-index wraparound check that stops LLVM from vectorising.
- A tile's rows share every load of ``W`` (four dot products per row of ``W``) and every
  load/store of the gradient (four rows summed before they touch memory).
- Register blocking, so the vector loops are bound by multiply-adds rather than by the
  loads and stores of ``act`` and ``grad``: a wide layer's forward pass adds four rows of
  ``W`` to the outputs per pass (:func:`_add_rows4`), the weight gradients take two of
  their rows per pass (:func:`_outer4`), and a narrow layer's input gradient, the same
  product as a wide layer's forward pass, four rows of ``W`` for the four tile rows at
  once (:func:`_add_rows4`). Measured on MLP 64-128-10,
  forward and backward of 32-row steps on one core of the 2-core EPYC: 1180 ns a row
  before, 600-680 after (``bench/RESULTS.md``).

Inlining: the tile passes are inlined by LLVM (``common.inline``), the loops inside them
at the Numba IR level (``common.inline_ir``; the same helpers inlined by LLVM measured
slower, see ``common.py``).
"""

from __future__ import annotations

import math

import numpy as np

from ..reference import layer_offsets
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
    row_weight,
    step_bounds,
)
from .optim import step_scalars, update_flat

# Rows pushed through the network together.
TILE = 4


def tile_width(sizes) -> int:
    """Elements of ``act`` one tile row needs: activations, a scratch vector and one slot
    per layer for the squared norm of its input (per-example gradient norms)."""
    return int(sum(sizes) + max(sizes) + len(sizes) - 1)


# A layer with at least this many outputs keeps W as (n_in, n_out) ("wide"): its inner loops
# run along n_out as axpys (no horizontal sums); narrower layers store W transposed.
WIDE = 16


def wide_layers(sizes) -> np.ndarray:
    """Per layer, 1 if its W is kept (n_in, n_out) in the kernels, 0 if transposed."""
    return np.array([int(n_out >= WIDE) for n_out in sizes[1:]], dtype=np.uint64)


def _transpose_blocks(theta, sizes, to_kernel):
    out = np.array(theta, copy=True)
    w_off, _, _ = layer_offsets(sizes)
    wide = wide_layers(sizes)
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if wide[l]:
            continue
        o = int(w_off[l])
        shape = (n_in, n_out) if to_kernel else (n_out, n_in)
        out[o:o + n_in * n_out] = theta[o:o + n_in * n_out].reshape(shape).T.ravel()
    return out


def to_kernel_layout(theta, sizes):
    """Flat parameters in the public layout -> the kernels' (each ``W`` transposed)."""
    return _transpose_blocks(theta, sizes, True)


def from_kernel_layout(theta, sizes):
    """Inverse of :func:`to_kernel_layout`."""
    return _transpose_blocks(theta, sizes, False)


@inline_ir
def _activate(z, code):
    if code == 0:
        return z if z > 0 else z * 0
    if code == 1:
        return math.tanh(z)
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


@inline_ir
def _activation_grad(a, code):
    """Derivative of the activation from its output ``a``."""
    if code == 0:
        zero = a - a
        return zero + 1 if a > 0 else zero
    if code == 1:
        return 1 - a * a
    return a * (1 - a)


@inline
def load_tile(X, Y, ring, keys, cfg, shuffle, j, m, limit, act, width):
    """Copy the rows of positions ``j .. j+m`` (from the ring when ``shuffle``) into tile
    rows ``0 .. m`` and zero the inputs of the rows a partial tile lacks; returns the four
    sample indices."""
    d = np.uint64(X.shape[1])
    r0 = r1 = r2 = r3 = 0
    for i in range(TILE):
        base = np.uint64(i) * width
        if i < m:
            r = ring_take(X, Y, ring, keys, cfg, j + i, limit) if shuffle else j + i
            for p in range(d):
                act[base + p] = X[r, p]
            if i == 0:
                r0 = r
            elif i == 1:
                r1 = r
            elif i == 2:
                r2 = r
            else:
                r3 = r
        else:
            for p in range(d):
                act[base + p] = 0
    return (r0, r1, r2, r3)


@inline
def _two(a, o):
    """``a[o], a[o + 1]`` (``o`` unsigned)."""
    return a[o], a[o + np.uint64(1)]


@inline
def _four(a, o):
    """``a[o], a[o + 1], a[o + 2], a[o + 3]`` (``o`` unsigned)."""
    one = np.uint64(1)
    return a[o], a[o + one], a[o + np.uint64(2)], a[o + np.uint64(3)]


@inline_ir
def _dot4(theta, r0, n, act, o, w1, w2, w3, start):
    """Dot products of ``theta[r0:r0 + n]`` with each tile row's ``act[o:o + n]`` (rows
    ``w1``/``w2``/``w3`` apart), each started at ``start``: one load of ``theta`` serves the
    four rows."""
    s0 = s1 = s2 = s3 = start
    for p in range(n):
        t = theta[r0 + p]
        s0 += t * act[o + p]
        s1 += t * act[w1 + o + p]
        s2 += t * act[w2 + o + p]
        s3 += t * act[w3 + o + p]
    return s0, s1, s2, s3


@inline_ir
def _axpy4(grad, r0, n, act, o, w1, w2, w3, c0, c1, c2, c3):
    """``grad[r0:r0 + n] += c0 * row0 + c1 * row1 + c2 * row2 + c3 * row3`` over the tile rows'
    ``act[o:o + n]``: one load and store of ``grad`` per four multiply-adds."""
    for p in range(n):
        grad[r0 + p] += (c0 * act[o + p] + c1 * act[w1 + o + p] + c2 * act[w2 + o + p]
                         + c3 * act[w3 + o + p])


@inline_ir
def _outer4(grad, g, stride, count, n, act, o, co, w1, w2, w3):
    """Add the tile's outer products to ``count`` rows of ``grad`` (``n`` long, ``stride``
    apart from ``g``): gradient row ``k`` gets, summed over the four tile rows ``i`` (at
    ``0, w1, w2, w3``), ``act[i + co + k] * act[i + o : i + o + n]``. Two gradient rows per
    pass, so each tile row's ``act[o:o + n]`` is loaded once for both (one gradient row per
    pass was bound by those loads; four per pass measured slower)."""
    two = np.uint64(2)
    for k2 in range(count // two):
        k = k2 * two
        g0 = g + k * stride
        g1 = g0 + stride
        c00, c01 = _two(act, co + k)
        c10, c11 = _two(act, w1 + co + k)
        c20, c21 = _two(act, w2 + co + k)
        c30, c31 = _two(act, w3 + co + k)
        for p in range(n):
            x0, x1, x2, x3 = act[o + p], act[w1 + o + p], act[w2 + o + p], act[w3 + o + p]
            grad[g0 + p] += c00 * x0 + c10 * x1 + c20 * x2 + c30 * x3
            grad[g1 + p] += c01 * x0 + c11 * x1 + c21 * x2 + c31 * x3
    for k in range(count - count % two, count):
        _axpy4(grad, g + k * stride, n, act, o, w1, w2, w3, act[co + k], act[w1 + co + k],
               act[w2 + co + k], act[w3 + co + k])


@inline_ir
def _add_rows4(theta, wo, count, n, act, o, co, w1, w2, w3):
    """For each of the four tile rows ``i`` (at ``0, w1, w2, w3``):
    ``act[i + o : i + o + n] += sum_k act[i + co + k] * theta[wo + k n : wo + (k + 1) n]``
    over the ``count`` rows of ``W`` stored from ``wo``: a wide layer's forward pass, and a
    narrow layer's input gradient (its ``W`` transposed). Four rows of ``W`` per pass, so
    each output is loaded and stored once per four of them (one row per pass was bound by
    those loads and stores)."""
    four = np.uint64(4)
    for k4 in range(count // four):
        k = k4 * four
        r0 = wo + k * n
        r1, r2, r3 = r0 + n, r0 + np.uint64(2) * n, r0 + np.uint64(3) * n
        a00, a01, a02, a03 = _four(act, co + k)
        a10, a11, a12, a13 = _four(act, w1 + co + k)
        a20, a21, a22, a23 = _four(act, w2 + co + k)
        a30, a31, a32, a33 = _four(act, w3 + co + k)
        for p in range(n):
            t0, t1, t2, t3 = theta[r0 + p], theta[r1 + p], theta[r2 + p], theta[r3 + p]
            act[o + p] += a00 * t0 + a01 * t1 + a02 * t2 + a03 * t3
            act[w1 + o + p] += a10 * t0 + a11 * t1 + a12 * t2 + a13 * t3
            act[w2 + o + p] += a20 * t0 + a21 * t1 + a22 * t2 + a23 * t3
            act[w3 + o + p] += a30 * t0 + a31 * t1 + a32 * t2 + a33 * t3
    for k in range(count - count % four, count):
        a0, a1, a2, a3 = act[co + k], act[w1 + co + k], act[w2 + co + k], act[w3 + co + k]
        r0 = wo + k * n
        for p in range(n):
            t = theta[r0 + p]
            act[o + p] += a0 * t
            act[w1 + o + p] += a1 * t
            act[w2 + o + p] += a2 * t
            act[w3 + o + p] += a3 * t


@inline
def forward_tile(theta, act, width, layout, activation):
    """Push the tile's four rows through the network (inputs already in place)."""
    sizes, w_off, b_off, act_off, wide = layout
    w1, w2, w3 = width, np.uint64(2) * width, np.uint64(3) * width
    n_layers = sizes.size - 1
    for l in range(n_layers):
        n_in, n_out = sizes[l], sizes[l + 1]
        wo, bo, si, so = w_off[l], b_off[l], act_off[l], act_off[l + 1]
        if wide[l]:
            # rows of W (contiguous in q) scaled by each row's input, added to its output
            for q in range(n_out):
                b = theta[bo + q]
                act[so + q], act[w1 + so + q], act[w2 + so + q], act[w3 + so + q] = b, b, b, b
            _add_rows4(theta, wo, n_in, n_out, act, so, si, w1, w2, w3)
            if l < n_layers - 1:
                for i in range(TILE):
                    o = np.uint64(i) * width + so
                    for q in range(n_out):
                        act[o + q] = _activate(act[o + q], activation)
            continue
        for q in range(n_out):
            # row q of the transposed W against the four inputs
            s0, s1, s2, s3 = _dot4(theta, wo + q * n_in, n_in, act, si, w1, w2, w3,
                                   theta[bo + q])
            if l < n_layers - 1:
                s0, s1 = _activate(s0, activation), _activate(s1, activation)
                s2, s3 = _activate(s2, activation), _activate(s3, activation)
            act[so + q], act[w1 + so + q], act[w2 + so + q], act[w3 + so + q] = s0, s1, s2, s3


@inline
def backward_tile(theta, act, grad, width, layout, activation):
    """Backpropagate the tile (output gradients in the logits slots) into ``grad``.

    Rows a partial tile lacks must carry zero output gradients. Each hidden layer's output
    slot is overwritten with the gradient w.r.t. it (through the scratch vector).
    """
    sizes, w_off, b_off, act_off, wide = layout
    w1, w2, w3 = width, np.uint64(2) * width, np.uint64(3) * width
    n_layers = sizes.size - 1
    sc = act_off[n_layers] + sizes[n_layers]  # scratch offset
    for l in range(n_layers - 1, -1, -1):
        n_in, n_out = sizes[l], sizes[l + 1]
        wo, bo, si, so = w_off[l], b_off[l], act_off[l], act_off[l + 1]
        if wide[l]:
            for q in range(n_out):
                grad[bo + q] += (act[so + q] + act[w1 + so + q] + act[w2 + so + q]
                                 + act[w3 + so + q])
            _outer4(grad, wo, n_out, n_in, n_out, act, so, si, w1, w2, w3)
            if l > 0:
                # gradient w.r.t. the layer input: four dot products per row of W; the
                # input slot is free to overwrite (the weight gradient is done with it)
                for p in range(n_in):
                    s0, s1, s2, s3 = _dot4(theta, wo + p * n_out, n_out, act, so, w1, w2, w3,
                                           act[so] * 0)
                    act[si + p] = s0 * _activation_grad(act[si + p], activation)
                    act[w1 + si + p] = s1 * _activation_grad(act[w1 + si + p], activation)
                    act[w2 + si + p] = s2 * _activation_grad(act[w2 + si + p], activation)
                    act[w3 + si + p] = s3 * _activation_grad(act[w3 + si + p], activation)
            continue
        for q in range(n_out):
            grad[bo + q] += act[so + q] + act[w1 + so + q] + act[w2 + so + q] + act[w3 + so + q]
        # W is stored transposed: its gradient rows follow the outputs
        _outer4(grad, wo, n_in, n_out, n_in, act, si, so, w1, w2, w3)
        if l > 0:
            # gradient w.r.t. the layer input into each row's scratch vector (row by row and
            # one row of W at a time, the loop was bound by the scratch vector's loads and
            # stores)
            for i in range(TILE):
                base = np.uint64(i) * width
                for p in range(n_in):
                    act[base + sc + p] = 0
            _add_rows4(theta, wo, n_out, n_in, act, sc, so, w1, w2, w3)
            for i in range(TILE):
                base = np.uint64(i) * width
                for p in range(n_in):
                    a = act[base + si + p]
                    act[base + si + p] = act[base + sc + p] * _activation_grad(a, activation)


@inline
def input_norms(act, width, layout, m):
    """After the forward pass: for each of the tile's first ``m`` rows, ``|a_l|^2`` of every
    layer's input into the row's last ``n_layers`` slots (the backward pass overwrites the
    activations with their gradients)."""
    sizes, act_off = layout[0], layout[3]
    n_layers = sizes.size - 1
    slots = width - np.uint64(n_layers)
    for i in range(m):
        base = np.uint64(i) * width
        for l in range(n_layers):
            o = base + act_off[l]
            s = 0.0
            for p in range(sizes[l]):
                v = np.float64(act[o + p])
                s += v * v
            act[base + slots + l] = s


@inline
def gradient_norms(act, width, layout, m):
    """After the backward pass: the sum over the tile's first ``m`` rows of their squared
    gradient norms, ``sum_l (|a_l|^2 + 1) |delta_l|^2`` (``delta_l``, layer ``l``'s output
    gradient, now in its output slot; ``|a_l|^2`` from :func:`input_norms`)."""
    sizes, act_off = layout[0], layout[3]
    n_layers = sizes.size - 1
    slots = width - np.uint64(n_layers)
    total = 0.0
    for i in range(m):
        base = np.uint64(i) * width
        for l in range(n_layers):
            o = base + act_off[l + 1]
            s = 0.0
            for q in range(sizes[l + 1]):
                v = np.float64(act[o + q])
                s += v * v
            total += (np.float64(act[base + slots + l]) + 1.0) * s
    return total


@inline_ir
def dense_rows(X, Y, theta, act, grad, keys, ring, j0, j1, limit, primed, layout, cfg, scale,
               noise):
    """Gradient of epoch positions ``j0:j1`` into ``grad`` (zeroed here), ``scale`` applied
    to the loss gradient; returns the rows' summed loss (float64, from the forward pass)
    and the sum of their squared gradient norms (with ``scale``) when ``noise``, a
    compile-time constant of the caller (else 0). Samples come
    from the look-ahead ``ring`` when shuffling (primed here unless ``primed``; look-ahead
    stops at ``limit``). Inlined into the serial driver and ``group_rows``, as
    ``linear.linear_rows`` is (no compiled call per serial step)."""
    sizes, act_off = layout[0], layout[3]
    out0 = act_off[act_off.size - 1]
    n_out = sizes[sizes.size - 1]
    for i in range(grad.size):
        grad[i] = 0
    if cfg.shuffle and not primed:
        ring_prime(X, Y, ring, keys, cfg, j0, limit)
    width = np.uint64(act.size) // np.uint64(TILE)
    sq = lsum = 0.0
    for j in range(j0, j1, TILE):
        m = min(TILE, j1 - j)
        rows = load_tile(X, Y, ring, keys, cfg, cfg.shuffle, j, m, limit, act, width)
        forward_tile(theta, act, width, layout, cfg.activation)
        if noise:
            input_norms(act, width, layout, m)
        for i in range(TILE):
            base = np.uint64(i) * width + out0
            if i < m:
                w = row_weight(Y, rows[i], 1 if cfg.loss == 2 else n_out)
                lsum += loss_and_grad(act, base, n_out, Y, rows[i], cfg.loss, scale * w) * w
            else:
                for q in range(n_out):
                    act[base + q] = 0
        backward_tile(theta, act, grad, width, layout, cfg.activation)
        if noise:
            sq += gradient_norms(act, width, layout, m)
    return lsum, sq


@jit
def loss_rows(X, Y, theta, act, r0, r1, layout, cfg):
    """Summed loss of rows ``r0:r1`` (float64), a tile at a time."""
    sizes, act_off = layout[0], layout[3]
    out0 = act_off[act_off.size - 1]
    n_out = sizes[sizes.size - 1]
    width = np.uint64(act.size) // np.uint64(TILE)
    no_ring, no_keys = np.zeros(0, np.int64), np.zeros(0, np.uint64)  # unshuffled
    s = 0.0
    for j in range(r0, r1, TILE):
        m = min(TILE, r1 - j)
        rows = load_tile(X, Y, no_ring, no_keys, cfg, False, j, m, r1, act, width)
        forward_tile(theta, act, width, layout, cfg.activation)
        for i in range(m):
            s += row_loss(act, np.uint64(i) * width + out0, n_out, Y, rows[i], cfg.loss) \
                * row_weight(Y, rows[i], 1 if cfg.loss == 2 else n_out)
    return s


# The entry points ``epoch.py`` drives (the same signatures in ``linear.py``).


@inline_ir
def serial_steps(X, Y, theta, state, hyper, lrs, keys, ring, act, grad, layout, cfg, code, rows,
                 noise, acc, losses):
    """Steps ``cfg.start .. cfg.stop`` of an epoch, one after the other (gradient, then the
    update of optimizer ``code`` with ``rows`` state rows). The look-ahead ring runs across
    steps. Every step adds its batch loss to ``losses``; with ``noise`` (a constant), its
    gradient-noise estimates to ``acc``."""
    n = X.shape[0]
    n_out = layout[0][layout[0].size - 1]
    cast = theta.dtype.type
    for step in range(cfg.start, cfg.stop):
        start, n_rows, scale = step_bounds(step, n, cfg, n_out)
        lsum, sq = dense_rows(X, Y, theta, act, grad, keys, ring, start, start + n_rows, n,
                              step > cfg.start, layout, cfg, scale, noise)
        add_batch_loss(losses, lsum, scale, n_rows)
        if noise:
            add_noise_estimates(acc, grad, sq, n_rows, n)
        s = step_scalars(code, hyper, lrs[step], cfg.step0 + step + 1, cast)
        update_flat(theta, state, grad, code, s, rows)


@jit
def group_rows(X, Y, theta, act, grad, keys, ring, lo, hi, layout, cfg, scale):
    """Gradient of positions ``lo:hi`` (one parallel group) into ``grad``; returns the rows'
    summed loss."""
    # not primed: a group primes its own look-ahead ring
    return dense_rows(X, Y, theta, act, grad, keys, ring, lo, hi, hi, False, layout, cfg,
                      scale, 0)[0]


@jit
def group_noise_rows(X, Y, theta, act, grad, keys, ring, lo, hi, layout, cfg, scale):
    """:func:`group_rows`, returning ``(summed loss, sum of the rows' squared gradient
    norms)``."""
    return dense_rows(X, Y, theta, act, grad, keys, ring, lo, hi, hi, False, layout, cfg,
                      scale, 1)
