"""Benchmark a fastgd configuration the same way everywhere: ``bench/``, users' suites
(through the pytest plugin, ``fastgd.pytest_plugin``) and scripts.

- :func:`machine_limits` measures what this machine can do, now: the read bandwidth (the
  best of a NumPy sum, a one-thread and an all-thread Numba read of the same large array:
  a NumPy sum runs on one thread and is too low a limit) and the float32 FLOP rate of a
  large matrix product with all BLAS threads (on a GPU, when CuPy sees one: the device copy
  bandwidth and float32 matmul rate). Ratios against these,
  measured in the same run, are stable on noisy shared machines; absolute times are not.
- :func:`bench_fit` prepares a run (validation and JIT compilation outside every timed
  round), times whole epochs with pytest-benchmark (``benchmark.pedantic``; the device is
  synchronised before the clock stops) and records in ``benchmark.extra_info``: samples/s,
  steps/s, compile seconds, peak host bytes (traced, one extra epoch) and device bytes,
  achieved bytes/s and FLOP/s and their fractions of the machine limits.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from .fit import prepare
from .measure import HostPeak, device_peak


@dataclass(frozen=True)
class MachineLimits:
    """What this machine can do (bytes/s, FLOP/s); GPU fields are None without a GPU."""

    read_bytes_per_s: float
    flop_per_s: float
    device_copy_bytes_per_s: float | None = None
    device_flop_per_s: float | None = None
    device_name: str | None = None
    #: bytes/s of each read method measured (``read_bytes_per_s`` is the best of them)
    read_methods: dict | None = None

    def to_dict(self) -> dict:
        """Plain dict (for ``extra_info`` or JSON)."""
        return asdict(self)


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (page faults, BLAS threads)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def read_methods(nbytes: int = 256 << 20, repeats: int = 3) -> dict[str, float]:
    """Bytes/s of reading one float32 array of ``nbytes`` by each method: ``numpy-sum``
    (one thread), ``numba-1-thread`` and ``numba-all-threads`` (``kernels/cpu/bandwidth.py``;
    compiled, or loaded from the cache, before the timing)."""
    import numba

    from .kernels.cpu import bandwidth

    a = np.ones(max(1, nbytes // 4), np.float32)
    parts = 4 * numba.get_num_threads()
    return {
        "numpy-sum": a.nbytes / _best_seconds(a.sum, repeats),
        "numba-1-thread": a.nbytes / _best_seconds(lambda: bandwidth.serial_read(a), repeats),
        "numba-all-threads": a.nbytes / _best_seconds(
            lambda: bandwidth.parallel_read(a, parts), repeats),
    }


def read_bandwidth(nbytes: int = 256 << 20, repeats: int = 3) -> float:
    """The machine's read limit now: the best bytes/s of :func:`read_methods`."""
    return max(read_methods(nbytes, repeats).values())


