"""The optimizers' update for the Numba CPU kernels, one parameter at a time.

The same rules as the NumPy reference (``kernels/optimizers.py``, ``torch.optim``'s order of
operations), split in two so the per-element work is as small as it can be:

- :func:`step_scalars`, once per step: everything that depends on the step only (the
  learning rate, bias corrections, Adagrad's decayed rate, ``1 - beta``...) from the
  float64 hyper vector ``h``, the step's ``lr`` and the 1-based step count ``t``, computed
  in float64 and rounded once to the parameters' dtype (``cast``), as PyTorch rounds its
  Python-float scalars to the tensor's dtype;
- :func:`update_element`, per parameter ``i``: the update of ``theta[i]`` and its state
  column ``state[:, i]`` with gradient ``g``, in the parameters' dtype.

Both branch on the optimizer code, a constant of the run; the element branch is
loop-invariant, so LLVM hoists it out of the update loops (measured: SGD throughput as
before this file existed, see bench/RESULTS.md).
"""

from __future__ import annotations

import math

from ..optimizers import OPTIMIZER_CODES
from .common import inline

SGD = OPTIMIZER_CODES["sgd"]
ADAM = OPTIMIZER_CODES["adam"]
RMSPROP = OPTIMIZER_CODES["rmsprop"]
ADAGRAD = OPTIMIZER_CODES["adagrad"]


@inline
def step_scalars(code, h, lr, t, cast):
    """The ``SCALAR_SLOTS`` per-step scalars of optimizer ``code`` (see the module doc)."""
    z = cast(0)
    if code == ADAM:
        beta1, beta2, eps, wd, amsgrad, decoupled = h[0], h[1], h[2], h[3], h[4], h[5]
        decay = 1 - lr * wd if decoupled != 0 else 1.0
        coupled_wd = 0.0 if decoupled != 0 else wd
        step_size = lr / (1 - beta1**t)
        bc2_sqrt = math.sqrt(1 - beta2**t)
        w = 1 - beta1
        return (cast(decay), cast(w), cast(beta2), cast(1 - beta2), cast(eps),
                cast(coupled_wd), cast(step_size), cast(bc2_sqrt), cast(amsgrad),
                cast(w < 0.5))
    if code == RMSPROP:
        alpha, eps, wd, momentum, centered = h[0], h[1], h[2], h[3], h[4]
        w = 1 - alpha
        return (cast(lr), cast(alpha), cast(w), cast(eps), cast(wd), cast(momentum),
                cast(centered), cast(w < 0.5), z, z)
    if code == ADAGRAD:
        lr_decay, wd, eps = h[0], h[1], h[2]
        return (cast(lr / (1 + (t - 1) * lr_decay)), cast(wd), cast(eps), z, z, z, z, z, z, z)
    momentum, dampening, nesterov, wd = h[0], h[1], h[2], h[3]
    return (cast(lr), cast(momentum), cast(1 - dampening), cast(nesterov), cast(wd),
            cast(t > 1), z, z, z, z)


@inline
def lerp(a, b, w, low):
    """``torch.lerp(a, b, w)``; ``low`` is ``w < 0.5`` (PyTorch's two-sided formula)."""
    if low != 0:
        return a + w * (b - a)
    return b - (b - a) * (1 - w)


@inline
def update_element(code, theta, state, i, g, s):
    """Update parameter ``theta[i]`` (state ``state[:, i]``) with gradient ``g`` and the
    step's scalars ``s``."""
    if code == ADAM:
        decay, w, beta2, w2, eps, wd, step_size, bc2_sqrt, amsgrad, low = s
        p = theta[i] * decay
        g = g + wd * p
        m = lerp(state[0, i], g, w, low)
        v = state[1, i] * beta2 + w2 * g * g
        state[0, i] = m
        state[1, i] = v
        if amsgrad != 0:
            v = max(state[2, i], v)
            state[2, i] = v
        theta[i] = p - step_size * (m / (math.sqrt(v) / bc2_sqrt + eps))
    elif code == RMSPROP:
        lr, alpha, w, eps, wd, momentum, centered, low = s[0], s[1], s[2], s[3], s[4], s[5], \
            s[6], s[7]
        p = theta[i]
        g = g + wd * p
        sq = state[0, i] * alpha + w * g * g
        state[0, i] = sq
        if centered != 0:
            ga = lerp(state[1, i], g, w, low)
            state[1, i] = ga
            avg = math.sqrt(sq - ga * ga) + eps
        else:
            avg = math.sqrt(sq) + eps
        if momentum > 0:
            j = 2 if centered != 0 else 1
            buf = state[j, i] * momentum + g / avg
            state[j, i] = buf
            theta[i] = p - lr * buf
        else:
            theta[i] = p - lr * (g / avg)
    elif code == ADAGRAD:
        clr, wd, eps = s[0], s[1], s[2]
        p = theta[i]
        g = g + wd * p
        total = state[0, i] + g * g
        state[0, i] = total
        theta[i] = p - clr * (g / (math.sqrt(total) + eps))
    else:
        lr, momentum, damp1, nesterov, wd, later = s[0], s[1], s[2], s[3], s[4], s[5]
        p = theta[i]
        g = g + wd * p
        if momentum != 0:
            buf = momentum * state[0, i] + damp1 * g if later != 0 else g
            state[0, i] = buf
            g = g + momentum * buf if nesterov != 0 else buf
        theta[i] = p - lr * g


@inline
def update_flat(theta, state, grad, code, s):
    """Update every parameter with the flat gradient ``grad``."""
    for i in range(theta.size):
        update_element(code, theta, state, i, grad[i], s)
