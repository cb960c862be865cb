"""Numba-CUDA kernels for dense networks (a linear model is the network with one layer).

The math is ``kernels/reference.py``'s: PyTorch's mean-reduced losses and ``torch.optim``'s
update rules (``optim.py``), on the flat parameter vector ``W1, b1, W2, b2, ...`` (each ``W`` shaped
``(n_in, n_out)``, row-major), the same layout as the reference.

One optimizer step is two launches, with no host synchronisation and no copy between them:

1. ``grad_step[blocks, threads]``: the batch's positions are cut into chunks of ``threads``
   rows; block ``b`` takes chunks ``b, b + blocks, ...``. Per chunk, each thread maps its
   position to a sample (the epoch shuffle, :func:`sample_at`), copies the row into its
   scratch row and runs forward and backward there (activations and deltas of every
   layer); after a barrier the block's threads split the parameters between them and each
   sums ``a_in * delta`` over the chunk's rows in row order into ``partial[b, p]``. From
   the same forward pass each thread adds up its rows' float64 losses (the row losses
   below, at the parameters before the update); the block sums them
   (``reduce.block_sum``) into ``loss_blocks[b]``.
2. ``update[ceil(P / threads), threads]`` (``optim.build_update``): one thread per
   parameter sums ``partial[0..blocks, p]`` in block order and applies the optimizer (the
   fused update of the whole flat vector and its ``(n_state, P)`` state); its thread 0
   adds ``loss_blocks[0..blocks)`` in block order times ``scale * rows``, and the rows, to
   the float64 batch-loss sums ``losses`` (``reduce.add_batch_loss``; the backend's
   ``epoch_loss`` reads them). The batch loss costs no launch of its own.

Gradient noise (``kernels/noise.py``; only when asked, the two launches above are
untouched otherwise): ``grad_norms`` is ``grad_step`` (the batch loss included) that
also adds, per thread, the float64 ``|g_i|^2`` of its rows from their activations and
deltas in scratch (``(|a_in|^2 + 1) |d|^2`` per layer, :func:`_row_sq_norm`) and sums them
per block (``reduce.block_sum``);
a tracked step is ``grad_norms``, the update variant that also sums the gradient's squares
per block, and ``reduce.noise_step`` (one block) adding the step's estimates to a device
array: three launches instead of two, still no host synchronisation. ``exact_noise`` is
``grad_norms`` over the data set with the own-loss scale, then ``reduce.grad_sq``.

Every sum runs in a fixed order that depends on the batch and the launch shape only, so a
run is bitwise reproducible; no atomics are used. ``loss_sum`` evaluates the float64 loss of
a data set: per-thread sums, a shared-memory tree per block (no warp shuffles, so it runs
in the CUDA simulator too), per-block results summed on the host in block order.

Scratch layout, one row per thread: ``[a_0 | a_1 | ... | z_L]`` then ``[unused | d_1 | ...
| d_L]`` (``A = sum(sizes)`` values each), ``a_0`` the input row and ``d_l`` the gradient of
the loss with respect to layer ``l``'s pre-activation. ``lay`` is an int64 ``(L, 6)`` array,
per layer ``n_in, n_out, w_off, b_off, a_in, a_out`` (see :func:`layout`).

Kernels take no explicit signature (they would compile at import, which fails without a
GPU); :func:`build` generates and memoizes them per ``(loss, activation)``, which are
compile-time constants of the generated code; the update kernel is generated per dtype.
"""

from __future__ import annotations

import math
from functools import cache
from typing import NamedTuple

from numba import cuda, float64, int64

from ..device_tables import (  # noqa: F401 (re-exported)
    MAX_THREADS,
    layout,
    perm_capacity,
    perm_table,
)
from ..permutation import compile_sample_at
from .optim import build_update
from .reduce import block_sum, grad_sq, noise_step

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


# ----------------------------------------------------------------------------- activations
@cuda.jit(device=True)
def _sigmoid(z):
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


@cuda.jit(device=True)
def _relu(z):
    return z if z > 0 else z * 0


@cuda.jit(device=True)
def _relu_grad(a):
    return 1.0 if a > 0 else 0.0


@cuda.jit(device=True)
def _tanh(z):
    return math.tanh(z)


@cuda.jit(device=True)
def _tanh_grad(a):
    return 1 - a * a


@cuda.jit(device=True)
def _sigmoid_grad(a):
    return a * (1 - a)


ACTIVATIONS = {"relu": (_relu, _relu_grad), "tanh": (_tanh, _tanh_grad),
               "sigmoid": (_sigmoid, _sigmoid_grad)}


# ----------------------------------------------------------------------------- losses
# Output gradients overwrite ``S[s, d:d+k]`` with ``scale * dLoss/dz`` of logits ``S[s, o:o+k]``;
# row losses return the float64 loss of one row summed over its outputs.
@cuda.jit(device=True)
def _mse_grad(S, s, o, d, k, Y, r, scale):
    for q in range(k):
        S[s, d + q] = 2 * (S[s, o + q] - Y[r, q]) * scale


