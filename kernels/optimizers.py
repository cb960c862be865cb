"""The optimizers' NumPy reference: ``torch.optim``'s update rules on flat vectors.

Every optimizer is one function ``update(theta, state, grad, h, lr, t)`` that updates the flat
parameters ``theta`` and the optimizer state ``state`` (an ``(n_state, n_params)`` array,
one row per buffer) in place, given the batch gradient ``grad``, the hyper-parameter vector
``h`` (``HYPER_SLOTS`` float64 values, the meaning of each slot per optimizer below, written
by ``fastgd.optim``), the step's learning rate ``lr`` and the 1-based global step count
``t``. The update order, the bias corrections and the defaults are PyTorch's
(``torch.optim``'s single-tensor code paths), so a run can be checked against it step by step.

The compiled kernels mirror these functions: ``kernels/numba_optim.py`` (Numba, compiled
for the CPU and for CUDA) and ``kernels/cu/optim.cuh`` (CUDA C). To add an optimizer: a code
here and its function in :data:`UPDATES`, its branches in those two files, its spec in
``fastgd/optim.py`` and its rows in the tests.

Hyper-parameter slots
---------------------
- ``sgd`` (``torch.optim.SGD``): ``momentum, dampening, nesterov, weight_decay``; state: the
  momentum buffer when ``momentum != 0``.
- ``adam`` (``torch.optim.Adam``/``AdamW``): ``beta1, beta2, eps, weight_decay, amsgrad,
  decoupled``; state: ``exp_avg, exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad).
  ``decoupled`` is AdamW's decay, ``theta *= 1 - lr * weight_decay``, before the step.
- ``rmsprop`` (``torch.optim.RMSprop``): ``alpha, eps, weight_decay, momentum, centered``;
  state: ``square_avg``, then ``grad_avg`` when centered, then the momentum buffer when
  ``momentum > 0``.
- ``adagrad`` (``torch.optim.Adagrad``): ``lr_decay, weight_decay, eps``; state: ``sum``
  (filled with ``initial_accumulator_value`` by the spec).
"""

from __future__ import annotations

import numpy as np

OPTIMIZER_CODES = {"sgd": 0, "adam": 1, "rmsprop": 2, "adagrad": 3}
#: Length of the hyper-parameter vector every kernel receives.
HYPER_SLOTS = 8
#: Per-step scalars the compiled kernels derive from ``(h, lr, t)`` once per step.
SCALAR_SLOTS = 12


def lerp(a, b, w):
    """``torch.lerp(a, b, w)`` with PyTorch's two-sided formula (``w`` a Python float)."""
    if w < 0.5:
        return a + w * (b - a)
    return b - (b - a) * (1 - w)


def sgd(theta, state, grad, h, lr, t) -> None:
    """``torch.optim.SGD``: weight decay, then momentum (the buffer starts as the first
    gradient, later ``buf = momentum * buf + (1 - dampening) * g``), Nesterov or not."""
    momentum, dampening, nesterov, wd = h[0], h[1], h[2], h[3]
    g = grad + wd * theta if wd != 0 else grad
    if momentum != 0:
        buf = state[0]
        if t == 1:
            buf[:] = g
        else:
            buf *= momentum
            buf += g if dampening == 0 else (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    theta -= lr * g


def adam(theta, state, grad, h, lr, t) -> None:
    """``torch.optim.Adam`` (``decoupled``: ``AdamW``), amsgrad included."""
    beta1, beta2, eps, wd, amsgrad, decoupled = h[0], h[1], h[2], h[3], h[4], h[5]
    g = grad
    if wd != 0:
        if decoupled:
            theta *= 1 - lr * wd
        else:
            g = grad + wd * theta
    exp_avg, exp_avg_sq = state[0], state[1]
    exp_avg[:] = lerp(exp_avg, g, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g
    bias_correction1 = 1 - beta1**t
    bias_correction2_sqrt = (1 - beta2**t) ** 0.5
    if amsgrad:
        np.maximum(state[2], exp_avg_sq, out=state[2])
        second = state[2]
    else:
        second = exp_avg_sq
    denom = np.sqrt(second) / bias_correction2_sqrt + eps
    theta -= (lr / bias_correction1) * (exp_avg / denom)


def rmsprop(theta, state, grad, h, lr, t) -> None:
    """``torch.optim.RMSprop``, centered and momentum variants included."""
    alpha, eps, wd, momentum, centered = h[0], h[1], h[2], h[3], h[4]
    g = grad + wd * theta if wd != 0 else grad
    square_avg = state[0]
    square_avg *= alpha
    square_avg += (1 - alpha) * g * g
    if centered:
        grad_avg = state[1]
        grad_avg[:] = lerp(grad_avg, g, 1 - alpha)
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    if momentum > 0:
        buf = state[1 + int(centered)]
        buf *= momentum
        buf += g / avg
        theta -= lr * buf
    else:
        theta -= lr * (g / avg)


def adagrad(theta, state, grad, h, lr, t) -> None:
    """``torch.optim.Adagrad``: ``clr = lr / (1 + (t - 1) * lr_decay)``."""
    lr_decay, wd, eps = h[0], h[1], h[2]
    g = grad + wd * theta if wd != 0 else grad
    clr = lr / (1 + (t - 1) * lr_decay)
    state[0] += g * g
    theta -= clr * (g / (np.sqrt(state[0]) + eps))


UPDATES = {OPTIMIZER_CODES["sgd"]: sgd, OPTIMIZER_CODES["adam"]: adam,
           OPTIMIZER_CODES["rmsprop"]: rmsprop, OPTIMIZER_CODES["adagrad"]: adagrad}


def update(code: int, theta, state, grad, h, lr: float, t: int) -> None:
    """Apply optimizer ``code``'s step ``t`` (1-based) in place."""
    # Python floats, not NumPy float64 scalars: a float64 scalar would promote a float32
    # update to float64 (NEP 50), where PyTorch and the kernels stay in the dtype
    UPDATES[code](theta, state, grad, [float(v) for v in h], float(lr), int(t))
