"""The optimizers' update compiled for Numba-CUDA (rules: ``kernels/numba_optim.py``).

:func:`build_update` generates, once per dtype, the kernel that finishes a step: one thread
per parameter sums the per-block gradients in block order (a fixed order: bitwise
reproducible, no atomics) and applies the optimizer. The per-step scalars are computed in
float64 and rounded to the dtype once per thread (``T``, a compile-time constant of the
generated kernel), so a float32 update computes in float32. Thread 0 also adds the step's
batch loss (the gradient launch's per-block float64 loss sums) to the float64 ``losses``
array (``reduce.add_batch_loss``): the only float64 arithmetic of a float32 update besides
the per-step scalars. With ``noise`` (online gradient-noise tracking) the same update also
sums the squared gradients per block in float64 (``reduce.block_sum``).
"""

from __future__ import annotations

from functools import cache

import numba
import numpy as np
from numba import cuda, float64

from ..numba_optim import compile_rules
from .reduce import add_batch_loss, block_grad, block_sum

_rules = compile_rules(cuda.jit(device=True))


@cache
def build_update(dtype, noise: bool = False):
    """The ``opt_update`` kernel for parameters of ``dtype`` (float32 or float64); with
    ``noise``, the variant that also writes ``gsq[blockIdx]``: the float64 sum of the
    squared gradients of the block's parameters (the batch gradient's ``|G_B|^2``, per
    block; a tracked step's, see ``reduce.noise_step``)."""
    T = numba.from_dtype(np.dtype(dtype))
    scalars, element = _rules["step_scalars"], _rules["update_element"]

    @cuda.jit(device=True)
    def apply(theta, state, g, hyper, lr, code, t, p):
        """Optimizer ``code``'s step ``t`` (1-based) of parameter ``p`` with gradient ``g``."""
        s = scalars(code, hyper, lr, t)
        c = (T(s[0]), T(s[1]), T(s[2]), T(s[3]), T(s[4]), T(s[5]), T(s[6]), T(s[7]), T(s[8]),
             T(s[9]), T(s[10]), T(s[11]))
        rows = state.shape[0]  # the state rows the optimizer keeps (uniform: no divergence)
        m0 = state[0, p] if rows > 0 else g - g
        m1 = state[1, p] if rows > 1 else g - g
        m2 = state[2, p] if rows > 2 else g - g
        theta[p], m0, m1, m2 = element(code, theta[p], g, m0, m1, m2, c)
        if rows > 0:
            state[0, p] = m0
        if rows > 1:
            state[1, p] = m1
        if rows > 2:
            state[2, p] = m2

    @cuda.jit
    def opt_update(theta, state, partial, n_blocks, hyper, lrs, code, step, t, loss_blocks,
                   weight, rows, losses):
        """Sum ``partial[0..n_blocks, p]`` in block order, then optimizer ``code``'s step
        ``t`` (1-based) with learning rate ``lrs[step]``; one thread per parameter. Thread
        0 adds the step's batch loss to ``losses`` (``reduce.add_batch_loss`` of the
        gradient launch's ``n_blocks`` sums ``loss_blocks``, ``weight`` = scale * rows,
        ``rows`` as float64)."""
        p = cuda.grid(1)
        if p == 0:
            add_batch_loss(loss_blocks, n_blocks, weight, rows, losses)
        if p >= theta.shape[0]:
            return
        apply(theta, state, block_grad(partial, n_blocks, p), hyper, lrs[step], code, t, p)

    @cuda.jit
    def opt_update_noise(theta, state, partial, n_blocks, hyper, lrs, code, step, t,
                         loss_blocks, weight, rows, losses, gsq):
        """``opt_update``, and ``gsq[b]`` = float64 sum of ``g_p ** 2`` over block ``b``'s
        parameters (every thread reaches the block's reduction: no early return)."""
        p = cuda.grid(1)
        if p == 0:
            add_batch_loss(loss_blocks, n_blocks, weight, rows, losses)
        acc = 0.0
        if p < theta.shape[0]:
            g = block_grad(partial, n_blocks, p)
            apply(theta, state, g, hyper, lrs[step], code, t, p)
            acc = float64(g) * float64(g)
        block_sum(acc, gsq, cuda.blockIdx.x)

    return opt_update_noise if noise else opt_update
