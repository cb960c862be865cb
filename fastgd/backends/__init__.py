"""Backends: one module each, found by name through the registry; the interface they
implement is :class:`Backend` (``base.py``)."""

from .base import Backend, BaseBackend
from .registry import available, create, describe, names

__all__ = ["Backend", "BaseBackend", "available", "create", "describe", "names"]
