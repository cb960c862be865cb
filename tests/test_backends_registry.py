"""The backend registry: names, availability and the reasons given for unavailable ones."""

from __future__ import annotations

import importlib.util

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