@cuda.jit(device=True)
def _logistic_grad(S, s, o, d, k, Y, r, scale):
    for q in range(k):
        S[s, d + q] = (_sigmoid(S[s, o + q]) - Y[r, q]) * scale


@cuda.jit(device=True)
def _softmax_grad(S, s, o, d, k, Y, r, scale):
    zmax = S[s, o]
    for q in range(1, k):
        zmax = max(zmax, S[s, o + q])
    total = 0.0
    for q in range(k):
        e = math.exp(S[s, o + q] - zmax)
        S[s, d + q] = e
        total += e
    label = int64(Y[r, 0])
    for q in range(k):
        S[s, d + q] = (S[s, d + q] / total - (1.0 if q == label else 0.0)) * scale


@cuda.jit(device=True)
def _mse_loss(S, s, o, k, Y, r):
    acc = 0.0
    for q in range(k):
        v = float64(S[s, o + q]) - float64(Y[r, q])
        acc += v * v
    return acc


@cuda.jit(device=True)
def _logistic_loss(S, s, o, k, Y, r):
    acc = 0.0
    for q in range(k):
        v = float64(S[s, o + q])
        acc += max(v, 0.0) - v * float64(Y[r, q]) + math.log1p(math.exp(-abs(v)))
    return acc


@cuda.jit(device=True)
def _softmax_loss(S, s, o, k, Y, r):
    zmax = float64(S[s, o])
    for q in range(1, k):
        zmax = max(zmax, float64(S[s, o + q]))
    e = 0.0
    for q in range(k):
        e += math.exp(float64(S[s, o + q]) - zmax)
    return zmax + math.log(e) - float64(S[s, o + int64(Y[r, 0])])


LOSSES = {"mse": (_mse_grad, _mse_loss), "logistic": (_logistic_grad, _logistic_loss),
          "softmax": (_softmax_grad, _softmax_loss)}


# ----------------------------------------------------------------------------- shared pieces
@cuda.jit(device=True)
def _load_row(X, r, S, s):
    for i in range(X.shape[1]):
        S[s, i] = X[r, i]


@cuda.jit(device=True)
def _param_grad(p, lay, S, base, count, A):
    """Gradient of parameter ``p`` summed over scratch rows ``base .. base+count`` in order."""
    layer = 0
    while p >= lay[layer, 3] + lay[layer, 1]:
        layer += 1
    n_out, d = lay[layer, 1], A + lay[layer, 5]
    if p < lay[layer, 3]:  # weight W[i, j] = a_in[i] * d[j]
        q = p - lay[layer, 2]
        i = q // n_out
        a, d = lay[layer, 4] + i, d + q - i * n_out
        g = S[base, a] * S[base, d]
        for u in range(1, count):
            g += S[base + u, a] * S[base + u, d]
        return g
    d += p - lay[layer, 3]  # bias b[j] = d[j]
    g = S[base, d]
    for u in range(1, count):
        g += S[base + u, d]
    return g


@cuda.jit(device=True)
def _no_norm(lay, S, s, A):
    """No per-example norm (``grad_step``): a constant the compiler removes."""
    return 0.0


@cuda.jit(device=True)
def _row_sq_norm(lay, S, s, A):
    """float64 ``|g|^2`` of the row in scratch row ``s`` after its backward pass:
    ``sum over layers (|a_in|^2 + 1) |d|^2`` (``a_in`` at ``S[s, a_in..]``, the layer's
    delta at ``S[s, A + a_out..]``), layers and entries in order."""
    total = 0.0
    for layer in range(lay.shape[0]):
        n_in, n_out, ai, d = lay[layer, 0], lay[layer, 1], lay[layer, 4], A + lay[layer, 5]
        a2 = 0.0
        for i in range(n_in):
            v = float64(S[s, ai + i])
            a2 += v * v
        d2 = 0.0
        for j in range(n_out):
            v = float64(S[s, d + j])
            d2 += v * v
        total += (a2 + 1.0) * d2
    return total


class Kernels(NamedTuple):
    """The kernels of one ``(loss, activation, dtype)`` (the last two are shared by all)."""

    grad_step: object
    loss_sum: object
    update: object
    grad_norms: object
    update_noise: object
    grad_sq: object
    noise_step: object


