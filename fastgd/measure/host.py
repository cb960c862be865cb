"""Host memory measurement: :class:`HostPeak`, the peak host bytes of the code inside it.

For the code inside it, :class:`HostPeak` reports the peak of the bytes traced by
:mod:`tracemalloc` above the level at entry (every NumPy buffer, including ``np.empty``
inside ``@njit`` code, and Python objects), and the growth of the resident set's high-water
mark above the RSS at entry (which also sees what tracemalloc cannot: C/Fortran
allocations, thread stacks, JIT code). ``rss_method`` says how RSS was read, one of
:data:`RSS_METHODS`.

Overhead of ``trace=True``
--------------------------
tracemalloc hooks every Python and NumPy allocation. Measured (200 000 x 64 float32, linear
mse, 3 epochs, best of 3, two sessions on the loaded 2-core machine): the ``numpy`` backend
(Python per step) ran 2.0-2.6x slower traced at batch size 32 (0.97 s vs 0.49 s; 0.86 s vs
0.34 s) and 1.2x at batch size 1024 (0.25 s vs 0.22 s; 0.13 s vs 0.11 s); the ``numba-cpu``
backend (Python once per epoch) 1.00-1.06x (a few milliseconds at most). Numba
*compilation* under tracemalloc is much slower and its allocations are traced (about
200 MB): :func:`fastgd.measure.measure_fit` warms up first. ``trace=False`` measures RSS
only. The RSS methods cost one write and one read of ``/proc`` files (``clear_refs``) or a
thread reading ``/proc/self/statm`` every 5 ms (``sampling``): within the run-to-run noise
(+-5 %).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc

__all__ = ["RSS_METHODS", "HostPeak"]

#: How :class:`HostPeak` read the resident set (``rss_method``):
#: ``"clear_refs"`` reset the kernel's high-water mark (``/proc/self/clear_refs``) and read
#: ``VmHWM`` on exit (exact); ``"sampling"`` a thread read ``/proc/self/statm`` every few
#: milliseconds (may miss a peak shorter than the interval); ``"getrusage"`` growth of
#: ``ru_maxrss`` (a lower bound: the process-lifetime maximum cannot be reset, so a run
#: below an earlier peak reads 0); ``"none"`` not measured (``rss_peak_bytes`` is None).
RSS_METHODS = ("clear_refs", "sampling", "getrusage", "none")

_PROC = "/proc/self"
_LOCK = threading.Lock()
_ACTIVE: list[HostPeak] = []  # entered, not yet exited (for nesting)


# ----------------------------------------------------------------------------- /proc helpers
def _page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 4096


def _statm_rss() -> int | None:
    """Current resident set in bytes from /proc/self/statm, None without /proc."""
    try:
        with open(f"{_PROC}/statm", "rb") as f:
            return int(f.read().split()[1]) * _page_size()
    except (OSError, ValueError, IndexError):
        return None


def _status_kib(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes (``VmHWM``, ``VmRSS``), None if absent."""
    try:
        with open(f"{_PROC}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's resident-set high-water mark; False when not permitted."""
    try:
        with open(f"{_PROC}/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def _maxrss() -> int | None:
    """``ru_maxrss`` in bytes (KiB on Linux, bytes on macOS), None without ``resource``."""
    try:
        import resource
    except ImportError:
        return None
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value) if sys.platform == "darwin" else int(value) * 1024


# ----------------------------------------------------------------------------- host peak
class HostPeak:
    """Context manager measuring the host memory peak of the code inside it.

    After exit:

    - ``traced_peak_bytes``: the tracemalloc peak above the traced bytes at entry (None with
      ``trace=False``). tracemalloc is started if it is not running (and then stopped on
      exit); its peak is reset with ``tracemalloc.reset_peak()`` (an enclosing HostPeak is
      compensated, other readers of that peak are not). Overhead: Python-heavy code (the
      ``numpy`` backend, one Python iteration per step) ran 1.2x (batch 1024) to 2.0-2.6x
      (batch 32) slower traced; compiled epochs (``numba-cpu``) 1.00-1.06x (see the module
      docstring).
    - ``rss_peak_bytes``: the resident-set high-water mark above the RSS at entry, read by
      ``rss_method`` (one of :data:`RSS_METHODS`). ``rss="auto"`` picks ``clear_refs`` when
      the kernel allows it, else ``sampling`` when ``/proc`` exists, else ``getrusage``,
      else ``none``; a name forces that method (falling back the same way if it is
      impossible); ``None``/``False`` skips RSS.
    - ``seconds``: wall time inside.

    Both measures are process-wide (other threads' allocations count). Instances nest:
    an inner one resets the global peaks only after passing the outer ones what it would
    erase. RSS can be below the traced peak (untouched ``np.zeros`` pages are not resident)
    or above it (allocator caches, thread stacks, compiled code).
    """

    def __init__(self, trace: bool = True, rss: str | bool | None = "auto",
                 interval_s: float = 0.005):
        """``trace``: measure with tracemalloc; ``rss``: RSS method (see the class doc);
        ``interval_s``: the sampling period of the ``sampling`` method."""
        self.trace = bool(trace)
        self.rss = "none" if rss in (None, False) else ("auto" if rss is True else rss)
        if self.rss not in ("auto", *RSS_METHODS):
            raise ValueError(f"rss must be 'auto', None or one of {RSS_METHODS}; got {rss!r}")
        self.interval_s = float(interval_s)
        self.traced_peak_bytes: int | None = None
        self.rss_peak_bytes: int | None = None
        self.rss_method = "none"
        self.seconds = 0.0
        self._t0 = 0.0
        self._started_tracing = False
        self._trace0 = 0
        self._trace_seen = 0
        self._rss0 = 0
        self._rss_seen = 0
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    # -- nesting: called (under _LOCK) on the outer instances before a reset
    def _absorb(self) -> None:
        if self.trace and tracemalloc.is_tracing():
            self._trace_seen = max(self._trace_seen, tracemalloc.get_traced_memory()[1])
        if self.rss_method == "clear_refs":
            self._rss_seen = max(self._rss_seen, _status_kib("VmHWM") or 0)

    def _pick_rss(self) -> str:
        order = {"auto": RSS_METHODS, "clear_refs": RSS_METHODS, "sampling": RSS_METHODS[1:],
                 "getrusage": RSS_METHODS[2:], "none": ("none",)}[self.rss]
        for method in order:
            if method == "clear_refs" and _reset_hwm():
                return method
            if method == "sampling" and _statm_rss() is not None:
                return method
            if method == "getrusage" and _maxrss() is not None:
                return method
        return "none"

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = _statm_rss()
            if rss is not None and rss > self._rss_seen:
                self._rss_seen = rss

    def __enter__(self) -> HostPeak:
        with _LOCK:
            for outer in _ACTIVE:
                outer._absorb()
            _ACTIVE.append(self)
            if self.trace:
                if not tracemalloc.is_tracing():
                    tracemalloc.start()
                    self._started_tracing = True
                tracemalloc.reset_peak()
                self._trace0 = self._trace_seen = tracemalloc.get_traced_memory()[0]
            self.rss_method = self._pick_rss()  # clear_refs resets VmHWM here
        if self.rss_method == "clear_refs":
            self._rss0 = _status_kib("VmRSS") or _statm_rss() or 0
            self._rss_seen = self._rss0
        elif self.rss_method == "sampling":
            self._rss0 = self._rss_seen = _statm_rss() or 0
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, name="HostPeak-rss",
                                            daemon=True)
            self._thread.start()
        elif self.rss_method == "getrusage":
            self._rss0 = _maxrss() or 0
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> bool:
        self.seconds = time.perf_counter() - self._t0
        if self.rss_method == "clear_refs":
            hwm = max(self._rss_seen, _status_kib("VmHWM") or 0)
            self.rss_peak_bytes = max(0, hwm - self._rss0)
        elif self.rss_method == "sampling":
            self._stop.set()
            self._thread.join()
            final = _statm_rss() or 0
            self.rss_peak_bytes = max(0, max(self._rss_seen, final) - self._rss0)
        elif self.rss_method == "getrusage":
            self.rss_peak_bytes = max(0, (_maxrss() or 0) - self._rss0)
        with _LOCK:
            if self.trace and tracemalloc.is_tracing():
                peak = max(self._trace_seen, tracemalloc.get_traced_memory()[1])
                self.traced_peak_bytes = max(0, peak - self._trace0)
                if self._started_tracing:
                    tracemalloc.stop()
            if self in _ACTIVE:
                _ACTIVE.remove(self)
        return False

    def to_dict(self) -> dict:
        """The measurements as a plain dict."""
        return {"traced_peak_bytes": self.traced_peak_bytes,
                "rss_peak_bytes": self.rss_peak_bytes, "rss_method": self.rss_method,
                "seconds": self.seconds}
