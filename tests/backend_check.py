"""Checking a backend against the NumPy reference: the problems, tolerances and asserts
every backend test shares (CPU, CUDA simulator, CuPy on a GPU).

Imports fastgd (hence numba) only when a check runs, so ``tests/cudasim`` can still set
``NUMBA_ENABLE_CUDASIM`` in its conftest before numba is imported.
"""

from __future__ import annotations

import numpy as np

# Same math, different summation order: float32 within a few ulps of the accumulated sums.
TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=2e-4, atol=2e-5)}


def make_problem(sizes, loss, n, dtype=np.float64, seed=None):
    """Random X and targets for ``sizes``/``loss`` in the user format fastgd.fit accepts."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    k = sizes[-1]
    if loss == "mse":
        y = rng.standard_normal((n, k) if k > 1 else n).astype(dtype)
    elif loss == "logistic":
        y = (rng.random((n, k) if k > 1 else n) > 0.5).astype(dtype)
    else:
        y = rng.integers(0, k, n)
    return X, y


def fit_both(model, X, y, backend, **kw):
    """The same fit on the reference (``numpy``) and on ``backend``."""
    import fastgd as fg

    return (fg.fit(model, X, y, backend="numpy", **kw),
            fg.fit(model, X, y, backend=backend, **kw))


def assert_same(ref, got, dtype, tol=None):
    """Parameters and per-epoch losses of ``got`` match the reference run ``ref``."""
    tol = tol or TOL[str(np.dtype(dtype))]
    for a, b in zip(ref.params, got.params, strict=True):
        assert a.dtype == b.dtype == np.dtype(dtype)
        np.testing.assert_allclose(b, a, **tol)
    np.testing.assert_allclose([r.train_loss for r in got.history],
                               [r.train_loss for r in ref.history], **tol)
