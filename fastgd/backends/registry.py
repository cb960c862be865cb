"""Find backends by name, import them lazily, and say why one is unavailable."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class _Entry:
    module: str
    cls: str
    requires: tuple[str, ...]


_BACKENDS = {
    "numpy": _Entry("fastgd.backends.numpy_backend", "NumpyBackend", ("numpy",)),
    "numba-cpu": _Entry("fastgd.backends.numba_cpu", "NumbaCpuBackend", ("numba",)),
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
    return None


def describe() -> dict[str, str | None]:
    """``{name: None if usable here else the reason why not}``."""
    return {name: _unavailable_reason(name) for name in _BACKENDS}


def available() -> list[str]:
    """Names of the backends usable on this machine."""
    return [name for name, reason in describe().items() if reason is None]


def create(name: str):
    """A fresh backend instance by name (clear errors for unknown or unavailable names)."""
    if not isinstance(name, str) or name not in _BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, _BACKENDS))}; got {name!r}")
    reason = _unavailable_reason(name)
    if reason is not None:
        raise RuntimeError(f"backend {name!r} is unavailable: {reason}")
    entry = _BACKENDS[name]
    return getattr(importlib.import_module(entry.module), entry.cls)()
