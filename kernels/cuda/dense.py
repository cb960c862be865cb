"""Numba-CUDA kernels for dense networks (a linear model is the network with one layer).

The math is ``kernels/reference.py``'s: PyTorch's mean-reduced losses and ``torch.optim``'s
update rules (``optim.py``), on the flat parameter vector ``W1, b1, W2, b2, ...`` (each ``W``
shaped ``(n_in, n_out)``, row-major), the same layout as the reference.

One optimizer step is one launch, ``step[blocks, threads, stream, shared bytes]``, with no
host synchronisation (the CUDA C twin, ``kernels/cu/dense.cu``, is the same design):

1. The step's positions are cut into tiles of ``tile`` rows (``device_tables.launch_shape``:
   a function of the model, the dtype and the batch size, never of the device); block ``b``
   takes tiles ``b, b + blocks, ...``. The block's threads work on a tile together, its
   activations and deltas in shared memory (row ``u`` at ``S[u * W ..]``, ``W = 2 * A``:
   ``[a_0 | a_1 | ... | z_L]`` then ``[unused | d_1 | ... | d_L]``, ``A = sum(sizes)``):
   they load the rows (the epoch's order, :func:`sample_at`; consecutive threads read
   consecutive features), then per layer take the (row, output) pairs in row-major order,
   so a warp reads consecutive columns of ``W`` and broadcasts one row's activations (the
   parameters of a network small enough, ``device_tables.weights_shared``, are first
   copied into shared memory after the tile, once per block: the fused MLP, whose forward
   and backward passes then never touch global memory but for the rows); one
   thread per row computes its loss (in the dtype, accumulated in float64) and its output
   deltas; the backward pass takes (row, input) pairs; last, each thread owns parameters
   ``t, t + threads, ...`` and adds ``sum over the tile's rows of a_in * delta`` (rows in
   order) to ``partial[b, p]``.
2. The last block to finish (``reduce.last_block``: a counter of finished blocks, the
   classic last-block-done pattern) sums ``partial[0..blocks, p]`` in block order and
   applies the optimizer to every parameter and its state (``optim.build_update``), then
   adds the blocks' loss sums in order, as the mean batch loss times the rows, to the
   float64 ``losses`` (``reduce.add_batch_loss``; the backend's ``epoch_loss`` reads them).

When the last block would have many partial gradients to sum (``blocks * n_params`` above
``device_tables.FUSED_MAX``: an MLP), one block reducing them all would be slower than a
second launch in which every SM takes a share: the step is then ``grad_blocks`` (step 1)
and ``update_params`` (step 2 with a thread per parameter), the same sums in the same
order, hence the same bits (``device_tables.fused_step`` decides; tested both ways).

Every sum runs in an order fixed by the batch size and the model (the one atomic only
counts blocks): a run is bitwise reproducible on every GPU. The step counter ``t`` of the
bias corrections is ``t0[0] + s + 1``, read from a device array, and the learning rate
``lrs[s]``: a step's arguments are the same in every epoch, so an epoch's launches can be
captured once and replayed (the CuPy backend's CUDA graph).

Gradient noise (``kernels/noise.py``; only when asked): ``step_noise`` also sums per block
the float64 ``|g_i|^2`` of its rows from their activations and deltas (``(|a_in|^2 + 1)
|d|^2`` per layer, :func:`_row_sq_norm`), and its last block the batch gradient's squares,
then adds the step's estimates to a device array (``reduce.add_noise_step``): still one
launch. ``exact_noise`` is ``grad_norms`` over the data set with the own-loss scale, then
``reduce.grad_sq``. ``loss_sum`` evaluates the float64 loss of a data set, per-block sums
added on the host in block order. Reductions across a block use a shared-memory tree (no
warp shuffles), so everything runs in the CUDA simulator too.

Types: the kernels are generated per ``(loss, activation, dtype)`` (:func:`build`); every
constant is a scalar of the dtype, so a float32 kernel computes in float32 (float64 only in
the loss and norm accumulators and the per-step optimizer scalars). ``lay`` is an int64
``(L, 6)`` array, per layer ``n_in, n_out, w_off, b_off, a_in, a_out`` (see
:func:`layout`). Kernels take no explicit signature (they would compile at import, which
fails without a GPU).
"""

