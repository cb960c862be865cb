"""Backends: one module each, found by name through the registry."""

from .registry import available, create, describe, names

__all__ = ["available", "create", "describe", "names"]
