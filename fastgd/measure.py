"""Memory measurement and the analytic memory model (the study layer).

Measured
--------
- :class:`HostPeak` (a context manager): for the code inside it, the peak of the bytes
  traced by :mod:`tracemalloc` above the level at entry (every NumPy buffer, including
  ``np.empty`` inside ``@njit`` code, and Python objects), and the growth of the resident
  set's high-water mark above the RSS at entry (which also sees what tracemalloc cannot:
  C/Fortran allocations, thread stacks, JIT code). ``rss_method`` says how RSS was read,
  one of :data:`RSS_METHODS`.
- :func:`device_peak`: peak device bytes of a backend that has a ``memory()`` method (GPU
  backends); ``None`` for CPU backends.

Predicted
---------
:func:`estimate_memory` models what ``fastgd.fit`` (``prepare`` then ``train``) and each
backend really allocate: parameters (the flat ``theta``), gradients, optimizer state (the
momentum buffer, always allocated), activations, the converted data, and the workspace the
predicted peak needs on top. The NumPy model replays, allocation by allocation, what
``kernels/reference.py`` does per step (gathered batch, per-layer activations, backward
temporaries, gradient list, flat gradient, update temporaries), per epoch (the shuffle's
index array, the batch bounds) and per loss evaluation (a forward pass over the whole data
set: for an MLP this, not the step, is usually the peak), including NumPy's in-place reuse
of large temporaries (:data:`NUMPY_ELIDE_BYTES`) and its ufunc buffers. The Numba model
counts the backend's buffers, sized from the constants of the backend and its kernels
(``MAX_GROUPS``, ``TILE``, ``tile_width``, ``RING``). To update a model, edit
:func:`_numpy_model` or :func:`_numba_buffers`; a test prepares the real Numba backend and
checks the model's buffer bytes against what it allocated.

Agreement, measured on this project's 2-core Linux machine (Python 3.11, NumPy 2.4) and
enforced in ``tests/test_measure.py``: the tracemalloc peak of a NumPy or Numba CPU run
(after a warm-up that compiles) is within ``TOLERANCE * total + SLACK_BYTES`` (2 % of the
estimate plus 128 KiB) of the estimate (:func:`within_tolerance`). Over 178 runs (linear,
logistic, softmax, MLPs with relu/tanh/sigmoid; float32/float64; sgd/bgd/mbgd; shuffled or
not; momentum, Nesterov, weight decay; validation sets; data copied or not; 20 000 and
200 000 rows) the measured peak was between 21 KB below and 18 KB above the estimate: at
most 0.03 % off when the 200 000 x 64 data is copied, at most 5 % off for the smallest
totals (0.3 MB), where the fixed slack is what matters. The slack covers Python objects
(history, results, small arrays) and allocator details.

Overhead of ``trace=True``
--------------------------
tracemalloc hooks every Python and NumPy allocation. Measured (200 000 x 64 float32, linear
mse, 3 epochs, best of 3, two sessions on the loaded 2-core machine): the ``numpy`` backend
(Python per step) ran 2.0-2.6x slower traced at batch size 32 (0.97 s vs 0.49 s; 0.86 s vs
0.34 s) and 1.2x at batch size 1024 (0.25 s vs 0.22 s; 0.13 s vs 0.11 s); the ``numba-cpu``
backend (Python once per epoch) 1.00-1.06x (a few milliseconds at most). Numba
*compilation* under tracemalloc is much slower and its allocations are traced (about
200 MB): :func:`measure_fit` warms up first. ``trace=False`` measures RSS only. The RSS
methods cost one write and one read of ``/proc`` files (``clear_refs``) or a thread reading
``/proc/self/statm`` every 5 ms (``sampling``): within the run-to-run noise (+-5 %).
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import os
import sys
import threading
import time
import tracemalloc
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .plan import Plan

__all__ = [
    "NUMPY_ELIDE_BYTES", "RSS_METHODS", "SLACK_BYTES", "TOLERANCE", "DevicePeak", "HostPeak",
    "MemoryEstimate", "MemoryReport", "device_peak", "estimate_memory",
    "largest_batch_that_fits", "measure_fit", "within_tolerance",
]

#: Relative tolerance between the traced peak of a CPU ``fit`` and the estimate's total.
TOLERANCE = 0.02
#: Fixed slack added to the tolerance (Python objects, ufunc buffers, allocator details).
SLACK_BYTES = 128 * 1024

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


# ----------------------------------------------------------------------------- device peak
@runtime_checkable
class DevicePeak(Protocol):
    """What a GPU backend offers: ``memory()`` returns its peak device bytes (an int, or a
    mapping with ``"device_peak_bytes"``), or None when it holds nothing on a device."""

    def memory(self):
        """Peak device bytes since ``prepare`` (or a mapping holding them), or None."""


def device_peak(backend) -> int | None:
    """Peak device bytes of a backend instance through its ``memory()`` method; None for
    CPU backends (no such method, or it returns None) and for backend names."""
    memory = getattr(backend, "memory", None)
    if memory is None:
        return None
    value = memory() if callable(memory) else memory
    if isinstance(value, Mapping):
        value = value.get("device_peak_bytes")
    return None if value is None else int(value)


# ----------------------------------------------------------------------------- the estimate
@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak host (CPU backends) bytes of a ``fit``, split by what holds them.

    ``params``: the backend's flat parameter vector;
    ``grads``: gradient buffers (per-group partial gradients, or the per-step gradient
    arrays and update temporaries); ``optimizer_state``: the momentum buffer;
    ``activations``: activation buffers of a training step (batch x layer widths for the
    ``numpy`` backend, one row per group for ``numba-cpu``); ``data``: X and Y (and the
    validation set) converted to the compute dtype when ``fit`` copies them, else 0;
    ``workspace``: what the peak needs on top of the rest (the epoch's index array, the
    full-data loss pass, parameter copies while preparing or returning, small scratch).
    ``total`` is their sum, the predicted peak; ``peak_phase`` names where it happens:
    ``"prepare"`` (validation, buffers, warm-up), ``"step"``, ``"shuffle"`` (the epoch's
    permutation), ``"loss"`` (the full-data loss after each epoch) or ``"end"``.
    """

    params: int
    grads: int
    optimizer_state: int
    activations: int
    data: int
    workspace: int
    total: int = field(init=False)
    backend: str = ""
    peak_phase: str = ""

    def __post_init__(self):
        object.__setattr__(self, "total", self.params + self.grads + self.optimizer_state
                           + self.activations + self.data + self.workspace)

    def to_dict(self) -> dict:
        """Plain-Python dict of every field."""
        return asdict(self)


