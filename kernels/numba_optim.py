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
- :func:`update_element`, per parameter: the new parameter and state values from the old
  ones and the gradient, in the parameters' dtype (every operand is of that dtype: no
  literal constants, which Numba-CUDA would type as float64). Each target reads and writes
  the state rows the optimizer keeps around it (``update_at`` in ``kernels/cpu/optim.py``,
  the update kernel in ``kernels/cuda/optim.py``).

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


def update_element(code, p, g, m0, m1, m2, s):
    """One parameter's update: parameter ``p``, gradient ``g``, its state ``m0, m1, m2``
    (rows 0-2 of its state column; rows the optimizer does not keep are ignored and
    returned unchanged) and the step's scalars ``s`` (already in the parameters' dtype).
    Returns the new ``(p, m0, m1, m2)``.

    Scalars in and out, no arrays: inlined into a loop, array arguments would cost
    reference counting per element (measured: 50 ns a parameter instead of 0.3)."""
    if code == ADAM:
        decay, w, beta2, w2, eps, wd, step_size, bc2_sqrt, amsgrad, low, wc = s[0], s[1], \
            s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10]
        p = p * decay
        g = g + wd * p
        m0 = lerp(m0, g, w, wc, low)
        m1 = m1 * beta2 + w2 * g * g
        # amsgrad's running maximum; selects rather than branches keep the loop vectorisable
        m2 = (m1 if m1 > m2 else m2) if amsgrad != 0 else m2
        v = m2 if amsgrad != 0 else m1
        return p - step_size * (m0 / (math.sqrt(v) / bc2_sqrt + eps)), m0, m1, m2
    if code == RMSPROP:
        lr, alpha, w, eps, wd, momentum, centered, low, wc = s[0], s[1], s[2], s[3], s[4], \
            s[5], s[6], s[7], s[8]
        g = g + wd * p
        m0 = m0 * alpha + w * g * g
        if centered != 0:  # grad_avg in row 1, the momentum buffer in row 2
            m1 = lerp(m1, g, w, wc, low)
            avg = math.sqrt(m0 - m1 * m1) + eps
            if momentum > 0:
                m2 = m2 * momentum + g / avg
                return p - lr * m2, m0, m1, m2
        else:  # the momentum buffer in row 1
            avg = math.sqrt(m0) + eps
            if momentum > 0:
                m1 = m1 * momentum + g / avg
                return p - lr * m1, m0, m1, m2
        return p - lr * (g / avg), m0, m1, m2
    if code == ADAGRAD:
        clr, wd, eps = s[0], s[1], s[2]
        g = g + wd * p
        m0 = m0 + g * g
        return p - clr * (g / (math.sqrt(m0) + eps)), m0, m1, m2
    lr, momentum, damp1, nesterov, wd, later = s[0], s[1], s[2], s[3], s[4], s[5]
    g = g + wd * p
    if momentum != 0:
        m0 = momentum * m0 + damp1 * g if later != 0 else g
        g = g + momentum * m0 if nesterov != 0 else m0
    return p - lr * g, m0, m1, m2


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