from __future__ import annotations

import math
from functools import cache
from typing import NamedTuple

import numba
import numpy as np
from numba import cuda, float64, int64

from ..device_tables import (  # noqa: F401 (re-exported)
    MAX_THREADS,
    TILE_MAX,
    launch_shape,
    layout,
    max_blocks,
    max_tile_rows,
    perm_capacity,
    perm_table,
)
from ..permutation import compile_sample_at
from .optim import build_update
from .reduce import add_batch_loss, add_noise_step, block_sum, grad_sq, last_block, tree_sum

# ----------------------------------------------------------------------------- the shuffle
#: ``sample_at(pos, perm, n)``: the row visited at position ``pos`` of the epoch whose order
#: table is ``perm`` (``kernels.permutation.sample_at``: in order, a row or a block shuffle).
sample_at = compile_sample_at(cuda.jit(device=True), "sample_at")


@cuda.jit
def permutation_kernel(perm, n, out):
    """``out[i] = sample_at(i)`` for ``i < n`` (tests the device shuffle against NumPy)."""
    i = cuda.grid(1)
    if i < n:
        out[i] = sample_at(i, perm, n)


# ----------------------------------------------------------------------------- per dtype
# Numba-CUDA types a literal such as ``1.0`` or ``z * 0`` as float64, which would make a
# float32 kernel compute in float64: every constant below is a NumPy scalar of the dtype,
# captured by the generated device functions (compile-time constants of that type).
def _activations(name: str, dtype):
    """``(activation, its derivative in terms of the output)`` device functions of
    ``dtype``."""
    zero, one = dtype.type(0), dtype.type(1)

    @cuda.jit(device=True)
    def sigmoid(z):
        if z >= zero:
            return one / (one + math.exp(-z))
        e = math.exp(z)
        return e / (one + e)

    @cuda.jit(device=True)
    def relu(z):
        return z if z > zero else zero

    @cuda.jit(device=True)
    def relu_grad(a):
        return one if a > zero else zero

    @cuda.jit(device=True)
    def tanh(z):
        return math.tanh(z)

    @cuda.jit(device=True)
    def tanh_grad(a):
        return one - a * a

    @cuda.jit(device=True)
    def sigmoid_grad(a):
        return a * (one - a)

    return {"relu": (relu, relu_grad), "tanh": (tanh, tanh_grad),
            "sigmoid": (sigmoid, sigmoid_grad)}[name] + (sigmoid,)


def _losses(name: str, dtype, sigmoid):
    """``(output gradient, row loss)`` device functions of ``dtype`` for loss ``name``.

    The output gradient writes ``S[d + q] = scale * dLoss/dz_q`` for the logits at
    ``S[o + q]``; the row loss returns one row's loss summed over its outputs, computed in
    the dtype (the caller accumulates rows in float64). Both read targets ``Y[r]`` (for
    softmax, ``Y[r, 0]`` is the class id)."""
    zero, one, two = dtype.type(0), dtype.type(1), dtype.type(2)

    @cuda.jit(device=True)
    def mse_grad(S, o, d, k, Y, r, scale):
        for q in range(k):
            S[d + q] = two * (S[o + q] - Y[r, q]) * scale

    @cuda.jit(device=True)
    def mse_loss(S, o, k, Y, r):
        acc = zero
        for q in range(k):
            v = S[o + q] - Y[r, q]
            acc += v * v
        return acc

    @cuda.jit(device=True)
    def logistic_grad(S, o, d, k, Y, r, scale):
        for q in range(k):
            S[d + q] = (sigmoid(S[o + q]) - Y[r, q]) * scale

    @cuda.jit(device=True)
    def logistic_loss(S, o, k, Y, r):
        acc = zero
        for q in range(k):
            v = S[o + q]
            acc += max(v, zero) - v * Y[r, q] + math.log1p(math.exp(-abs(v)))
        return acc

    @cuda.jit(device=True)
    def softmax_grad(S, o, d, k, Y, r, scale):
        zmax = S[o]
        for q in range(1, k):
            zmax = max(zmax, S[o + q])
        total = zero
        for q in range(k):
            e = math.exp(S[o + q] - zmax)
            S[d + q] = e
            total += e
        label = int64(Y[r, 0])
        for q in range(k):
            S[d + q] = (S[d + q] / total - (one if q == label else zero)) * scale

    @cuda.jit(device=True)
    def softmax_loss(S, o, k, Y, r):
        zmax = S[o]
        for q in range(1, k):
            zmax = max(zmax, S[o + q])
        e = zero
        for q in range(k):
            e += math.exp(S[o + q] - zmax)
        return zmax + math.log(e) - S[o + int64(Y[r, 0])]

    return {"mse": (mse_grad, mse_loss), "logistic": (logistic_grad, logistic_loss),
            "softmax": (softmax_grad, softmax_loss)}[name]