#: NumPy reuses a temporary operand in place (``(a - b) ** 2`` allocates once) when it holds
#: at least this many bytes (``NPY_MIN_ELIDE_BYTES``; needs a glibc/macOS build, as in the
#: wheels). The NumPy model follows it; ``None`` models a NumPy that never elides.
NUMPY_ELIDE_BYTES: int | None = 256 * 1024


class _Live:
    """Replays allocations: running total of live bytes and its high-water mark."""

    def __init__(self):
        self.live = self.peak = 0

    def alloc(self, *sizes: int) -> None:
        for s in sizes:
            self.live += s
            self.peak = max(self.peak, self.live)

    def free(self, *sizes: int) -> None:
        for s in sizes:
            self.live -= s

    def buffer(self, elements: int, itemsize: int) -> None:
        """A ufunc's iteration buffer (``np.getbufsize()`` elements), allocated and freed when
        an operand is cast or broadcast along an inner axis."""
        nbytes = min(elements, np.getbufsize()) * itemsize
        self.alloc(nbytes)
        self.free(nbytes)

    def reuse(self, nbytes: int) -> None:
        """An operator whose result replaces a temporary of ``nbytes``: in place when NumPy
        elides it, else a new array and then the temporary is freed."""
        if NUMPY_ELIDE_BYTES is None or nbytes < NUMPY_ELIDE_BYTES:
            self.alloc(nbytes)
            self.free(nbytes)


