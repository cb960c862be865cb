"""The optimizers' update for the Numba kernels, CPU and CUDA alike, one parameter at a time.

Plain Python written once for both Numba targets: ``kernels/cpu/optim.py`` compiles these
functions for the CPU and ``kernels/cuda/optim.py`` for the GPU (:func:`compile_rules`).
The rules are the NumPy reference's (``kernels/optimizers.py``, ``torch.optim``'s order of
operations), split in two so the per-element work is as small as it can be:

- :func:`step_scalars`, once per step: everything that depends on the step only (the
  learning rate, bias corrections, Adagrad's decayed rate, ``1 - beta``...) from the
  float64 hyper vector ``h``, the step's ``lr`` and the 1-based step count ``t``: a float64
  tuple of ``SCALAR_SLOTS`` values that the caller rounds once to the parameters' dtype, as
  PyTorch rounds its Python-float scalars to the tensor's dtype;
- :func:`update_element`, per parameter ``i``: the update of ``theta[i]`` and its state
  column ``state[:, i]`` with gradient ``g``, in the parameters' dtype (every operand is of
  that dtype: no literal constants, which Numba-CUDA would type as float64).

Both branch on the optimizer code, a constant of the run (uniform across a warp on the GPU).
To add an optimizer: its code in ``kernels/optimizers.py``, a branch in each function here.
"""

from __future__ import annotations

import math
import types

from .optimizers import OPTIMIZER_CODES

SGD = OPTIMIZER_CODES["sgd"]
ADAM = OPTIMIZER_CODES["adam"]
RMSPROP = OPTIMIZER_CODES["rmsprop"]
ADAGRAD = OPTIMIZER_CODES["adagrad"]


def step_scalars(code, h, lr, t):
    """The ``SCALAR_SLOTS`` per-step scalars of optimizer ``code`` (see the module doc)."""
    z = 0.0
    t = float(t)
    if code == ADAM:
        beta1, beta2, eps, wd, amsgrad, decoupled = h[0], h[1], h[2], h[3], h[4], h[5]
        decay = 1 - lr * wd if decoupled != 0 else 1.0
        coupled_wd = 0.0 if decoupled != 0 else wd
        step_size = lr / (1 - beta1**t)
        bc2_sqrt = math.sqrt(1 - beta2**t)
        w = 1 - beta1
        return (decay, w, beta2, 1 - beta2, eps, coupled_wd, step_size, bc2_sqrt, amsgrad,
                1.0 if w < 0.5 else 0.0, 1 - w, z)
    if code == RMSPROP:
        alpha, eps, wd, momentum, centered = h[0], h[1], h[2], h[3], h[4]
        w = 1 - alpha
        return (lr, alpha, w, eps, wd, momentum, centered, 1.0 if w < 0.5 else 0.0, 1 - w,
                z, z, z)
    if code == ADAGRAD:
        lr_decay, wd, eps = h[0], h[1], h[2]
        return (lr / (1 + (t - 1) * lr_decay), wd, eps, z, z, z, z, z, z, z, z, z)
    momentum, dampening, nesterov, wd = h[0], h[1], h[2], h[3]
    return (lr, momentum, 1 - dampening, nesterov, wd, 1.0 if t > 1 else 0.0, z, z, z, z, z,
            z)


def lerp(a, b, w, wc, low):
    """``torch.lerp(a, b, w)`` with ``wc = 1 - w``; ``low`` is ``w < 0.5`` (PyTorch's
    two-sided formula)."""
    if low != 0:
        return a + w * (b - a)
    return b - (b - a) * wc


def update_element(code, theta, state, i, g, s):
    """Update parameter ``theta[i]`` (state ``state[:, i]``) with gradient ``g`` and the
    step's scalars ``s`` (already in the parameters' dtype)."""
    if code == ADAM:
        decay, w, beta2, w2, eps, wd, step_size, bc2_sqrt, amsgrad, low, wc = s[0], s[1], \
            s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10]
        p = theta[i] * decay
        g = g + wd * p
        m = lerp(state[0, i], g, w, wc, low)
        v = state[1, i] * beta2 + w2 * g * g
        state[0, i] = m
        state[1, i] = v
        if amsgrad != 0:
            v = max(state[2, i], v)
            state[2, i] = v
        theta[i] = p - step_size * (m / (math.sqrt(v) / bc2_sqrt + eps))
    elif code == RMSPROP:
        lr, alpha, w, eps, wd, momentum, centered, low, wc = s[0], s[1], s[2], s[3], s[4], \
            s[5], s[6], s[7], s[8]
        p = theta[i]
        g = g + wd * p
        sq = state[0, i] * alpha + w * g * g
        state[0, i] = sq
        if centered != 0:
            ga = lerp(state[1, i], g, w, wc, low)
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


#: The functions of this file, callees before callers (the order :func:`compile_rules` uses).
RULES = ("step_scalars", "lerp", "update_element")


def compile_rules(decorate) -> dict:
    """``{name: decorate(copy of name)}`` for :data:`RULES`, each copy resolving its calls to
    the others' compiled versions (a Numba kernel calls dispatchers, never plain Python).
    Copies keep their name and this file, so Numba's on-disk cache finds them again."""
    scope = dict(globals())
    out = {}
    for name in RULES:
        fn = globals()[name]
        copy = types.FunctionType(fn.__code__, scope, name, fn.__defaults__, fn.__closure__)
        copy.__qualname__, copy.__doc__, copy.__module__ = name, fn.__doc__, fn.__module__
        out[name] = scope[name] = decorate(copy)
    return out
