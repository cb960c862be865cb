"""The one backend test matrix: models x losses x activations x modes x optimizers, declared
once and parametrized over every backend (``tests/test_kernels_cpu.py`` for numba-cpu,
``tests/cudasim/test_numba_cuda.py`` under the CUDA simulator, ``tests/test_cupy_backend.py``
on a GPU). Every case trains the same problem on the NumPy reference and on the backend and
compares parameters and per-epoch losses (``backend_check.assert_same``).

Imports fastgd (hence numba) only inside :func:`check`, so the simulator's conftest can set
``NUMBA_ENABLE_CUDASIM`` before numba is imported.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from backend_check import assert_same, fit_both, make_problem

# (sizes, loss, activation): linear (single- and multi-output), logistic, softmax, MLPs of
# 1-3 hidden layers with every activation, wide layers (n_out >= 16) and narrow ones
MODELS = [
    ((7, 1), "mse", "relu"),
    ((7, 3), "mse", "relu"),
    ((7, 1), "logistic", "relu"),
    ((7, 4), "softmax", "relu"),
    ((7, 9, 4), "softmax", "relu"),
    ((7, 9, 4), "softmax", "tanh"),
    ((7, 9, 5, 1), "mse", "sigmoid"),
    ((7, 6, 5, 4, 2), "logistic", "tanh"),
    ((7, 20, 17, 3), "softmax", "relu"),
    ((5, 16, 18), "mse", "sigmoid"),
]
# batch 4 on 61 rows ends on a one-row step (the rank-1 path inside a batch epoch)
MODES = [("sgd", None), ("mbgd", 4), ("mbgd", 8), ("mbgd", 61), ("bgd", None)]
# name -> constructor arguments (optimizers are built lazily: fastgd imports numba)
OPTIMIZERS = {
    "sgd": ("SGD", dict(lr=0.05)),
    "sgd-nesterov-wd": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "sgd-dampening": ("SGD", dict(lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.1)),
    "adam": ("Adam", dict(lr=0.01)),
    "adam-amsgrad-wd": ("Adam", dict(lr=0.01, weight_decay=0.05, amsgrad=True)),
    "adamw": ("AdamW", dict(lr=0.01, betas=(0.3, 0.9))),
    "rmsprop-centered-momentum": ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
    "rmsprop-wd": ("RMSprop", dict(lr=0.01, weight_decay=0.01)),
    "adagrad": ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
}
# the optimizer sweep runs on these models and modes (the rank-1 path, the tile path, the
# multi-output linear path and an MLP with wide and narrow layers)
OPTIMIZER_MODELS = [MODELS[0], MODELS[1], MODELS[3], MODELS[8]]
OPTIMIZER_MODES = [("sgd", None), ("mbgd", 8), ("bgd", None)]


class Case(NamedTuple):
    """One cell of the matrix."""

    sizes: tuple
    loss: str
    activation: str
    mode: str
    batch_size: int | None
    optimizer: str
    dtype: str

    @property
    def id(self) -> str:
        """A readable pytest id."""
        shape = "-".join(map(str, self.sizes))
        return (f"{shape}-{self.loss}-{self.activation}-{self.mode}{self.batch_size or ''}-"
                f"{self.optimizer}-{self.dtype}")


# the optimizers also swept in float32 (each optimizer and number of state rows is a Numba
# CPU driver of its own per dtype, compiled in about 15 s: the float32 sweep is kept to one
# per kind of update; tests/test_torch.py checks three more in float32 against PyTorch).
# Not centered RMSprop: its sqrt(E[g^2] - E[g]^2) amplifies the float32 rounding of a
# different summation order past the float32 tolerance (seen: 3.5e-4 relative on one of
# 140 parameters); it is checked in float64.
FLOAT32_OPTIMIZERS = ("sgd-nesterov-wd", "adam-amsgrad-wd", "rmsprop-wd")
# RMSprop divides each gradient by the root of its own running square: where a gradient is
# near zero, a float32 rounding of another summation order moves the step by a relative
# amount of the same size as the gradient's (seen: 3.7e-4 relative on one of 340
# parameters of a 7-20-17-3 MLP, BGD); float64 checks it at 1e-10.
FLOAT32_TOL = {"rmsprop-wd": dict(rtol=1e-3, atol=1e-4)}


def cases(models=MODELS, modes=MODES, optimizer_models=OPTIMIZER_MODELS,
          optimizer_modes=OPTIMIZER_MODES, dtypes=("float64", "float32")) -> list[Case]:
    """Every model x mode x dtype with SGD (Nesterov, weight decay), then every optimizer x
    the optimizer models x modes, in float64 (and float32 for :data:`FLOAT32_OPTIMIZERS`).
    A backend may pass smaller lists (the simulator runs one Python thread per CUDA
    thread)."""
    out = [Case(*m, mode, bs, "sgd-nesterov-wd", dt)
           for m in models for mode, bs in modes for dt in dtypes]
    out += [Case(*m, mode, bs, opt, dt) for opt in OPTIMIZERS if opt != "sgd-nesterov-wd"
            for m in optimizer_models for mode, bs in optimizer_modes for dt in dtypes
            if dt == "float64" or opt in FLOAT32_OPTIMIZERS]
    return out


def optimizer(name: str):
    """The fastgd optimizer object of a matrix name."""
    import fastgd as fg

    cls, kwargs = OPTIMIZERS[name]
    return getattr(fg, cls)(**kwargs)


def check(case: Case, backend: str, n: int = 61, epochs: int = 2, shuffle: bool | str = True,
          tol=None) -> None:
    """Train ``case`` on the reference and on ``backend`` (fresh random data and seed) and
    assert they agree."""
    import fastgd as fg

    model = fg.Model(case.sizes, loss=case.loss, activation=case.activation)
    rows = n // 2 if case.mode == "sgd" else n
    X, y = make_problem(case.sizes, case.loss, rows, case.dtype)
    seed = int(np.random.default_rng().integers(1000))
    kw = dict(mode=case.mode, batch_size=case.batch_size, epochs=epochs, shuffle=shuffle,
              seed=seed, dtype=case.dtype, optimizer=optimizer(case.optimizer))
    ref, got = fit_both(model, X, y, backend, **kw)
    assert got.optimizer_state_bytes == ref.optimizer_state_bytes
    if tol is None and case.dtype == "float32":
        tol = FLOAT32_TOL.get(case.optimizer)
    assert_same(ref, got, case.dtype, tol)