def _sigmoid(t: _Live, m: int, isz: int) -> int:
    """``reference.sigmoid`` of ``m`` values: returns the bytes of its result (left live)."""
    a = m * isz
    t.alloc(a)                         # abs
    t.reuse(a)                         # -abs
    t.alloc(a)                         # e = exp(...)
    t.free(a)
    t.alloc(m)                         # z >= 0 (bool)
    for _ in range(2):                 # 1/(1+e), e/(1+e): a temporary and a result each
        t.alloc(a, a)
        t.free(a)
    t.alloc(a)                         # np.where output
    t.free(a, a, m, a)                 # both branches, the mask, e
    return a


def _forward(t: _Live, rows: int, sizes, activation: str, isz: int) -> list[int]:
    """``reference.forward`` on ``rows`` rows (input not counted): bytes left in ``acts``."""
    acts, z_local = [], 0
    last = len(sizes) - 2
    for layer, n_out in enumerate(sizes[1:]):
        m = rows * n_out * isz
        t.alloc(m, m)                  # a @ W, + b (never elided: b is broadcast)
        if n_out > 1:
            t.buffer(rows * n_out, isz)
        t.free(m)
        t.free(z_local)                # the previous layer's z, on rebinding
        if layer == last:
            acts.append(m)             # the logits are z itself
        elif activation == "sigmoid":
            acts.append(_sigmoid(t, rows * n_out, isz))
            z_local = m
        else:
            t.alloc(m)                 # maximum / tanh output
            acts.append(m)
            z_local = m
    return acts


def _loss_value(t: _Live, rows: int, k: int, loss: str, isz: int) -> None:
    """``reference.loss_value``: float64 temporaries, all freed (``Y`` of ``isz`` bytes)."""
    z, r = rows * k * 8, rows * 8
    t.alloc(z)                         # Z.astype(float64)
    if loss == "mse":
        t.alloc(z)                     # z - Y
        if isz != 8:
            t.buffer(rows * k, 8)      # Y cast to float64
        t.reuse(z)                     # ** 2
        t.free(z)
    elif loss == "logistic":
        t.alloc(z, z)                  # max(z, 0), z * Y
        if isz != 8:
            t.buffer(rows * k, 8)      # Y cast to float64
        t.reuse(z)                     # their difference c
        t.free(z)
        t.alloc(z)                     # abs
        t.reuse(z)                     # neg
        t.alloc(z)                     # exp
        t.free(z)
        t.alloc(z)                     # log1p
        t.free(z)
        t.reuse(z)                     # c + log1p(...)
        t.free(z, z)
    else:
        t.alloc(r, z)                  # zmax, z - zmax
        t.buffer(rows * k, 8)
        t.alloc(z)                     # exp
        t.free(z)
        t.alloc(r)                     # row sums
        t.free(z)
        t.alloc(r)                     # log
        t.free(r)
        t.reuse(r)                     # lse = zmax[:, 0] + log
        t.alloc(r, r, r)               # arange, class ids, gathered logits
        t.free(r, r)
        t.alloc(r)                     # lse - gathered
        t.free(r, r, r, r)             # gathered, difference, lse, zmax
    t.free(z)


def _loss_grad(t: _Live, rows: int, k: int, loss: str, isz: int) -> int:
    """``reference.loss_grad``: returns the bytes of dz (left live)."""
    m, r = rows * k * isz, rows * isz
    if loss == "softmax":
        t.alloc(r, m)                  # row max, Z - max
        t.buffer(rows * k, isz)
        t.free(r)
        t.alloc(m)                     # e
        t.free(m)
        t.alloc(r, m)                  # sums, p = e / sums
        t.buffer(rows * k, isz)
        t.free(r)
        t.alloc(rows * 8, rows * 8, r)  # p[arange, ids] -= 1
        t.free(rows * 8, rows * 8, r)
        t.alloc(m, m)                  # p / rows, astype
        t.free(m, m, m)                # the quotient, e, p
        return m
    if loss == "logistic":
        _sigmoid(t, rows * k, isz)     # s = sigmoid(Z)
    else:
        t.alloc(m)                     # Z - Y
    t.reuse(m)                         # s - Y, or 2 * (Z - Y)
    if loss == "mse":
        t.reuse(m)                     # / (rows * cols)
    t.alloc(m)                         # astype (a copy)
    t.free(m)
    return m


