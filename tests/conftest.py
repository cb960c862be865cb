"""Shared fixtures: fresh random problems for every model kind."""

from __future__ import annotations

import numpy as np
import pytest


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


@pytest.fixture
def rng():
    """A fresh generator, different on every run (never test on one fixed draw only)."""
    return np.random.default_rng()
