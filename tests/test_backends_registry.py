"""The backend registry: names, availability and the reasons given for unavailable ones."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

import fastgd as fg


def _gpu_present() -> bool:
    if importlib.util.find_spec("numba_cuda") is None:
        return False
    from numba import cuda

    return bool(cuda.is_available())


def test_cpu_backends_are_available():
    """numpy and numba-cpu run everywhere; every known name is described."""
    assert {"numpy", "numba-cpu"} <= set(fg.backends.available())
    assert set(fg.backends.describe()) == set(fg.backends.names())
    assert "numba-cuda" in fg.backends.names()


@pytest.mark.skipif(_gpu_present(), reason="a CUDA GPU is present: numba-cuda is usable here")
def test_numba_cuda_unavailable_without_a_gpu():
    """Without a GPU (or without numba-cuda) the reason is a non-empty string."""
    reason = fg.backends.describe()["numba-cuda"]
    assert isinstance(reason, str) and reason.strip()
    assert "numba-cuda" not in fg.backends.available()
    with pytest.raises(RuntimeError, match="numba-cuda"):
        fg.backends.create("numba-cuda")


def test_simulator_needs_an_opt_in(monkeypatch):
    """NUMBA_ENABLE_CUDASIM=1 alone does not make numba-cuda available."""
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    monkeypatch.delenv("FASTGD_ALLOW_CUDASIM", raising=False)
    reason = fg.backends.describe()["numba-cuda"]
    assert reason
    if importlib.util.find_spec("numba_cuda") is not None:
        assert "CUDA simulator is on" in reason


def test_fastgd_works_without_numba():
    """With Numba missing, ``import fastgd`` works and the numpy backend trains."""
    code = textwrap.dedent("""
        import sys
        class NoNumba:
            def find_spec(self, name, path=None, target=None):
                if name == "numba" or name.startswith("numba."):
                    raise ImportError("numba hidden by the test")
        sys.meta_path.insert(0, NoNumba())
        import numpy as np
        import fastgd as fg
        assert fg.backends.available() == ["numpy"], fg.backends.available()
        X = np.random.default_rng(0).standard_normal((40, 3))
        res = fg.fit(fg.Linear(3, 1), X, X.sum(1), backend="numpy", epochs=2)
        # large inputs: the parallel checks need numba; NumPy checks them instead
        big = np.random.default_rng(1).standard_normal((2**18 // 3 + 1, 3))
        fg.fit(fg.Linear(3, 1), big, big.sum(1), backend="numpy", mode="bgd", epochs=1)
        big[5, 1] = np.nan
        try:
            fg.fit(fg.Linear(3, 1), big, big.sum(1), backend="numpy", mode="bgd", epochs=1)
            raise AssertionError("NaN not found")
        except ValueError as exc:
            assert "NaN" in str(exc)
        assert "numba" not in sys.modules
        print("ok", res.history[-1].train_loss)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