def _numpy_activations(plan: Plan, rows: int) -> int:
    """Peak bytes of the activation side of one reference step on ``rows`` rows: the
    gathered batch, forward activations, dz and the backward temporaries (linear in rows,
    up to NumPy's temporary elision)."""
    sizes, isz = plan.sizes, plan.dtype.itemsize
    k_y = 1 if plan.loss == "softmax" else sizes[-1]
    t = _Live()
    t.alloc(rows * sizes[0] * isz, rows * k_y * isz)  # X[idx], Y[idx]
    acts = _forward(t, rows, sizes, plan.activation, isz)
    dz = _loss_grad(t, rows, sizes[-1], plan.loss, isz)
    for layer in range(len(sizes) - 2, 0, -1):
        m = rows * sizes[layer] * isz
        t.alloc(m)                     # dz @ W.T
        if plan.activation == "relu":
            t.alloc(rows * sizes[layer], m)  # a > 0, astype
            t.free(rows * sizes[layer])
        elif plan.activation == "tanh":
            t.alloc(m, m)              # a * a, 1 - a * a
            t.free(m)
        else:
            t.alloc(m)                 # 1 - a
            t.reuse(m)                 # a * (1 - a)
        t.reuse(m)                     # (dz @ W.T) * derivative: the new dz
        t.free(m, dz)
        dz = m
    t.free(dz, *acts)
    return t.peak


def _numpy_grads(plan: Plan) -> int:
    """Peak bytes of gradient arrays in a reference step: the previous step's flat gradient,
    the per-layer gradient list and its concatenation, then the SGD update temporaries."""
    p = plan.n_params * plan.dtype.itemsize
    t = _Live()
    t.alloc(p, p, p)                   # previous grad, gradient list, flatten
    t.free(p, p)
    if plan.weight_decay != 0:
        t.alloc(p)                     # wd * theta
        t.reuse(p)                     # g = grad + wd * theta
    if plan.momentum != 0 and plan.nesterov:
        t.alloc(p)                     # momentum * mom
        t.reuse(p)                     # g + momentum * mom
    t.alloc(p)                         # lr * g
    return t.peak


def _numpy_loss_pass(plan: Plan, rows: int) -> int:
    """Peak bytes of ``reference.dataset_loss`` over ``rows`` rows (the data not counted)."""
    if rows <= 0:
        return 0
    t = _Live()
    acts = _forward(t, rows, plan.sizes, plan.activation, plan.dtype.itemsize)
    t.free(*acts[:-1])                 # only the logits survive forward(...)[-1]
    _loss_value(t, rows, plan.sizes[-1], plan.loss, plan.dtype.itemsize)
    return t.peak


def _permutation_peak(n: int) -> int:
    """Peak bytes of ``permutation(seed, epoch, n)`` (uint64 arrays): in ``mix``, ``x`` and
    each statement's new array (the ``arange`` argument is not kept: Python 3.11+ moves
    arguments into the callee's frame), then the cycle-walk on the expected number of
    out-of-range entries, then ``x``, the mask and the int64 result."""
    t = _Live()
    t.alloc(8 * n, 8 * n)              # x, x ^ k
    t.reuse(8 * n)                     # & mask
    t.free(8 * n, 8 * n)
    bits = max(1, (n - 1).bit_length())
    m = n * ((1 << bits) - n) // (1 << bits)  # expected entries to walk again
    t.alloc(8 * n, n, 8 * m, 8 * m)    # x, out_of_range, x[out_of_range], mix's new array
    t.reuse(8 * m)
    t.free(8 * m, 8 * m)
    t.alloc(8 * n)                     # x.astype(int64)
    return t.peak


