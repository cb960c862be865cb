"""The optimizers' update compiled for Numba-CUDA (rules: ``kernels/numba_optim.py``).

:func:`build_update` generates, once per dtype, the device function the last block of a
step (``dense.py``) runs over the flat parameters: one parameter's gradient (the per-block
partial gradients summed in block order: a fixed order, bitwise reproducible, no atomics)
and the optimizer's update of it and its state. The per-step scalars are computed in
float64 once per thread and rounded to the dtype (``T``, a compile-time constant of the
generated code), so a float32 update computes in float32.
"""

from __future__ import annotations

from functools import cache

import numba
import numpy as np
from numba import cuda

from ..numba_optim import compile_rules
from .reduce import block_grad

_rules = compile_rules(cuda.jit(device=True))


@cache
def build_update(dtype):
    """``(scalars, update)`` device functions for parameters of ``dtype``:

    - ``scalars(code, hyper, lr, t)``: optimizer ``code``'s per-step scalars of step ``t``
      (1-based), rounded to the dtype (a tuple, computed once per thread);
    - ``update(theta, state, partial, n_blocks, p, c, code)``: parameter ``p``'s gradient
      (``partial[0..n_blocks, p]`` in block order), the update of ``theta[p]`` and its
      state column with the scalars ``c``; returns the gradient (the noise step's squares).
    """
    T = numba.from_dtype(np.dtype(dtype))
    step_scalars, element = _rules["step_scalars"], _rules["update_element"]

    @cuda.jit(device=True)
    def scalars(code, hyper, lr, t):
        s = step_scalars(code, hyper, lr, t)
        return (T(s[0]), T(s[1]), T(s[2]), T(s[3]), T(s[4]), T(s[5]), T(s[6]), T(s[7]),
                T(s[8]), T(s[9]), T(s[10]), T(s[11]))

    @cuda.jit(device=True)
    def update(theta, state, partial, n_blocks, p, c, code):
        g = block_grad(partial, n_blocks, p)
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
        return g

    return scalars, update
