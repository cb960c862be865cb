"""The CUDA-simulator suite: run it in its own process, apart from the main suite.

    NUMBA_ENABLE_CUDASIM=1 pytest tests/cudasim -p no:cacheprovider

The simulator is switched on here as well, before anything imports numba (numba reads
``NUMBA_ENABLE_CUDASIM`` once, at its first import), and ``FASTGD_ALLOW_CUDASIM=1`` lets the
``numba-cuda`` backend run on it. Without numba-cuda every test module skips with the reason
(``pytest.importorskip`` at its top).
"""

from __future__ import annotations

import os
import sys

import pytest

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
os.environ["FASTGD_ALLOW_CUDASIM"] = "1"

# numba imported before this file (by a plugin) would run on a real GPU or not at all
_NUMBA_TOO_EARLY = "numba" in sys.modules and not sys.modules["numba"].config.ENABLE_CUDASIM



@pytest.fixture(autouse=True)
def _simulator_on():
    """Skip (with the command to use) when numba was imported before the simulator was set."""
    if _NUMBA_TOO_EARLY:
        pytest.skip("numba was imported before NUMBA_ENABLE_CUDASIM=1; run "
                    "'NUMBA_ENABLE_CUDASIM=1 pytest tests/cudasim -p no:cacheprovider'")