#: Python objects of ``reference.batch_bounds`` per step: two list slots, a 2-tuple, two
#: ints (32 bytes each in CPython's allocator).
_BOUNDS_BYTES_PER_STEP = 137
#: CPython keeps up to 2000 freed 2-tuples (56 bytes) on a free list, still counted by
#: tracemalloc after the epoch that made them.
_TUPLE_FREELIST = 2000 * 56


def _fit_phases(p: int) -> dict:
    """Parameter-sized arrays of ``fastgd.fit`` itself on top of the backend's ``theta`` and
    momentum (``p`` bytes each): while preparing, the initial parameters and their flat
    copy; at the end, ``engine.params()`` and the ``result.params`` copies."""
    return {"prepare": 2 * p, "end": 2 * p}


def _numpy_model(plan: Plan, n: int, n_val: int) -> dict:
    """The ``numpy`` backend (``kernels/reference.py`` driven one step at a time)."""
    p = plan.n_params * plan.dtype.itemsize
    activations = _numpy_activations(plan, plan.batch_size)
    grads = _numpy_grads(plan)
    steps = plan.steps_per_epoch(n)
    order = 8 * n + _BOUNDS_BYTES_PER_STEP * steps  # the index array, the batch bounds
    kept = min(56 * steps, _TUPLE_FREELIST)  # after the first epoch
    phases = {"step": order + activations + grads,
              "shuffle": kept + (_permutation_peak(n) if plan.shuffle else order),
              "loss": kept + max(_numpy_loss_pass(plan, n), _numpy_loss_pass(plan, n_val)),
              **{k: kept + v for k, v in _fit_phases(p).items()}}
    phase = max(phases, key=phases.get)
    return {"params": p, "grads": grads, "optimizer_state": p,
            "activations": activations,
            "workspace": max(order, phases[phase] - activations - grads), "peak_phase": phase}


def _backend_attr(mod, name: str):
    """``name`` from the backend module, else from a ``fastgd`` module it imported (its
    kernels), else None."""
    if mod is None:
        return None
    if hasattr(mod, name):
        return getattr(mod, name)
    for value in vars(mod).values():
        if (isinstance(value, types.ModuleType) and value.__name__.startswith("fastgd.")
                and hasattr(value, name)):
            return getattr(value, name)
    return None


def _numba_buffers(plan: Plan) -> dict:
    """Bytes of every buffer ``NumbaCpuBackend.prepare`` allocates (data excluded), sized
    from the backend's and its kernels' own constants: ``MAX_GROUPS`` groups, each with
    ``TILE`` scratch rows of ``tile_width(sizes)`` elements (``sum(sizes)`` where the
    kernels define no ``tile_width``), one partial gradient and a look-ahead ring of
    ``RING`` int64. Update here when the backend's buffers change (a test compares this
    with what the backend really allocates)."""
    try:
        from .backends import numba_cpu as mod
    except ImportError:  # Numba missing: the defaults of the kernels as written
        mod = None
    groups = int(_backend_attr(mod, "MAX_GROUPS") or 8)
    tile = int(_backend_attr(mod, "TILE") or 1)
    ring = int(_backend_attr(mod, "RING") or 0)
    tile_width = _backend_attr(mod, "tile_width")
    width = int(tile_width(plan.sizes)) if callable(tile_width) else sum(plan.sizes)
    isz, p, L = plan.dtype.itemsize, plan.n_params, len(plan.sizes)
    return {"theta": p * isz, "mom": p * isz, "act": groups * tile * width * isz,
            "partial": groups * p * isz, "sums": groups * 8, "ring": groups * ring * 8,
            "layout": 8 * (2 * L + 3 * (L - 1))}  # sizes, act_off; w_off, b_off, wide


def _numba_cpu_model(plan: Plan, n: int, n_val: int) -> dict:
    """The ``numba-cpu`` backend: fixed buffers, no batch- or data-sized temporaries."""
    b = _numba_buffers(plan)
    p = b["theta"]
    phases = _fit_phases(p)
    # warmup() runs on copies of theta and mom (the flat initial copy is gone by then);
    # an MLP's params() transposes back through one more copy
    phases["prepare"] += p
    phases["end"] += p if len(plan.sizes) > 2 else 0
    phase = max(phases, key=phases.get)
    small = b["sums"] + b["ring"] + b["layout"] + 256  # + keys, hyper
    return {"params": p, "grads": b["partial"], "optimizer_state": b["mom"],
            "activations": b["act"], "workspace": small + phases[phase], "peak_phase": phase}


