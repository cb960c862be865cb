"""Benchmark a fastgd configuration the same way everywhere: ``bench/``, users' suites
(through the pytest plugin, ``fastgd.pytest_plugin``) and scripts.

- :func:`machine_limits` measures what this machine can do, now: the read bandwidth (the
  best of a NumPy sum, a one-thread and an all-thread Numba read of the same large array:
  a NumPy sum runs on one thread and is too low a limit) and the float32 FLOP rate of a
  large matrix product with all BLAS threads; on a GPU (CuPy or numba-cuda), the best
  read rate of read-only reductions over a 1 GiB device array (``cupy.sum``, a CuPy
  ``ReductionKernel``, a numba-cuda kernel; CUDA events) and, with CuPy, the float32 matmul
  rate. A device run is quoted against the device's limits only. Ratios against these,
  measured in the same run, are stable on noisy shared machines; absolute times are not.
- :func:`bench_fit` prepares a run (validation and JIT compilation outside every timed
  round), times whole epochs with pytest-benchmark (``benchmark.pedantic``; the device is
  synchronised before the clock stops) and records in ``benchmark.extra_info``: samples/s,
  steps/s, compile seconds, peak host bytes (traced, one extra epoch) and device bytes,
  achieved bytes/s and FLOP/s and their fractions of the machine limits.
"""

from __future__ import annotations

import functools
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
    #: the best bytes/s of read-only reductions over a large device array
    device_read_bytes_per_s: float | None = None
    device_flop_per_s: float | None = None
    device_name: str | None = None
    #: bytes/s of each read method measured (``read_bytes_per_s`` is the best of them)
    read_methods: dict | None = None
    #: bytes/s of each device read method (``device_read_bytes_per_s`` is the best of them)
    device_read_methods: dict | None = None
    #: why there are no device limits (None when they were measured)
    device_reason: str | None = None

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


# Bytes read by each device read probe: far beyond every GPU's L2 cache, and enough that
# one launch (a few microseconds) is lost in the timing.
DEVICE_READ_BYTES = 1 << 30


def _event_seconds(fn, start, stop, elapsed_ms, repeats: int) -> float:
    """Best seconds of ``fn`` (device work on the current stream) between the CUDA events
    ``start`` and ``stop`` over ``repeats`` runs, after one untimed warm-up run."""
    fn()  # warm-up: compilation, memory-pool allocations
    best = float("inf")
    for _ in range(repeats):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, elapsed_ms(start, stop) / 1e3)
    return best


def _cupy_read_kernel():
    """A CuPy ``ReductionKernel`` that sums a float32 array and does nothing else."""
    import cupy as cp

    return cp.ReductionKernel("float32 x", "float32 s", "x", "a + b", "s = a", "0",
                              "fastgd_read_sum")


