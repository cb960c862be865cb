"""Shared fixtures: fresh random problems for every model kind."""

from __future__ import annotations

import numpy as np
import pytest
from backend_check import make_problem  # noqa: F401 (re-exported for the test modules)


@pytest.fixture
def rng():
    """A fresh generator, different on every run (never test on one fixed draw only)."""
    return np.random.default_rng()