# ----------------------------------------------------------------------------- shared pieces
@cuda.jit(device=True)
def _param_grad(p, lay, S, W, count, A):
    """Gradient of parameter ``p`` summed over the tile's rows ``0 .. count`` in order (row
    ``u`` at ``S[u * W ..]``)."""
    layer = 0
    while p >= lay[layer, 3] + lay[layer, 1]:
        layer += 1
    n_out, d = lay[layer, 1], A + lay[layer, 5]
    if p < lay[layer, 3]:  # weight W[i, j] = a_in[i] * d[j]
        q = p - lay[layer, 2]
        i = q // n_out
        a, d = lay[layer, 4] + i, d + q - i * n_out
        g = S[a] * S[d]
        for u in range(1, count):
            g += S[u * W + a] * S[u * W + d]
        return g
    d += p - lay[layer, 3]  # bias b[j] = d[j]
    g = S[d]
    for u in range(1, count):
        g += S[u * W + d]
    return g


@cuda.jit(device=True)
def _no_norm(lay, S, row, A):
    """No per-example norm (a plain step): a constant the compiler removes."""
    return 0.0


@cuda.jit(device=True)
def _row_sq_norm(lay, S, row, A):
    """float64 ``|g|^2`` of the tile row at ``S[row ..]`` after its backward pass:
    ``sum over layers (|a_in|^2 + 1) |d|^2``, layers and entries in order."""
    total = 0.0
    for layer in range(lay.shape[0]):
        n_in, n_out, ai, d = lay[layer, 0], lay[layer, 1], lay[layer, 4], A + lay[layer, 5]
        a2 = 0.0
        for i in range(n_in):
            v = float64(S[row + ai + i])
            a2 += v * v
        d2 = 0.0
        for j in range(n_out):
            v = float64(S[row + d + j])
            d2 += v * v
        total += (a2 + 1.0) * d2
    return total


class Kernels(NamedTuple):
    """The kernels of one ``(loss, activation, dtype)``: a step (gradient and update in one
    launch), the same step as two launches (the blocks' gradient pass, then the update with
    a thread per parameter), a tracked step (also the gradient-noise estimates), the
    exact-noise gradient pass, the data-set loss and the gradient's squares
    (``reduce.grad_sq``)."""

    step: object
    grad_blocks: object
    update_params: object
    step_noise: object
    grad_norms: object
    loss_sum: object
    grad_sq: object