def _cupy_reads(nbytes: int, repeats: int) -> dict[str, float]:
    """Bytes/s of ``cupy.sum`` and of a read-only ``ReductionKernel`` over one float32
    device array of ``nbytes`` (freed on return)."""
    import cupy as cp

    a = cp.ones(nbytes // 4, cp.float32)
    read_sum = _cupy_read_kernel()
    methods = {"cupy-sum": lambda: cp.sum(a), "cupy-reduction-kernel": lambda: read_sum(a)}
    events = cp.cuda.Event(), cp.cuda.Event()
    return {k: a.nbytes / _event_seconds(fn, *events, cp.cuda.get_elapsed_time, repeats)
            for k, fn in methods.items()}


def _cupy_flop_rate(n: int = 8192, repeats: int = 3) -> float:
    """FLOP/s of an ``n x n`` float32 matrix product on the device (CuPy)."""
    import cupy as cp

    m = cp.ones((n, n), cp.float32)
    events = cp.cuda.Event(), cp.cuda.Event()
    return 2.0 * n**3 / _event_seconds(lambda: m @ m, *events, cp.cuda.get_elapsed_time,
                                       repeats)


def _cupy_limits(nbytes: int, repeats: int) -> tuple[dict[str, float], float, str]:
    """CuPy's read methods (:func:`_cupy_reads`), the float32 matmul FLOP/s and the
    device's name. Raises when CuPy or a device is missing."""
    import cupy as cp

    if cp.cuda.runtime.getDeviceCount() < 1:
        raise RuntimeError("CuPy sees no CUDA device")
    name = cp.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    try:
        return _cupy_reads(nbytes, repeats), _cupy_flop_rate(), name
    finally:
        cp.get_default_memory_pool().free_all_blocks()  # keep no probe memory cached


# numba.cuda once _numba_read_kernel has imported it (importing it here would import numba
# with this module). A global, not a local: the CUDA simulator swaps its own ``cuda`` into a
# kernel's module globals, never into a closure.
cuda = None


@functools.cache
def _numba_read_kernel():
    """A numba-cuda kernel (compiled at its first launch): each thread sums a grid-stride
    slice of ``a`` and writes its partial sum to ``out[thread]``, so ``a`` is read once and
    the writes are one float32 per thread."""
    global cuda
    from numba import cuda as numba_cuda
    from numba import float32

    cuda = numba_cuda

    @cuda.jit
    def read_sum(a, out):
        i, stride = cuda.grid(1), cuda.gridsize(1)
        s0 = s1 = s2 = s3 = float32(0)
        j = i
        # four independent loads in flight per thread: one is too few to cover the latency
        while j + 3 * stride < a.size:
            s0 += a[j]
            s1 += a[j + stride]
            s2 += a[j + 2 * stride]
            s3 += a[j + 3 * stride]
            j += 4 * stride
        while j < a.size:
            s0 += a[j]
            j += stride
        out[i] = (s0 + s1) + (s2 + s3)

    return read_sum


def _numba_cuda_limits(nbytes: int, repeats: int) -> tuple[dict[str, float], None, str]:
    """numba-cuda's read method (bytes/s of :func:`_numba_read_kernel` over one float32
    array of ``nbytes``), no FLOP rate, and the device's name. Raises without a device."""
    import numpy as np

    kernel = _numba_read_kernel()  # imports numba.cuda as this module's ``cuda``
    if not cuda.is_available():
        raise RuntimeError("numba-cuda sees no CUDA device")
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    threads, blocks = 256, 8 * dev.MULTIPROCESSOR_COUNT  # 2048 threads per SM
    a = cuda.to_device(np.ones(nbytes // 4, np.float32))
    out = cuda.device_array(threads * blocks, np.float32)
    seconds = _event_seconds(lambda: kernel[blocks, threads](a, out), cuda.event(), cuda.event(),
                             cuda.event_elapsed_time, repeats)
    return {"numba-cuda-kernel": a.nbytes / seconds}, None, name


DEVICE_PROBES = {"cupy": _cupy_limits, "numba-cuda": _numba_cuda_limits}


def device_limits(nbytes: int = DEVICE_READ_BYTES, repeats: int = 5) -> dict:
    """The GPU's limits now, as :class:`MachineLimits` fields: ``device_read_bytes_per_s``,
    the best bytes/s of read-only reductions over one float32 array of ``nbytes`` on the
    device (``device_read_methods``: each method's; CUDA events, best of ``repeats`` after
    a warm-up), ``device_flop_per_s`` (float32 matmul, CuPy only) and ``device_name``; or,
    when no method could run (no GPU, the CUDA simulator), only ``device_reason``."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return {"device_reason": "the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1)"}
    reads, flops, name, failures = {}, None, None, []
    for label, probe in DEVICE_PROBES.items():
        try:
            methods, probe_flops, probe_name = probe(nbytes, repeats)
        except Exception as exc:  # noqa: BLE001 - no usable GPU is an answer, not an error
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        reads.update(methods)
        flops, name = flops or probe_flops, name or probe_name
    if not reads:
        return {"device_reason": "no GPU read limit measured (" + "; ".join(failures) + ")"}
    return {"device_read_bytes_per_s": max(reads.values()), "device_flop_per_s": flops,
            "device_name": name, "device_read_methods": reads}


def machine_limits(read_bytes: int | None = None) -> MachineLimits:
    """Measure the machine limits now (``FASTGD_LIMITS_MB`` sets the host read size,
    default 256 MB; the device reads :data:`DEVICE_READ_BYTES`; a few seconds in all)."""
    nbytes = read_bytes or int(os.environ.get("FASTGD_LIMITS_MB", "256")) << 20
    device = device_limits()
    methods = read_methods(nbytes)
    return MachineLimits(max(methods.values()), flop_rate(), read_methods=methods, **device)


def bench_fit(benchmark, model, X, y, *, limits: MachineLimits | None = None, rounds: int = 3,
              warmup_rounds: int | None = None, measure_memory: bool = True,
              **fit_kw) -> dict:
    """Time whole epochs of ``fastgd.fit(model, X, y, **fit_kw)`` with pytest-benchmark.

    Compilation happens before the first round (``prepare``), never inside one; on a GPU
    one untimed epoch comes first by default (``warmup_rounds``: the CuPy backend captures
    an epoch's CUDA graph on its first whole epoch). Returns the
    ``extra_info`` it recorded (empty measurements under ``--benchmark-disable``, where
    ``benchmark.stats`` is None; the epochs still run, so the suite cannot rot).
    """
    prep = prepare(model, X, y, **fit_kw)
    if warmup_rounds is None:
        warmup_rounds = 1 if prep.engine.on_device else 0
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
    device's when ``on_device``, see :func:`_record_fractions`). Does nothing under
    ``--benchmark-disable`` (no stats)."""
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
    _record_fractions(info, limits, on_device)


def _record_fractions(info: dict, limits: MachineLimits, on_device: bool) -> None:
    """``fraction_of_read_bw`` and ``fraction_of_flop_rate`` of the rates in ``info``
    against the host's limits, or the device's when ``on_device``. A device run is never
    quoted against the host: without a device limit its fraction is None and
    ``no_fraction_reason`` says why."""
    if on_device:
        bw, flops = limits.device_read_bytes_per_s, limits.device_flop_per_s
    else:
        bw, flops = limits.read_bytes_per_s, limits.flop_per_s
    missing = []
    for fraction, rate, limit, what in (("fraction_of_read_bw", "bytes_per_s", bw, "read"),
                                        ("fraction_of_flop_rate", "flop_per_s", flops, "FLOP")):
        if rate in info:
            info[fraction] = info[rate] / limit if limit else None
            if not limit:
                missing.append(what)
    if missing:
        why = limits.device_reason or "only CuPy measures the device FLOP rate"
        info["no_fraction_reason"] = (f"device run without a measured device {' or '.join(missing)}"
                                      f" limit ({why}); host limits do not apply")