#: Backend name -> model ``(plan, n_samples, n_val) -> dict`` (add GPU backends here).
_MODELS = {"numpy": _numpy_model, "numba-cpu": _numba_cpu_model}


def _copy_flags(copies_data) -> tuple[bool, bool, bool, bool]:
    if isinstance(copies_data, (bool, np.bool_)):
        return (bool(copies_data),) * 4
    flags = tuple(bool(c) for c in copies_data)
    if len(flags) == 2:
        return flags + flags
    if len(flags) == 4:
        return flags
    raise ValueError("copies_data must be a bool or 2 or 4 bools (X, Y[, X_val, Y_val]); "
                     f"got {copies_data!r}")


def estimate_memory(plan: Plan, n_samples: int, n_val: int = 0, backend="numba-cpu",
                    copies_data=False) -> MemoryEstimate:
    """Predicted peak host bytes of ``fastgd.fit`` with ``plan`` on ``n_samples`` rows
    (``n_val`` validation rows) on ``backend`` (a name, or an engine with ``.name``).

    ``copies_data``: whether ``fit`` converts/copies the data (dtype differs from the
    compute dtype, or not C-contiguous): a bool for all arrays, or flags for
    ``(X, Y)`` / ``(X, Y, X_val, Y_val)``. The caller's own arrays are never counted.
    """
    name = getattr(backend, "name", backend)
    if name not in _MODELS:
        raise ValueError(f"no memory model for backend {name!r}; known: {sorted(_MODELS)}")
    n, n_val = int(n_samples), int(n_val)
    if n < 1 or n_val < 0:
        raise ValueError(f"n_samples must be >= 1 and n_val >= 0; got {n_samples}, {n_val}")
    isz = plan.dtype.itemsize
    d, k_y = plan.sizes[0], (1 if plan.loss == "softmax" else plan.sizes[-1])
    cx, cy, cxv, cyv = _copy_flags(copies_data)
    data = isz * (cx * n * d + cy * n * k_y + cxv * n_val * d + cyv * n_val * k_y)
    parts = _MODELS[name](plan, n, n_val)
    return MemoryEstimate(data=data, backend=name, **parts)