# ----------------------------------------------------------------------------- generated
@cache
def build(loss: str, activation: str, dtype="float64") -> Kernels:
    """Generate (once per process) the kernels of a network with ``loss``/``activation``
    and parameters of ``dtype``.

    ``loss``, ``activation`` and the dtype's constants are fixed at generation time, so the
    compiled kernels contain no branch on them and a float32 kernel computes in float32.
    """
    dt = np.dtype(dtype)
    T = numba.from_dtype(dt)
    act, act_grad, sigmoid = _activations(activation, dt)
    out_grad, row_loss = _losses(loss, dt, sigmoid)
    scalars, update = build_update(dt.name)

    @cuda.jit(device=True)
    def forward(w, wb, lay, S, W, count):
        """Every layer's outputs for the tile's ``count`` rows, the parameters at
        ``w[wb ..]`` (shared memory, or ``theta`` in global memory): the block's threads
        take the (row, output) pairs in order, row-major, so a warp reads consecutive
        columns of ``W`` (coalesced) and one row's activations (a shared-memory
        broadcast)."""
        t, threads = cuda.threadIdx.x, cuda.blockDim.x
        n_layers = lay.shape[0]
        for layer in range(n_layers):
            n_in, n_out, wo, bo = lay[layer, 0], lay[layer, 1], lay[layer, 2], lay[layer, 3]
            ai, ao = lay[layer, 4], lay[layer, 5]
            for idx in range(t, count * n_out, threads):
                u = idx // n_out
                j = idx - u * n_out
                row = u * W
                z = w[wb + bo + j]
                for i in range(n_in):
                    z += S[row + ai + i] * w[wb + wo + i * n_out + j]
                S[row + ao + j] = act(z) if layer < n_layers - 1 else z
            cuda.syncthreads()

    @cuda.jit(device=True)
    def backward(w, wb, lay, S, W, A, count):
        """The hidden layers' deltas of the tile's rows (the output layer's already set),
        the (row, input) pairs split over the block's threads (parameters at ``w[wb ..]``)."""
        t, threads = cuda.threadIdx.x, cuda.blockDim.x
        for layer in range(lay.shape[0] - 1, 0, -1):
            n_in, n_out, wo = lay[layer, 0], lay[layer, 1], lay[layer, 2]
            ai, d = lay[layer, 4], A + lay[layer, 5]
            for idx in range(t, count * n_in, threads):
                u = idx // n_in
                i = idx - u * n_in
                row = u * W
                g = S[row + d] * w[wb + wo + i * n_out]
                for j in range(1, n_out):
                    g += S[row + d + j] * w[wb + wo + i * n_out + j]
                S[row + A + ai + i] = g * act_grad(S[row + ai + i])
            cuda.syncthreads()

    @cuda.jit(device=True)
    def load_tile(X, perm, rid, S, W, first, count):
        """The tile's sample ids (the epoch's order) into ``rid``, then their input rows
        into the tile, the block's threads reading consecutive features (coalesced)."""
        t, threads = cuda.threadIdx.x, cuda.blockDim.x
        n_feat = X.shape[1]
        for u in range(t, count, threads):
            rid[u] = sample_at(first + u, perm, X.shape[0])
        cuda.syncthreads()
        for idx in range(t, count * n_feat, threads):
            u = idx // n_feat
            i = idx - u * n_feat
            S[u * W + i] = X[rid[u], i]
        cuda.syncthreads()

    @cuda.jit(device=True)
    def weights(theta, S, wb, wsh):
        """Where the tile passes read the parameters: with ``wsh``, a copy in shared memory
        at ``S[wb ..]`` (after the tile; made here, once per block), else ``theta``.
        Returns ``(array, offset)``."""
        if wsh:
            for i in range(cuda.threadIdx.x, theta.shape[0], cuda.blockDim.x):
                S[wb + i] = theta[i]
            cuda.syncthreads()
            return S, wb
        return theta, 0

    def tiles(row_norm):
        """The gradient pass of a step (``row_norm`` a constant 0 for a plain step,
        compiled away): per-block sums of the gradient over the block's tiles into
        ``partial[b]``; returns this thread's float64 sums of its rows' losses and of
        ``row_norm``."""

        @cuda.jit(device=True)
        def pass_(X, Y, theta, perm, lay, partial, start, rows, scale, tile, wsh):
            t, b = cuda.threadIdx.x, cuda.blockIdx.x
            threads, blocks = cuda.blockDim.x, cuda.gridDim.x
            S = cuda.shared.array(0, T)  # tile row u at S[u * W ..]: activations, deltas
            rid = cuda.shared.array(TILE_MAX, int64)
            last = lay.shape[0] - 1
            A = lay[last, 5] + lay[last, 1]
            W = 2 * A
            k = lay[last, 1]
            w, wb = weights(theta, S, tile * W, wsh)
            loss_acc = 0.0
            acc = 0.0
            # tile c covers positions start + c*tile .. (+tile); block b takes tiles b,
            # b + blocks, ...: the order of every sum depends on the batch size only
            for c in range(b, (rows + tile - 1) // tile, blocks):
                first = start + c * tile
                count = min(tile, start + rows - first)
                load_tile(X, perm, rid, S, W, first, count)
                forward(w, wb, lay, S, W, count)
                for u in range(t, count, threads):
                    o = u * W + lay[last, 5]
                    # before out_grad, which writes the deltas' half (the logits stay)
                    loss_acc += float64(row_loss(S, o, k, Y, rid[u]))
                    out_grad(S, o, o + A, k, Y, rid[u], scale)
                cuda.syncthreads()
                backward(w, wb, lay, S, W, A, count)
                for u in range(t, count, threads):
                    acc += row_norm(lay, S, u * W, A)
                for p in range(t, theta.shape[0], threads):
                    g = _param_grad(p, lay, S, W, count, A)
                    if c == b:
                        partial[b, p] = g
                    else:
                        partial[b, p] += g
                cuda.syncthreads()
            return loss_acc, acc

        return pass_

    plain_pass, norms_pass = tiles(_no_norm), tiles(_row_sq_norm)

    @cuda.jit(device=True)
    def finish_step(theta, state, partial, hyper, lrs, t0, code, s, loss_blocks, scale, rows,
                    losses):
        """A step's last block: every parameter's gradient (the blocks' sums in block
        order) and optimizer ``code``'s step ``t0[0] + s + 1`` at rate ``lrs[s]``; thread 0
        adds the batch loss. Returns the thread's float64 sum of its parameters' squared
        gradients (the tracked step's ``|G_B|^2``; unused, hence removed, in a plain step)."""
        blocks = cuda.gridDim.x
        c = scalars(code, hyper, lrs[s], t0[0] + s + 1)
        gsq = 0.0
        for p in range(cuda.threadIdx.x, theta.shape[0], cuda.blockDim.x):
            g = float64(update(theta, state, partial, blocks, p, c, code))
            gsq += g * g
        if cuda.threadIdx.x == 0:
            add_batch_loss(loss_blocks, blocks, float64(scale) * rows, float64(rows), losses)
        return gsq

    @cuda.jit
    def step(X, Y, theta, state, perm, lay, partial, loss_blocks, counter, hyper, lrs, t0,
             code, s, start, rows, scale, tile, wsh, losses):
        """Step ``s`` of an epoch over positions ``start .. start+rows`` in one launch: the
        blocks' gradient sums and loss sums, then the last block to finish sums them in
        block order and applies optimizer ``code``'s step ``t0[0] + s + 1`` with learning
        rate ``lrs[s]`` to every parameter, and adds the batch loss to ``losses``."""
        loss_acc, _ = plain_pass(X, Y, theta, perm, lay, partial, start, rows, scale, tile,
                                 wsh)
        block_sum(loss_acc, loss_blocks, cuda.blockIdx.x)
        if last_block(counter):
            finish_step(theta, state, partial, hyper, lrs, t0, code, s, loss_blocks, scale,
                        rows, losses)

    @cuda.jit
    def grad_blocks(X, Y, theta, perm, lay, partial, loss_blocks, start, rows, scale, tile,
                    wsh):
        """``step``'s gradient pass alone: ``partial[b]`` and ``loss_blocks[b]``, the
        blocks' sums (the first of a step's two launches)."""
        loss_acc, _ = plain_pass(X, Y, theta, perm, lay, partial, start, rows, scale, tile,
                                 wsh)
        block_sum(loss_acc, loss_blocks, cuda.blockIdx.x)

    @cuda.jit
    def update_params(theta, state, partial, n_blocks, loss_blocks, hyper, lrs, t0, code, s,
                      weight, rows, losses):
        """``step``'s last block as a launch of its own, one thread per parameter (the
        second of a step's two launches): the same sums in the same order, the same bits,
        with every SM reducing the ``n_blocks`` partial gradients instead of one
        (``weight``: the fused step's ``float64(scale) * rows``)."""
        p = cuda.grid(1)
        if p == 0:
            add_batch_loss(loss_blocks, n_blocks, weight, float64(rows), losses)
        if p < theta.shape[0]:
            c = scalars(code, hyper, lrs[s], t0[0] + s + 1)
            update(theta, state, partial, n_blocks, p, c, code)

    @cuda.jit
    def step_noise(X, Y, theta, state, perm, lay, partial, loss_blocks, counter, hyper, lrs,
                   t0, code, s, start, rows, scale, tile, wsh, losses, sq_blocks, n, noise):
        """``step``, tracking gradient noise: the blocks also sum their rows' ``|g_i|^2``
        (the deltas carry the batch scale ``1/rows`` of the own-loss scale, hence the
        ``rows^2``), the last block also the batch gradient's squares, and adds the step's
        estimates (``reduce.add_noise_step``, ``n`` training rows) to ``noise``."""
        loss_acc, acc = norms_pass(X, Y, theta, perm, lay, partial, start, rows, scale, tile,
                                   wsh)
        # tree_sum directly, not block_sum: NVVM rejects a kernel that reaches tree_sum's
        # shared array through two call paths (invalid IR, numba-cuda 0.30)
        loss_total = tree_sum(loss_acc)
        sq_total = tree_sum(acc * float64(rows) * float64(rows))
        if cuda.threadIdx.x == 0:
            loss_blocks[cuda.blockIdx.x] = loss_total
            sq_blocks[cuda.blockIdx.x] = sq_total
        if last_block(counter):
            gsq = tree_sum(finish_step(theta, state, partial, hyper, lrs, t0, code, s,
                                       loss_blocks, scale, rows, losses))
            if cuda.threadIdx.x == 0:
                sq = sq_blocks[0]
                for b in range(1, cuda.gridDim.x):  # in block order
                    sq += sq_blocks[b]
                add_noise_step(sq, gsq, rows, n, noise)

    @cuda.jit
    def grad_norms(X, Y, theta, perm, lay, partial, start, rows, scale, tile, wsh,
                   loss_blocks, out):
        """The gradient pass alone (``exact_noise``, with the own-loss ``scale``):
        ``partial[b]`` the block's gradient sums, ``loss_blocks[b]`` its rows' losses and
        ``out[b]`` their float64 ``|g_i|^2``."""
        loss_acc, acc = norms_pass(X, Y, theta, perm, lay, partial, start, rows, scale, tile,
                                   wsh)
        block_sum(loss_acc, loss_blocks, cuda.blockIdx.x)
        block_sum(acc, out, cuda.blockIdx.x)

    @cuda.jit
    def loss_sum(X, Y, theta, perm, lay, tile, wsh, out):
        """``out[b]``: float64 loss of block ``b``'s tiles of ``X`` (positions in the order
        of ``perm``, the identity here), summed over rows and outputs."""
        t, b = cuda.threadIdx.x, cuda.blockIdx.x
        threads, blocks = cuda.blockDim.x, cuda.gridDim.x
        S = cuda.shared.array(0, T)
        rid = cuda.shared.array(TILE_MAX, int64)
        last = lay.shape[0] - 1
        W = 2 * (lay[last, 5] + lay[last, 1])
        n = X.shape[0]
        w, wb = weights(theta, S, tile * W, wsh)
        acc = 0.0
        for c in range(b, (n + tile - 1) // tile, blocks):
            count = min(tile, n - c * tile)
            load_tile(X, perm, rid, S, W, c * tile, count)
            forward(w, wb, lay, S, W, count)
            for u in range(t, count, threads):
                acc += float64(row_loss(S, u * W + lay[last, 5], lay[last, 1], Y, rid[u]))
            cuda.syncthreads()
        block_sum(acc, out, b)

    return Kernels(step, grad_blocks, update_params, step_noise, grad_norms, loss_sum,
                   grad_sq)
