"""fastgd.measure: HostPeak, device_peak, the analytic memory model and measure_fit.

The agreement checked here is the one the module states: the tracemalloc peak of a CPU
``fit`` is within ``TOLERANCE * estimate + SLACK_BYTES`` (2 % + 128 KiB) of
``estimate_memory(...).total``; measured differences were between -21 KB and +18 KB.
"""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

import fastgd as fg
from conftest import make_problem
from fastgd import measure
from fastgd.measure import (
    RSS_METHODS,
    SLACK_BYTES,
    TOLERANCE,
    HostPeak,
    MemoryEstimate,
    MemoryReport,
    device_peak,
    estimate_memory,
    largest_batch_that_fits,
    measure_fit,
    within_tolerance,
)

BACKENDS = ["numpy", "numba-cpu"]
MB50 = 50_000_000


@pytest.fixture(autouse=True)
def _no_tracing_leak():
    """Every test leaves tracemalloc as it found it (stopped)."""
    was = tracemalloc.is_tracing()
    yield
    if tracemalloc.is_tracing() and not was:
        tracemalloc.stop()


def _plan(model, batch_size=32, **kw):
    """A real Plan for ``model`` (built by fg.prepare on a few rows), with ``batch_size``."""
    X, y = make_problem(model.sizes, model.loss, 8)
    plan = fg.prepare(model, X, y, backend="numpy", batch_size=8, **kw).plan
    return dataclasses.replace(plan, batch_size=batch_size)


