"""Find backends by name, import them lazily, and say why one is unavailable.

A backend is a module of this package with a class implementing ``base.Backend``; adding
one is its own file (plus its kernels) and one entry in :data:`_BACKENDS` (module, class,
required packages, an optional check that says why it cannot run here).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class _Entry:
    module: str
    cls: str
    requires: tuple[str, ...]
    check: Callable[[], str | None] | None = None


def _cuda_reason() -> str | None:
    """Why Numba-CUDA cannot run here (None when it can). Fast and silent without CUDA."""
    if importlib.util.find_spec("numba_cuda") is None:
        return ("numba-cuda is not installed; pip install 'numba-cuda[cu13]' (or the "
                "'cuda' extra) to use 'numba-cuda'")
    import numba  # reads NUMBA_ENABLE_CUDASIM once, at its first import

    if numba.config.ENABLE_CUDASIM or os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        if os.environ.get("FASTGD_ALLOW_CUDASIM", "0") == "1":
            return None
        return ("CUDA simulator is on: not a real GPU; set FASTGD_ALLOW_CUDASIM=1 to use it "
                "for testing")
    try:
        from numba import cuda

        if not cuda.is_available():
            return "no CUDA driver or GPU found (numba.cuda.is_available() is False)"
        if len(cuda.gpus) == 0:
            return "no CUDA GPU found"
    except Exception as exc:  # any driver failure means "unavailable"
        return f"CUDA is not usable: {type(exc).__name__}: {exc}"
    return None


def _cupy_reason() -> str | None:
    """Why the CuPy backend cannot run here (None when it can). Fast and silent without CUDA:
    ``import cupy`` works without a GPU, the first driver call is what fails."""
    if importlib.util.find_spec("cupy") is None:
        return ("cupy is not installed; pip install cupy-cuda13x (or the 'cuda' extra) to use "
                "'cupy'")
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return "CUDA simulator is on: CuPy needs a real GPU"
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device, broken install: all mean "unavailable"
        return f"no CUDA driver or GPU found ({type(exc).__name__}: {exc})"
    if count < 1:
        return "no CUDA driver or GPU found (cupy.cuda.runtime.getDeviceCount() is 0)"
    return None


_BACKENDS = {
    "numpy": _Entry("fastgd.backends.numpy_backend", "NumpyBackend", ("numpy",)),
    "numba-cpu": _Entry("fastgd.backends.numba_cpu", "NumbaCpuBackend", ("numba",)),
    "numba-cuda": _Entry("fastgd.backends.numba_cuda", "NumbaCudaBackend", ("numba",),
                         _cuda_reason),
    "cupy": _Entry("fastgd.backends.cupy_backend", "CupyBackend", ("numpy",), _cupy_reason),
}


def names() -> list[str]:
    """Every backend fastgd knows, available here or not."""
    return list(_BACKENDS)


def _unavailable_reason(name: str) -> str | None:
    for pkg in _BACKENDS[name].requires:
        try:
            importlib.import_module(pkg)
        except ImportError as exc:
            return f"package {pkg!r} is not importable ({exc}); install it to use {name!r}"
    check = _BACKENDS[name].check
    return check() if check is not None else None


def describe() -> dict[str, str | None]:
    """``{name: None if usable here else the reason why not}``."""
    return {name: _unavailable_reason(name) for name in _BACKENDS}


def available() -> list[str]:
    """Names of the backends usable on this machine."""
    return [name for name, reason in describe().items() if reason is None]


def create(name: str):
    """A fresh backend instance by name (clear errors for unknown or unavailable names);
    it implements :class:`fastgd.backends.base.Backend`."""
    if not isinstance(name, str) or name not in _BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, _BACKENDS))}; got {name!r}")
    reason = _unavailable_reason(name)
    if reason is not None:
        raise RuntimeError(f"backend {name!r} is unavailable: {reason}")
    entry = _BACKENDS[name]
    return getattr(importlib.import_module(entry.module), entry.cls)()