# ----------------------------------------------------------------------------- generated
@cache
def build(loss: str, activation: str, dtype="float64") -> Kernels:
    """Generate (once per process) the kernels of a network with ``loss``/``activation``
    and parameters of ``dtype``.

    ``loss`` and ``activation`` select device functions at generation time, so the
    compiled kernels contain no branch on them.
    """
    act, act_grad = ACTIVATIONS[activation]
    out_grad, row_loss = LOSSES[loss]

    @cuda.jit(device=True)
    def forward(theta, lay, S, s):
        n_layers = lay.shape[0]
        for layer in range(n_layers):
            n_in, n_out, wo, bo = lay[layer, 0], lay[layer, 1], lay[layer, 2], lay[layer, 3]
            ai, ao = lay[layer, 4], lay[layer, 5]
            for j in range(n_out):
                z = theta[bo + j]
                for i in range(n_in):
                    z += S[s, ai + i] * theta[wo + i * n_out + j]
                S[s, ao + j] = act(z) if layer < n_layers - 1 else z

    @cuda.jit(device=True)
    def backward(theta, lay, S, s, A):
        for layer in range(lay.shape[0] - 1, 0, -1):
            n_in, n_out, wo = lay[layer, 0], lay[layer, 1], lay[layer, 2]
            ai, d = lay[layer, 4], A + lay[layer, 5]
            for i in range(n_in):
                g = S[s, d] * theta[wo + i * n_out]
                for j in range(1, n_out):
                    g += S[s, d + j] * theta[wo + i * n_out + j]
                S[s, A + ai + i] = g * act_grad(S[s, ai + i])

    def chunks(row_norm):
        """The gradient pass shared by ``grad_step`` and ``grad_norms``: per-block sums of
        the step's gradient into ``partial``, returning the float64 sums over this thread's
        rows of their losses and of ``row_norm`` (a constant 0 for ``grad_step``, compiled
        away)."""

        @cuda.jit(device=True)
        def pass_(X, Y, theta, perm, lay, S, partial, start, rows, scale):
            t, b = cuda.threadIdx.x, cuda.blockIdx.x
            threads, blocks = cuda.blockDim.x, cuda.gridDim.x
            A = S.shape[1] // 2
            last = lay.shape[0] - 1
            base = b * threads
            loss_acc = 0.0
            acc = 0.0
            # chunk c covers positions start + c*threads .. (+threads); block b takes
            # chunks b, b + blocks, ...; its thread t runs the chunk's row t in scratch row
            # base + t
            for c in range(b, (rows + threads - 1) // threads, blocks):
                first = start + c * threads
                count = min(threads, start + rows - first)
                if t < count:
                    r = sample_at(first + t, perm, X.shape[0])
                    _load_row(X, r, S, base + t)
                    forward(theta, lay, S, base + t)
                    # before out_grad, which writes the deltas' half (the logits stay)
                    loss_acc += row_loss(S, base + t, lay[last, 5], lay[last, 1], Y, r)
                    out_grad(S, base + t, lay[last, 5], A + lay[last, 5], lay[last, 1], Y, r,
                             scale)
                    backward(theta, lay, S, base + t, A)
                    acc += row_norm(lay, S, base + t, A)
                cuda.syncthreads()
                # the block's threads split the parameters, each summing the chunk's rows
                for p in range(t, theta.shape[0], threads):
                    g = _param_grad(p, lay, S, base, count, A)
                    if c == b:
                        partial[b, p] = g
                    else:
                        partial[b, p] += g
                cuda.syncthreads()
            return loss_acc, acc

        return pass_

    plain_pass, norms_pass = chunks(_no_norm), chunks(_row_sq_norm)

    @cuda.jit
    def grad_step(X, Y, theta, perm, lay, S, partial, start, rows, scale, loss_blocks):
        """Per-block gradient sums of the step over positions ``start .. start+rows``, and
        ``loss_blocks[b]`` = float64 loss of block ``b``'s rows (summed over rows and
        outputs, at the parameters before the update)."""
        loss_acc, _ = plain_pass(X, Y, theta, perm, lay, S, partial, start, rows, scale)
        block_sum(loss_acc, loss_blocks, cuda.blockIdx.x)

    @cuda.jit
    def grad_norms(X, Y, theta, perm, lay, S, partial, start, rows, scale, loss_blocks,
                   ratio2, out):
        """``grad_step``, and ``out[b]`` = float64 sum over block ``b``'s rows of their
        ``|g_i|^2`` times ``ratio2`` (``(own scale / scale)^2``: ``rows^2`` for a batch's
        deltas, 1 when ``scale`` is the own scale)."""
        loss_acc, acc = norms_pass(X, Y, theta, perm, lay, S, partial, start, rows, scale)
        block_sum(loss_acc, loss_blocks, cuda.blockIdx.x)
        block_sum(acc * ratio2, out, cuda.blockIdx.x)

    @cuda.jit
    def loss_sum(X, Y, theta, lay, S, out):
        """``out[b]``: float64 loss of block ``b``'s rows (summed over rows and outputs)."""
        t, b = cuda.threadIdx.x, cuda.blockIdx.x
        threads, blocks = cuda.blockDim.x, cuda.gridDim.x
        last = lay.shape[0] - 1
        s = b * threads + t
        acc = 0.0
        for c in range(b, (X.shape[0] + threads - 1) // threads, blocks):
            r = c * threads + t
            if r < X.shape[0]:
                _load_row(X, r, S, s)
                forward(theta, lay, S, s)
                acc += row_loss(S, s, lay[last, 5], lay[last, 1], Y, r)
        block_sum(acc, out, b)

    return Kernels(grad_step, loss_sum, build_update(dtype), grad_norms,
                   build_update(dtype, noise=True), grad_sq, noise_step)
