"""The optimizers' update compiled for Numba-CUDA (rules: ``kernels/numba_optim.py``).

:func:`build_update` generates, once per dtype, the kernel that finishes a step: one thread
per parameter sums the per-block gradients in block order (a fixed order: bitwise
reproducible, no atomics) and applies the optimizer. The per-step scalars are computed in
float64 and rounded to the dtype once per thread (``T``, a compile-time constant of the
generated kernel), so a float32 update computes in float32.
"""

from __future__ import annotations

from functools import cache

import numba
import numpy as np
from numba import cuda

from ..numba_optim import compile_rules

_rules = compile_rules(cuda.jit(device=True))


@cache
def build_update(dtype):
    """The ``opt_update`` kernel for parameters of ``dtype`` (float32 or float64)."""
    T = numba.from_dtype(np.dtype(dtype))
    scalars, element = _rules["step_scalars"], _rules["update_element"]

    @cuda.jit
    def opt_update(theta, state, partial, n_blocks, hyper, lrs, code, step, t):
        """Sum ``partial[0..n_blocks, p]`` in block order, then optimizer ``code``'s step
        ``t`` (1-based) with learning rate ``lrs[step]``; one thread per parameter."""
        p = cuda.grid(1)
        if p >= theta.shape[0]:
            return
        g = partial[0, p]
        for b in range(1, n_blocks):
            g += partial[b, p]
        s = scalars(code, hyper, lrs[step], t)
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

    return opt_update