def flop_rate(n: int = 1024, repeats: int = 3) -> float:
    """FLOP/s of an ``n x n`` float32 matrix product (NumPy's BLAS, all its threads)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return 2.0 * n**3 / _best_seconds(lambda: a @ b, repeats)


def _device_limits(nbytes: int) -> tuple[float | None, float | None, str | None]:
    """Device copy bandwidth (bytes read per second by a large device-to-device copy) and
    float32 matmul FLOP/s via CuPy;
    Nones without CuPy or a device (never under the CUDA simulator)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return None, None, None
    try:
        import cupy as cp

        if cp.cuda.runtime.getDeviceCount() < 1:
            return None, None, None
        name = cp.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        src = cp.ones(nbytes // 4, cp.float32)
        dst = cp.empty_like(src)

        def copy():
            dst[...] = src
            cp.cuda.Device().synchronize()

        copy_bw = src.nbytes / _best_seconds(copy, 5)  # bytes read per second
        n = 8192
        a = cp.ones((n, n), cp.float32)

        def mm():
            a @ a
            cp.cuda.Device().synchronize()

        return copy_bw, 2.0 * n**3 / _best_seconds(mm, 3), name
    except Exception:  # noqa: BLE001 - no usable GPU is an answer, not an error
        return None, None, None


def machine_limits(read_bytes: int | None = None) -> MachineLimits:
    """Measure the machine limits now (``FASTGD_LIMITS_MB`` sets the read size, default
    256 MB; a few seconds in all)."""
    nbytes = read_bytes or int(os.environ.get("FASTGD_LIMITS_MB", "256")) << 20
    copy_bw, dev_flops, name = _device_limits(nbytes)
    methods = read_methods(nbytes)
    return MachineLimits(max(methods.values()), flop_rate(), copy_bw, dev_flops, name,
                         methods)


def bench_fit(benchmark, model, X, y, *, limits: MachineLimits | None = None, rounds: int = 3,
              warmup_rounds: int = 0, measure_memory: bool = True, **fit_kw) -> dict:
    """Time whole epochs of ``fastgd.fit(model, X, y, **fit_kw)`` with pytest-benchmark.

    Compilation happens before the first round (``prepare``), never inside one. Returns the
    ``extra_info`` it recorded (empty measurements under ``--benchmark-disable``, where
    ``benchmark.stats`` is None; the epochs still run, so the suite cannot rot).
    """
    prep = prepare(model, X, y, **fit_kw)
    epochs = iter(range(1 << 62))

    def one_epoch():
        prep.run_epoch(next(epochs))
        prep.engine.synchronize()

    benchmark.pedantic(one_epoch, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    plan, n = prep.plan, len(prep.X)
    info = benchmark.extra_info
    info.update(backend=prep.backend, mode=plan.mode, batch_size=plan.batch_size,
                dtype=plan.dtype.name, n=n, compile_s=prep.compile_s,
                optimizer=plan.optimizer.name,
                optimizer_state_bytes=plan.optimizer.state_bytes(plan.n_params, plan.dtype))
    if measure_memory:
        with HostPeak(trace=True) as peak:
            one_epoch()
        info.update(peak_host_bytes=peak.traced_peak_bytes, peak_rss_bytes=peak.rss_peak_bytes,
                    peak_device_bytes=device_peak(prep.engine))
    samples, steps = plan.samples_per_epoch(n), plan.steps_per_epoch(n)
    data_bytes = (prep.X.nbytes + prep.Y.nbytes) * samples // n  # read per epoch
    record_rates(benchmark, limits, samples, steps, data_bytes, plan.flops_per_sample,
                 on_device=prep.engine.on_device)
    return info


def record_rates(benchmark, limits, samples, steps, bytes_read=0, flops_per_sample=0,
                 on_device=False) -> None:
    """Add rates to ``benchmark.extra_info`` from the mean of its timed rounds: samples/s,
    steps/s, bytes/s and FLOP/s (when given), and their fractions of ``limits`` (the
    device's when ``on_device``). Does nothing under ``--benchmark-disable`` (no stats)."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return
    seconds = stats.stats.mean
    info = benchmark.extra_info
    info.update(samples_per_s=samples / seconds, steps_per_s=steps / seconds)
    if bytes_read:
        info["bytes_per_s"] = bytes_read / seconds
    if flops_per_sample:
        info["flop_per_s"] = flops_per_sample * samples / seconds
    if limits is None:
        return
    info["limits"] = limits.to_dict()
    device = on_device and limits.device_copy_bytes_per_s is not None
    bw = limits.device_copy_bytes_per_s if device else limits.read_bytes_per_s
    flops = limits.device_flop_per_s if device else limits.flop_per_s
    if "bytes_per_s" in info:
        info["fraction_of_read_bw"] = info["bytes_per_s"] / bw
    if "flop_per_s" in info:
        info["fraction_of_flop_rate"] = info["flop_per_s"] / flops
