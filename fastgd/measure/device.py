"""Device memory measurement: the peak device bytes a GPU backend reports about itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

__all__ = ["DevicePeak", "device_peak"]


@runtime_checkable
class DevicePeak(Protocol):
    """What a GPU backend offers: ``memory()`` returns its peak device bytes (an int, or a
    mapping with ``"device_peak_bytes"``), or None when it holds nothing on a device."""

    def memory(self):
        """Peak device bytes since ``prepare`` (or a mapping holding them), or None."""


def device_peak(backend) -> int | None:
    """Peak device bytes of a backend instance through ``Backend.memory()`` (every backend
    has it; host backends return None); None for a backend name."""
    if isinstance(backend, str):
        return None
    value = backend.memory()
    if isinstance(value, Mapping):
        value = value.get("device_peak_bytes")
    return None if value is None else int(value)
