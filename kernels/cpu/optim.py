"""The optimizers' update compiled for the Numba CPU kernels (rules: ``kernels/numba_optim.py``).

:func:`step_scalars` rounds the per-step scalars to the parameters' dtype once per step, so
the update loops stay in that dtype; :func:`update_at` updates one parameter and its state
column, :func:`update_flat` a whole flat gradient. All three are inlined into the epoch
drivers, which are compiled per optimizer code and number of state rows, both constants of
the driver (``epoch.py``): the branches on them fold away and the update loops vectorise
as the plain SGD loop did (measured on the MLP's 9,610 parameters: Adam 1.0 ns a
parameter, SGD with momentum 0.3; with the code read at run time, a branchy scalar loop
at 4-6 ns).
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
def update_at(code, theta, state, i, g, s, rows):
    """Update ``theta[i]`` and its state column ``state[:rows, i]`` with gradient ``g``
    (``rows = state.shape[0]``, a constant of the driver like ``code``: rows read only
    when present would otherwise be conditional loads, which keep the loop scalar)."""
    z = g - g
    m0 = m1 = m2 = z
    if rows > 0:
        m0 = state[0, i]
    if rows > 1:
        m1 = state[1, i]
    if rows > 2:
        m2 = state[2, i]
    p, m0, m1, m2 = update_element(code, theta[i], g, m0, m1, m2, s)
    theta[i] = p
    if rows > 0:
        state[0, i] = m0
    if rows > 1:
        state[1, i] = m1
    if rows > 2:
        state[2, i] = m2


@inline
def update_flat(theta, state, grad, code, s, rows):
    """Update every parameter with the flat gradient ``grad``."""
    for i in range(theta.size):
        update_at(code, theta, state, i, grad[i], s, rows)
