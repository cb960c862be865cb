"""One measured ``fit`` next to its estimate: :func:`measure_fit` and its :class:`MemoryReport`."""

from __future__ import annotations

import gc
import inspect
from dataclasses import asdict, dataclass

import numpy as np

from .device import device_peak
from .estimate import MemoryEstimate, estimate_memory
from .host import HostPeak

__all__ = ["MemoryReport", "measure_fit"]


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
    from ..fit import fit

    params = inspect.signature(fit).parameters
    unknown = set(fit_kwargs) - set(params)
    if unknown:
        raise TypeError(f"fit() got unexpected keyword argument(s) {sorted(unknown)}")
    args = {k: p.default for k, p in params.items()
            if p.default is not inspect.Parameter.empty and k not in ("model", "X", "y")}
    args.update(fit_kwargs)
    return args


def _warm_up(model, X, y, fit_kwargs: dict) -> None:
    """One short fit on a few rows, so compilation (traced by tracemalloc, ~200 MB) and
    first-use imports happen before the measured run. It takes at least one batch of rows:
    the kernels a backend compiles can depend on the batch size (``numba-cpu`` splits a
    large step into row groups with another driver)."""
    from ..fit import DivergenceError, fit
    from ..validate import warm_up_checks

    kw = _fit_arguments(fit_kwargs)
    warm_up_checks(X, y, kw["dtype"])
    batch = len(X) if kw["mode"] == "bgd" else kw["batch_size"] or 1
    rows = min(len(X), max(64, batch))
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
    on one batch of rows (at least 64) outside the measurement, so Numba compilation is not
    measured (under tracemalloc it is both slow and about 200 MB of traced allocations).
    ``trace``/``rss`` are :class:`HostPeak`'s options.
    """
    from ..fit import prepare

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
