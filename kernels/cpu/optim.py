"""The optimizers' update compiled for the Numba CPU kernels (rules: ``kernels/numba_optim.py``).

:func:`step_scalars` rounds the per-step scalars to the parameters' dtype once per step, so
the update loops stay in that dtype; :func:`update_flat` applies a flat gradient. The
element update branches on the optimizer code, a loop invariant that LLVM hoists out of the
update loops (SGD throughput is what it was before optimizers were pluggable, see
bench/RESULTS.md).
"""

from __future__ import annotations

from ..numba_optim import compile_rules
from .common import inline

_rules = compile_rules(inline)
update_element = _rules["update_element"]
_scalars = _rules["step_scalars"]


@inline
def step_scalars(code, h, lr, t, cast):
    """The step's optimizer scalars, each rounded to ``cast`` (the parameters' dtype)."""
    s = _scalars(code, h, lr, t)
    return (cast(s[0]), cast(s[1]), cast(s[2]), cast(s[3]), cast(s[4]), cast(s[5]),
            cast(s[6]), cast(s[7]), cast(s[8]), cast(s[9]), cast(s[10]), cast(s[11]))


@inline
def update_flat(theta, state, grad, code, s):
    """Update every parameter with the flat gradient ``grad``."""
    for i in range(theta.size):
        update_element(code, theta, state, i, grad[i], s)
