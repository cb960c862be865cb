"""Memory measurement and the analytic memory model (the study layer), one job a module.

- :mod:`.host`: :class:`HostPeak`, the measured host peak (tracemalloc and the resident
  set, read by one of :data:`RSS_METHODS`) of the code inside it.
- :mod:`.device`: :func:`device_peak`, the peak device bytes a GPU backend reports
  (:class:`DevicePeak`); None for CPU backends.
- :mod:`.estimate`: :func:`estimate_memory`, the predicted peak of a CPU ``fit`` from what
  each backend states it allocates (``Backend.workspace``), with
  :func:`largest_batch_that_fits` and the stated agreement, :func:`within_tolerance`.
- :mod:`.report`: :func:`measure_fit`, one ``fit`` measured next to its estimate
  (:class:`MemoryReport`).
"""

from ..backends.numpy_backend import NUMPY_ELIDE_BYTES
from .device import DevicePeak, device_peak
from .estimate import (
    SLACK_BYTES,
    TOLERANCE,
    MemoryEstimate,
    estimate_memory,
    largest_batch_that_fits,
    within_tolerance,
)
from .host import RSS_METHODS, HostPeak
from .report import MemoryReport, measure_fit

__all__ = [
    "NUMPY_ELIDE_BYTES", "RSS_METHODS", "SLACK_BYTES", "TOLERANCE", "DevicePeak", "HostPeak",
    "MemoryEstimate", "MemoryReport", "device_peak", "estimate_memory",
    "largest_batch_that_fits", "measure_fit", "within_tolerance",
]