# ----------------------------------------------------------------------------- HostPeak
def test_host_peak_sees_a_50mb_buffer(rng):
    """A 50 MB array filled inside the block is in the traced peak and in RSS growth."""
    assert not tracemalloc.is_tracing()
    with HostPeak() as peak:
        a = np.empty(MB50 // 8)
        rng.random(out=a)
        del a
    assert not tracemalloc.is_tracing()  # started and stopped by HostPeak
    assert MB50 <= peak.traced_peak_bytes < MB50 + 1_000_000
    assert peak.rss_method in RSS_METHODS
    if peak.rss_method in ("clear_refs", "sampling"):
        assert peak.rss_peak_bytes >= 0.9 * MB50
    assert peak.seconds > 0 and peak.to_dict()["traced_peak_bytes"] == peak.traced_peak_bytes


def test_host_peak_counts_only_what_is_above_entry(rng):
    """Memory held before entry is not counted; a running tracemalloc is left running."""
    held = rng.random(MB50 // 8 // 2)  # 25 MB allocated before
    tracemalloc.start()
    try:
        with HostPeak() as peak:
            b = rng.random(1_000_000)  # 8 MB
            del b
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
    assert 8_000_000 <= peak.traced_peak_bytes < 9_000_000
    assert held.size


def test_host_peak_nested(rng):
    """An inner HostPeak resets the global peaks, but the outer one still sees its own."""
    with HostPeak() as outer:
        a = rng.random(4_000_000)  # 32 MB, freed before the inner block
        del a
        with HostPeak() as inner:
            b = rng.random(1_000_000)  # 8 MB
            del b
    assert outer.traced_peak_bytes >= 32_000_000
    assert 8_000_000 <= inner.traced_peak_bytes < 16_000_000
    if outer.rss_method == "clear_refs":
        assert outer.rss_peak_bytes >= 0.9 * 32_000_000
    assert not tracemalloc.is_tracing()


def test_host_peak_without_trace(rng):
    """trace=False leaves tracemalloc alone and reports no traced peak."""
    with HostPeak(trace=False) as peak:
        assert not tracemalloc.is_tracing()
        a = rng.random(1_000_000)
        del a
    assert peak.traced_peak_bytes is None and peak.rss_method in RSS_METHODS


@pytest.mark.parametrize("method", RSS_METHODS)
def test_host_peak_rss_methods(method, rng):
    """Each forced method is used when possible (or falls back); 'none' measures nothing."""
    with HostPeak(trace=False, rss=method) as peak:
        a = rng.random(2_000_000)
        del a
    assert peak.rss_method in RSS_METHODS
    assert (peak.rss_peak_bytes is None) == (peak.rss_method == "none")
    if method == "none":
        assert peak.rss_method == "none"
    if peak.rss_method == "sampling":
        assert peak.rss_peak_bytes >= 0  # a 16 MB blip may fall between two samples


def test_host_peak_without_proc(monkeypatch, rng):
    """Without /proc (macOS, Windows) RSS falls back to getrusage or nothing, never raises."""
    monkeypatch.setattr(measure, "_PROC", "/nonexistent/proc/self")
    with HostPeak() as peak:
        a = rng.random(1_000_000)
        del a
    assert peak.rss_method in ("getrusage", "none")
    assert peak.traced_peak_bytes >= 8_000_000
    with pytest.raises(ValueError, match="rss must be"):
        HostPeak(rss="psutil")


# ----------------------------------------------------------------------------- device
def test_device_peak():
    """None for CPU backends and names; a backend's memory() otherwise (int or mapping)."""
    assert device_peak("numba-cpu") is None
    assert device_peak(fg.backends.create("numpy")) is None

    class Gpu:
        def __init__(self, value):
            self.value = value

        def memory(self):
            return self.value

    assert device_peak(Gpu(12345)) == 12345
    assert device_peak(Gpu({"device_peak_bytes": 77})) == 77
    assert device_peak(Gpu(None)) is None
    assert isinstance(Gpu(1), measure.DevicePeak)


# ----------------------------------------------------------------------------- estimate
MODELS = [fg.Linear(64), fg.Linear(16, 5, loss="softmax"), fg.MLP([32, 64, 10]),
          fg.MLP([8, 16, 16, 2], activation="sigmoid", loss="logistic")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.sizes}-{m.loss}")
def test_estimate_components(backend, model):
    """Every component is positive, the total is their sum, to_dict has them all."""
    plan = _plan(model, 64, momentum=0.9, nesterov=True, weight_decay=1e-4)
    est = estimate_memory(plan, 10_000, n_val=1000, backend=backend, copies_data=True)
    parts = ["params", "grads", "optimizer_state", "activations", "data", "workspace"]
    assert all(getattr(est, k) > 0 for k in parts)
    assert est.total == sum(getattr(est, k) for k in parts)
    d = est.to_dict()
    assert set(parts) | {"total", "backend", "peak_phase"} <= set(d) and d["backend"] == backend
    isz = plan.dtype.itemsize
    k_y = 1 if model.loss == "softmax" else model.n_outputs
    assert est.data == isz * 11_000 * (model.n_features + k_y)
    assert est.params == est.optimizer_state == model.n_params * isz
    assert estimate_memory(plan, 10_000, backend=backend).data == 0  # caller's arrays reused
    # flags for (X, Y): only Y converted
    assert estimate_memory(plan, 10_000, backend=backend,
                           copies_data=(False, True)).data == isz * 10_000 * k_y


def test_estimate_rejects_unknown_backends():
    """A backend without a model, or bad sizes, raise ValueError naming the problem."""
    plan = _plan(fg.Linear(4))
    with pytest.raises(ValueError, match="no memory model"):
        estimate_memory(plan, 100, backend="cuda")
    with pytest.raises(ValueError, match="n_samples"):
        estimate_memory(plan, 0)
    with pytest.raises(ValueError, match="copies_data"):
        estimate_memory(plan, 10, copies_data=(True, True, True))


def test_numpy_activations_linear_in_batch_size():
    """The numpy backend's activations scale exactly with the batch (below NumPy's
    temporary-elision threshold); the numba backend's do not depend on it."""
    for model in (fg.Linear(64), fg.Linear(64, 3, loss="logistic")):
        act = {b: estimate_memory(_plan(model, b), 50_000, backend="numpy").activations
               for b in (100, 200, 400)}
        assert act[200] == 2 * act[100] and act[400] == 4 * act[100]
    mlp = fg.MLP([64, 128, 10])
    sizes = [estimate_memory(_plan(mlp, b), 50_000, backend="numpy").activations
             for b in (64, 128, 256, 512)]
    assert sizes == sorted(sizes) and sizes[-1] > 6 * sizes[0]
    numba = {estimate_memory(_plan(mlp, b), 50_000, backend="numba-cpu").activations
             for b in (64, 512)}
    assert len(numba) == 1


def test_numba_model_matches_the_backend_buffers(rng):
    """The model's buffer bytes equal what NumbaCpuBackend.prepare really allocates: if this
    fails, the backend's buffers changed; update measure._numba_buffers."""
    for model in (fg.Linear(20, 3, loss="softmax"), fg.MLP([20, 32, 16, 4])):
        X, y = make_problem(model.sizes, model.loss, 300)
        run = fg.prepare(model, X, y, backend="numba-cpu", batch_size=50)
        engine = run.engine
        seen, real = set(), 0
        for name, value in vars(engine).items():
            if name in ("X", "Y"):
                continue
            for arr in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(arr, np.ndarray) and id(arr) not in seen:
                    seen.add(id(arr))
                    real += arr.nbytes
        assert sum(measure._numba_buffers(run.plan).values()) == real


def test_largest_batch_that_fits():
    """Monotone in the budget, and the answer's estimate fits while the next one does not."""
    model, n = fg.MLP([64, 128, 10]), 50_000
    plan = _plan(model)
    budgets = np.linspace(5e6, 400e6, 25)
    fits = [largest_batch_that_fits(plan, n, b, backend="numpy", copies_data=True)
            for b in budgets]
    assert fits == sorted(fits) and fits[0] == 0 and fits[-1] == n
    for budget, b in zip(budgets, fits, strict=True):
        if 0 < b < n:
            est = lambda size: estimate_memory(  # noqa: E731
                dataclasses.replace(plan, batch_size=size), n, backend="numpy",
                copies_data=True).total
            assert est(b) <= budget < est(b + 1)
    # numba-cpu needs no batch-sized memory: all or nothing
    total = estimate_memory(plan, n, backend="numba-cpu").total
    assert largest_batch_that_fits(plan, n, total, backend="numba-cpu") == n
    assert largest_batch_that_fits(plan, n, total - 1, backend="numba-cpu") == 0


# ----------------------------------------------------------------------------- measure_fit
@pytest.mark.parametrize("backend", BACKENDS)
def test_measure_fit_matches_the_estimate(backend, rng):
    """float64 input converted to float32 (data copied): the traced peak is within the
    stated tolerance of the estimate; Numba compilation is not in it (warm-up first)."""
    n, d = 200_000, 64
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + rng.standard_normal(n)
    res, rep = measure_fit(fg.Linear(d), X, y, backend=backend, batch_size=1024, epochs=2,
                           lr=1e-3, momentum=0.9, dtype="float32")
    assert isinstance(rep, MemoryReport) and isinstance(rep.estimate, MemoryEstimate)
    assert res.backend == backend and len(res.history) == 2
    est = rep.estimate
    assert est.data == n * (d + 1) * 4
    assert within_tolerance(rep.traced_peak_bytes, est), (rep.traced_peak_bytes, est)
    assert abs(rep.relative_error) <= TOLERANCE + SLACK_BYTES / est.total
    assert rep.rss_method in RSS_METHODS and rep.device_peak_bytes is None
    if rep.rss_method == "clear_refs":
        assert rep.rss_peak_bytes >= 0.9 * n * d * 4  # the converted X was written
    d = rep.to_dict()
    assert d["estimate"]["total"] == est.total and d["traced_peak_bytes"] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_measure_fit_without_copies(backend, rng):
    """C-contiguous float32 data is reused (data = 0); an MLP with a validation set on the
    numpy backend peaks in its full-data loss pass, which the model predicts too."""
    model = fg.MLP([32, 64, 4], activation="tanh")
    X, y = make_problem(model.sizes, model.loss, 40_000, dtype=np.float32)
    Xv, yv = make_problem(model.sizes, model.loss, 5_000, dtype=np.float32)
    res, rep = measure_fit(model, X, y, backend=backend, batch_size=256, epochs=1,
                           X_val=Xv, y_val=yv)
    est = rep.estimate
    assert est.data == 4 * (40_000 + 5_000)  # only the int64 class ids are converted
    assert within_tolerance(rep.traced_peak_bytes, est), (rep.traced_peak_bytes, est)
    if backend == "numpy":
        assert est.peak_phase == "loss"


def test_within_tolerance():
    """The stated bound: |measured - estimate| <= TOLERANCE * estimate + SLACK_BYTES."""
    assert within_tolerance(100_000_000 + 2_000_000, 100_000_000)
    assert not within_tolerance(100_000_000 + 2_200_000, 100_000_000)
    assert within_tolerance(SLACK_BYTES, 0) and not within_tolerance(SLACK_BYTES + 1, 0)