def largest_batch_that_fits(plan: Plan, n_samples: int, budget_bytes: int,
                            backend="numba-cpu", n_val: int = 0, copies_data=False) -> int:
    """The largest batch size in ``[1, n_samples]`` whose estimated total fits in
    ``budget_bytes``, or 0 when even batch size 1 does not.

    A bisection over the batch size: the answer never decreases as the budget grows and
    its estimate always fits. (The ``numpy`` estimate can dip by a few hundred KiB where a
    temporary crosses :data:`NUMPY_ELIDE_BYTES`, so near such a dip a slightly larger
    batch may also fit.) ``n_val``/``copies_data`` as in :func:`estimate_memory`."""

    def fits(b: int) -> bool:
        est = estimate_memory(dataclasses.replace(plan, batch_size=b), n_samples, n_val,
                              backend, copies_data)
        return est.total <= budget_bytes

    if not fits(1):
        return 0
    lo, hi = 1, int(n_samples)        # fits(lo) holds; find the last b that fits
    if fits(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def within_tolerance(measured: int, estimate: MemoryEstimate | int,
                     rel: float = TOLERANCE, slack: int = SLACK_BYTES) -> bool:
    """True when ``|measured - estimate| <= rel * estimate + slack`` (the stated agreement of
    a traced CPU peak with :func:`estimate_memory`)."""
    total = getattr(estimate, "total", estimate)
    return abs(int(measured) - int(total)) <= rel * total + slack


# ----------------------------------------------------------------------------- measure_fit
@dataclass
class MemoryReport:
    """Measured peaks of one ``fit`` next to the estimate (bytes; None = not measured)."""

    traced_peak_bytes: int | None
    rss_peak_bytes: int | None
    rss_method: str
    device_peak_bytes: int | None
    estimate: MemoryEstimate

    @property
    def relative_error(self) -> float | None:
        """``(traced - estimated) / estimated``, None without a traced peak."""
        if self.traced_peak_bytes is None:
            return None
        return (self.traced_peak_bytes - self.estimate.total) / self.estimate.total

    def to_dict(self) -> dict:
        """Plain-Python dict; the estimate nested under ``"estimate"``."""
        d = asdict(self)
        d["estimate"] = self.estimate.to_dict()
        d["relative_error"] = self.relative_error
        return d


def _converted(a, dtype: np.dtype) -> bool:
    """Whether fastgd's validation copies ``a`` (the rule of ``validate.check_features``:
    ``np.ascontiguousarray(a, dtype)`` copies unless ``a`` is already a C-contiguous
    ndarray of the compute dtype)."""
    return not (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous)


def _fit_arguments(fit_kwargs: dict) -> dict:
    """``fit``'s keyword arguments with its own defaults filled in."""
    from .fit import fit

    params = inspect.signature(fit).parameters
    unknown = set(fit_kwargs) - set(params)
    if unknown:
        raise TypeError(f"fit() got unexpected keyword argument(s) {sorted(unknown)}")
    args = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    args.update(fit_kwargs)
    return args


def _warm_up(model, X, y, fit_kwargs: dict) -> None:
    """One short fit on a few rows, so compilation (traced by tracemalloc, ~200 MB) and
    first-use imports happen before the measured run."""
    from .fit import DivergenceError, fit

    kw = _fit_arguments(fit_kwargs)
    rows = min(len(X), 64)
    warm = dict(kw, epochs=1)
    if kw["mode"] == "bgd":
        warm["batch_size"] = None
    elif kw["mode"] == "mbgd" and kw["batch_size"] is not None:
        warm["batch_size"] = min(kw["batch_size"], rows)
    if kw["X_val"] is not None and kw["y_val"] is not None:
        warm["X_val"], warm["y_val"] = kw["X_val"][:rows], kw["y_val"][:rows]
    try:
        fit(model, X[:rows], y[:rows], **warm)
    except DivergenceError:
        pass


def measure_fit(model, X, y, *, warmup: bool = True, trace: bool = True,
                rss: str | bool | None = "auto", **fit_kwargs):
    """Train like ``fastgd.fit(model, X, y, **fit_kwargs)`` inside :class:`HostPeak` and
    return ``(FitResult, MemoryReport)``: measured host (and device) peaks next to
    :func:`estimate_memory` for the same run.

    The run is ``fastgd.prepare(...).train()``, which is what ``fit`` does, so the Plan
    and the engine (for :func:`device_peak`) are at hand. ``warmup`` first fits one epoch
    on 64 rows outside the measurement, so Numba compilation is not measured (under
    tracemalloc it is both slow and about 200 MB of traced allocations).
    ``trace``/``rss`` are :class:`HostPeak`'s options.
    """
    from .fit import prepare

    if warmup:
        _warm_up(model, X, y, fit_kwargs)
    gc.collect()
    with HostPeak(trace=trace, rss=rss) as peak:
        run = prepare(model, X, y, **fit_kwargs)
        result = run.train()
    dt = run.plan.dtype
    X_val, y_val = fit_kwargs.get("X_val"), fit_kwargs.get("y_val")
    flags = (_converted(X, dt), _converted(y, dt),
             X_val is not None and _converted(X_val, dt),
             y_val is not None and _converted(y_val, dt))
    n_val = 0 if run.val is None else len(run.val[0])
    estimate = estimate_memory(run.plan, len(run.X), n_val, run.backend, flags)
    report = MemoryReport(traced_peak_bytes=peak.traced_peak_bytes,
                          rss_peak_bytes=peak.rss_peak_bytes, rss_method=peak.rss_method,
                          device_peak_bytes=device_peak(run.engine), estimate=estimate)
    return result, report
