"""Fixed-order reductions shared by the Numba-CUDA kernels, and the gradient-noise kernels.

Everything here sums in an order fixed by the launch shape (the one atomic counts the
blocks that finished; it sums nothing), so results are bitwise reproducible:

* :func:`block_grad`: one parameter's gradient, ``partial[0..n_blocks, p]`` summed in block
  order in the parameters' dtype (what the optimizer update applies);
* :func:`tree_sum` / :func:`block_sum`: float64 values summed over
  a block by a shared-memory tree (no warp shuffles, so it runs in the CUDA simulator too);
* :func:`add_batch_loss`: a step's per-block float64 loss sums added in block order, as
  its mean batch loss times its rows, to the float64 ``losses`` array of 2 (one thread of
  a step's last block does it, so the batch loss costs no launch of its own);
* :data:`grad_sq`: ``out[b]`` = float64 sum over block ``b``'s parameters of ``g_p ** 2``
  (``exact_noise``'s ``|sum_i g_i|^2``, per block, summed on the host in block order);
* :func:`add_noise_step`: a tracked step's ``kernels/noise.py``
  :func:`~fastgd.kernels.noise.step_estimates` (compiled here as a device function) added to
  the float64 ``noise`` array of 3 (``tr(Sigma)``, ``|G|^2``, step count);
* :func:`last_block`: which block of a launch finishes it (a counter, the classic
  last-block-done pattern): that block sums the others' partial results in block order, so
  a whole step is one launch and its sums still run in a fixed order.

The gradient-noise definitions are ``kernels/noise.py``'s; the per-example norms are
computed by ``dense.py``'s tracked step and ``grad_norms`` kernels.
"""

from __future__ import annotations

from numba import cuda, float64, int32

from ..device_tables import MAX_THREADS
from ..noise import step_estimates

_step_estimates = cuda.jit(device=True)(step_estimates)


@cuda.jit(device=True)
def block_grad(partial, n_blocks, p):
    """Gradient of parameter ``p``: ``partial[0..n_blocks, p]`` summed in block order."""
    g = partial[0, p]
    for b in range(1, n_blocks):
        g += partial[b, p]
    return g


@cuda.jit(device=True)
def tree_sum(acc):
    """The sum of every thread's float64 ``acc`` over the block (a power-of-two
    ``blockDim.x <= MAX_THREADS``), returned to every thread: a shared-memory tree where
    thread ``t`` adds ``t + half`` for ``half = blockDim/2, blockDim/4, ... 1`` (no warp
    shuffles). Every thread of the block must call it (it synchronises the block)."""
    t = cuda.threadIdx.x
    shared = cuda.shared.array(MAX_THREADS, float64)
    shared[t] = acc
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            shared[t] += shared[t + half]
        cuda.syncthreads()
        half //= 2
    total = shared[0]
    cuda.syncthreads()  # every thread has read it: the shared array may be reused
    return total


@cuda.jit(device=True)
def block_sum(acc, out, index):
    """``out[index]`` = :func:`tree_sum` of ``acc`` (written by thread 0)."""
    total = tree_sum(acc)
    if cuda.threadIdx.x == 0:
        out[index] = total


@cuda.jit(device=True)
def add_batch_loss(loss_blocks, n_blocks, weight, rows, losses):
    """``losses += (weight * sum of loss_blocks[0..n_blocks), rows)``, the blocks in order
    (one thread): ``loss_blocks`` are a step's per-block sums of its rows' losses (over
    outputs too) and ``weight`` its mean-reduction ``scale`` times ``rows``, so
    ``losses[0]`` gains the mean batch loss times the rows."""
    total = loss_blocks[0]
    for b in range(1, n_blocks):
        total += loss_blocks[b]
    losses[0] += total * weight
    losses[1] += rows


@cuda.jit
def grad_sq(partial, n_blocks, out):
    """``out[b]``: float64 sum of ``g_p ** 2`` over block ``b``'s parameters (one thread per
    parameter ``p = b * blockDim + t``, ``g_p`` from :func:`block_grad`)."""
    p = cuda.grid(1)
    acc = 0.0
    if p < partial.shape[1]:
        g = float64(block_grad(partial, n_blocks, p))
        acc = g * g
    block_sum(acc, out, cuda.blockIdx.x)


@cuda.jit(device=True)
def add_noise_step(sq, gsq, rows, n, noise):
    """Add a tracked step's estimates to ``noise`` (one thread): ``S_B = sq / rows`` (the
    rows' own-loss ``|g_i|^2`` summed), ``|G_B|^2 = gsq``; ``(tr(Sigma), |G|^2, 1)``."""
    trace, grad_sq_est = _step_estimates(sq / rows, gsq, rows, n)
    noise[0] += trace
    noise[1] += grad_sq_est
    noise[2] += 1.0


@cuda.jit(device=True)
def last_block(counter):
    """True in the block that finishes a launch last (every thread of it), False in the
    others: every block makes its writes visible device-wide (``threadfence``), then
    counts itself in ``counter[0]``; the block that sees the count reach ``gridDim - 1``
    resets it for the next launch. Every thread of every block must call it."""
    flag = cuda.shared.array(1, int32)
    cuda.threadfence()
    cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        flag[0] = 1 if cuda.atomic.add(counter, 0, 1) == cuda.gridDim.x - 1 else 0
    cuda.syncthreads()
    last = flag[0] != 0
    if last:
        cuda.threadfence()  # the other blocks' writes, before this block reads them
        if cuda.threadIdx.x == 0:
            counter[0] = 0
    return last
