"""The Python side of ``bench/gpu_check.sh``: device checks and figures the test suites do
not make, the environment report, and the summary.

    python bench/gpu_extras.py env     --out DIR   # versions, devices -> env.json, flags.env
    python bench/gpu_extras.py extras  --out DIR   # the extras below -> extras.json (default)
    python bench/gpu_extras.py summary --out DIR   # the tables -> stdout and summary.md

``extras`` (one function each, run in this order, each guarded: an exception is an ERROR
row and the next one runs; rows are written to ``extras.json`` as they come, so a run cut
short by its time limit keeps what it measured):

- ``limits``: the device read limit, ``fastgd.benchmarking.device_limits`` (read-only
  reductions of a 1 GiB device array), against which the linear runs are quoted.
- ``throughput``: linear regression 2M x 64 float32 (MBGD b=256, BGD) and the 64-128-10
  MLP on 500k rows (b=32, 256, 1024) on each GPU backend: ``prepare`` (data copy and
  warm-up, ``compile_s`` of it the warm-up's compile), the first epoch (CuPy captures its
  CUDA graph there; numba-cuda compiles the two-launch kernels there) apart from the best
  and median of 3 steady epochs, samples/s, us per step, launches per step (counted while
  the first epoch queues or captures) and, for linear, the fraction of the read limit.
- ``agreement``: the two backends' parameters after the same runs (same seed, same
  decomposition) within float32 tolerance, and whether they are bitwise equal.
- ``toggles``: A/B with the same seed: CuPy ``USE_GRAPHS`` True/False, ``FUSED_MAX``
  1<<30/0 (one launch a step or two), ``TARGET_TILES`` 128/512 and, for BGD,
  ``MAX_BLOCKS`` 512/2048 (module constants patched around ``prepare`` and the epochs).
  The graph and fused toggles must give bitwise-identical parameters; the tile and block
  counts change the summation order, hence the bits (checked to float32 tolerance).
- ``memory``: ``memory()`` equals ``gpu_launch.peak_bytes(buffer_bytes(plan, n, n_val))``
  and ``estimate_memory(...).device_total`` exactly (with and without validation data, SGD
  and Adam); ``device_memory()`` before, after ``prepare``, after training and after the
  run is freed (device-wide: context, modules and allocator caches show there).
- ``oom``: real out-of-memory errors become ``MemoryError`` naming the buffers: a CuPy pool
  limit (first allocation fails; a later one fails, and nothing stays allocated), and a
  numba-cuda data set larger than the device (host arrays mapped without backing memory,
  given to the backend's ``prepare``: ``fit`` would scan them for NaNs first).
- ``torch``: the PyTorch CUDA-graph peer (``bench/workloads.py``): a replay gives a fresh
  gradient (not the sum of all replays'), and eager/graph epochs at b=256 for context.

Without a GPU every extra is a SKIP row saying why, and the exit status is 0;
``--dry-run`` records them as SKIP without touching a device; ``--simulate`` runs the
numba-cuda paths on the CUDA simulator at tiny sizes (a test of this file, not figures).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hashlib
import importlib
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GPU_BACKENDS = ("numba-cuda", "cupy")
SEED = 3
N_LINEAR, N_MLP, D = 2_000_000, 500_000, 64
# name -> (data, fit keyword arguments); the figures' rows, in this order
WORKLOADS = {
    "linear-mbgd-256": ("linear", dict(mode="mbgd", batch_size=256, lr=1e-4)),
    "linear-bgd": ("linear", dict(mode="bgd", lr=1e-4)),
    "mlp-32": ("mlp", dict(mode="mbgd", batch_size=32, lr=0.01, momentum=0.9)),
    "mlp-256": ("mlp", dict(mode="mbgd", batch_size=256, lr=0.01, momentum=0.9)),
    "mlp-1024": ("mlp", dict(mode="mbgd", batch_size=1024, lr=0.01, momentum=0.9)),
}
TIMED_EPOCHS = 3
# float32 agreement after thousands of steps (the test suites' float32 tolerance)
F32_TOL = dict(rtol=2e-3, atol=2e-4)


# ============================================================================ recording
@dataclass
class Ctx:
    """What the extras share: where rows go, the sizes, the usable GPU backends."""

    out: Path
    scale: float = 1.0
    simulate: bool = False
    gpu: list = field(default_factory=list)
    why: str = ""
    rows: list = field(default_factory=list)
    runs: dict = field(default_factory=dict)  # (backend, workload) -> (params, loss)
    read_limit: float | None = None
    data: dict = field(default_factory=dict)

    def record(self, check: str, status: str, detail: str, **data) -> None:
        """Add a row (PASS, FAIL, ERROR, INFO or SKIP) and rewrite ``extras.json``."""
        self.rows.append({"check": check, "status": status, "detail": detail,
                          **_jsonable(data)})
        print(f"[{status}] {check}: {detail}", flush=True)
        tmp = self.out / "extras.json.tmp"
        tmp.write_text(json.dumps(self.rows, indent=1))
        os.replace(tmp, self.out / "extras.json")  # never a half-written file


def _jsonable(data: dict) -> dict:
    """``data`` with NumPy scalars as Python numbers (arrays and other objects dropped)."""
    out = {}
    for k, v in data.items():
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or isinstance(v, (bool, int, float, str, list, dict)):
            out[k] = v
    return out


def attempt(ctx: Ctx, label: str, fn, *args, **kw):
    """``fn(*args, **kw)``; an exception becomes an ERROR row for ``label`` (None returned),
    so one failing run does not stop the others of an extra."""
    try:
        return fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - every failure is a result here
        traceback.print_exc()
        ctx.record(label, "ERROR", f"{type(exc).__name__}: {str(exc)[:300]}")
        return None
    finally:
        release(ctx)


# ============================================================================ device helpers
def release(ctx: Ctx) -> None:
    """Free what the last run left (so device-wide readings and the next run start clean);
    never raises: after a sticky CUDA error (a kernel fault) every call fails, and the
    extras that follow should say so in their own rows."""
    try:
        _release(ctx)
    except Exception as exc:  # noqa: BLE001
        print(f"release failed: {type(exc).__name__}: {exc}", flush=True)


def _release(ctx: Ctx) -> None:
    """Python garbage, Numba's deferred frees, CuPy's pool cache, PyTorch's cache."""
    gc.collect()
    if ctx.simulate:
        return
    if "numba-cuda" in ctx.gpu:
        from numba import cuda

        cuda.current_context().deallocations.clear()
    if "cupy" in ctx.gpu:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_used(ctx: Ctx, backend: str) -> int | None:
    """Device-wide bytes in use now, read as ``backend``'s ``device_memory()`` reads them
    (after a sync and a flush); None under the simulator."""
    if ctx.simulate:
        return None
    release(ctx)
    if backend == "cupy":
        import cupy

        cupy.cuda.runtime.deviceSynchronize()
        free, total = cupy.cuda.runtime.memGetInfo()
    else:
        from numba import cuda

        cuda.synchronize()
        free, total = cuda.current_context().get_memory_info()
    return int(total) - int(free)


@contextlib.contextmanager
def patched(module, **values):
    """Set module constants for the duration of a run (``prepare`` reads some of them, the
    launches the others), then restore them."""
    old = {k: getattr(module, k) for k in values}
    for k, v in values.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


class Counting:
    """Counts the launches of one kernel: numba ``kernel[grid, block](...)`` and CuPy
    ``kernel(grid, block, args)`` (during a CUDA graph capture: the graph's nodes)."""

    def __init__(self, kernel):
        self.kernel, self.n = kernel, 0

    def __getitem__(self, config):
        self.n += 1
        return self.kernel[config]

    def __call__(self, *args, **kw):
        self.n += 1
        return self.kernel(*args, **kw)


def _mib(nbytes) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.1f} MiB"


# ============================================================================ data and runs
def size(ctx: Ctx, n: int) -> int:
    """``n`` rows scaled by ``--scale`` (at least 64)."""
    return max(64, int(n * ctx.scale))


def data(ctx: Ctx, kind: str):
    """``(model, X, y)`` of a workload kind (built once): the suite's synthetic data
    (``bench/workloads.py``'s recipes, seed 0)."""
    import fastgd as fg

    if kind not in ctx.data:
        rng = np.random.default_rng(0)
        if kind == "linear":
            n = size(ctx, N_LINEAR)
            X = rng.standard_normal((n, D), dtype=np.float32)
            y = X @ rng.standard_normal(D).astype(np.float32)
            y = (y + rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
            ctx.data[kind] = (fg.Linear(D), X, y)
        else:
            n = size(ctx, N_MLP)
            y = rng.integers(0, 10, n)
            X = (rng.standard_normal((10, D))[y] + rng.standard_normal((n, D)))
            ctx.data[kind] = (fg.MLP([D, 128, 10]), X.astype(np.float32), y)
    return ctx.data[kind]


def fit_kwargs(ctx: Ctx, workload: str) -> dict:
    """The workload's fit arguments, its batch no larger than the (scaled) data."""
    kind, kw = WORKLOADS[workload]
    kw = dict(kw)
    if "batch_size" in kw:
        kw["batch_size"] = min(kw["batch_size"], len(data(ctx, kind)[1]))
    return kw


def launch_facts(plan, rows: int) -> dict:
    """The launch decomposition of a step of ``rows`` rows (``device_tables``)."""
    from fastgd.kernels import device_tables as dt

    blocks, tile, shared, wsh = dt.launch_shape(int(sum(plan.sizes)), plan.dtype.itemsize,
                                                rows, plan.n_params)
    return dict(blocks=blocks, tile=tile, shared_bytes=shared, weights_shared=bool(wsh),
                fused=bool(dt.fused_step(blocks, plan.n_params)))


def _epoch_seconds(prep, epoch: int) -> float:
    t = time.perf_counter()
    prep.run_epoch(epoch)
    prep.engine.synchronize()
    return time.perf_counter() - t


def _first_epoch(prep) -> tuple[float, int]:
    """Seconds of epoch 0 (CuPy captures the epoch's graph in it; numba-cuda compiles the
    kernels the warm-up did not launch) and the kernel launches it queued or captured."""
    eng = prep.engine
    kernels = eng.kernels
    eng.kernels = type(kernels)(*(Counting(k) for k in kernels))
    try:
        seconds = _epoch_seconds(prep, 0)
    finally:
        counted, eng.kernels = eng.kernels, kernels
    return seconds, sum(c.n for c in counted)


def timed_run(ctx: Ctx, backend: str, workload: str) -> tuple[dict, np.ndarray]:
    """One prepared run: ``prepare``, the first epoch and the best of ``TIMED_EPOCHS``
    more, all with the same seed; its figures and its final parameters."""
    import fastgd as fg

    kind, _ = WORKLOADS[workload]
    model, X, y = data(ctx, kind)
    t = time.perf_counter()
    prep = fg.prepare(model, X, y, backend=backend, dtype="float32", seed=SEED,
                      epochs=1 + TIMED_EPOCHS, **fit_kwargs(ctx, workload))
    prepare_s = time.perf_counter() - t
    first_s, launches = _first_epoch(prep)
    times = [_epoch_seconds(prep, e) for e in range(1, 1 + TIMED_EPOCHS)]
    plan, n = prep.plan, len(prep.X)
    best, steps, samples = min(times), prep.steps_per_epoch, prep.samples_per_epoch
    fig = dict(kind="throughput", backend=backend, workload=workload, n=n,
               batch=plan.batch_size, steps=steps, prepare_s=prepare_s,
               compile_s=prep.compile_s, first_epoch_s=first_s, best_s=best,
               median_s=statistics.median(times), samples_per_s=samples / best,
               us_per_step=1e6 * best / steps, launches_per_step=launches / steps,
               loss=prep.engine.epoch_loss(), memory=prep.engine.memory(),
               **launch_facts(plan, plan.batch_size))
    if kind == "linear":  # bytes the epoch reads, as bench_fit counts them
        fig["bytes_per_s"] = (prep.X.nbytes + prep.Y.nbytes) * samples / n / best
        if ctx.read_limit:
            fig["read_fraction"] = fig["bytes_per_s"] / ctx.read_limit
    return fig, prep.engine.params().copy()


def describe_run(fig: dict) -> str:
    """One line of a run's figures."""
    frac = fig.get("read_fraction")
    return (f"prepare {fig['prepare_s']:.2f}s (compile {fig['compile_s']:.2f}s), first epoch "
            f"{fig['first_epoch_s']:.3f}s, best {fig['best_s']:.4f}s (median "
            f"{fig['median_s']:.4f}s), {fig['samples_per_s'] / 1e6:.2f} M samples/s, "
            f"{fig['us_per_step']:.1f} us/step, {fig['launches_per_step']:.2f} launches/step "
            f"({fig['blocks']} blocks x {fig['tile']}-row tiles, "
            f"{'fused' if fig['fused'] else 'two launches'}, weights "
            f"{'shared' if fig['weights_shared'] else 'global'})"
            + ("" if frac is None else f", {100 * frac:.1f}% of the read limit"))


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """How two parameter vectors differ: bitwise, the largest absolute and relative
    difference, and whether they agree to float32 tolerance."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return dict(bitwise=bool(np.array_equal(a, b)), max_abs=float(diff.max(initial=0)),
                max_rel=float(diff.max(initial=0) / max(np.abs(a).max(initial=0), 1e-30)),
                close=bool(np.allclose(a, b, **F32_TOL)))


# ============================================================================ the extras
def x_limits(ctx: Ctx) -> None:
    """The device read limit (best read-only reduction) and matmul rate."""
    from fastgd import benchmarking as bm

    if hasattr(bm, "device_limits"):
        lim = bm.device_limits()
    else:  # an older tree: the full machine limits carry the device fields
        lim = bm.machine_limits().to_dict()
    ctx.read_limit = lim.get("device_read_bytes_per_s")
    if not ctx.read_limit:
        ctx.record("limits", "SKIP" if ctx.simulate else "FAIL",
                   f"no device read limit: {lim.get('device_reason')}", kind="limits")
        return
    methods = lim.get("device_read_methods") or {}
    flops = lim.get("device_flop_per_s")
    ctx.record("limits", "INFO",
               f"{lim.get('device_name')}: read {ctx.read_limit / 1e9:.0f} GB/s ("
               + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in methods.items()) + ")"
               + ("" if not flops else f"; float32 matmul {flops / 1e12:.1f} TFLOP/s"),
               kind="limits", read_bytes_per_s=ctx.read_limit, flop_per_s=flops,
               methods=methods, device=lim.get("device_name"))


def x_throughput(ctx: Ctx) -> None:
    """Every workload on every GPU backend (the figures table)."""
    for workload in WORKLOADS:
        for backend in ctx.gpu:
            label = f"throughput {backend} {workload}"
            got = attempt(ctx, label, timed_run, ctx, backend, workload)
            if got is None:
                continue
            fig, params = got
            ctx.runs[(backend, workload)] = (params, fig["loss"])
            ctx.record(label, "INFO", describe_run(fig), **fig)


def x_agreement(ctx: Ctx) -> None:
    """The backends' parameters after the same runs agree to float32 tolerance."""
    if len(ctx.gpu) < 2:
        ctx.record("agreement", "SKIP", f"needs both GPU backends ({ctx.why or ctx.gpu})")
        return
    a, b = ctx.gpu[:2]
    for workload in WORKLOADS:
        if (a, workload) not in ctx.runs or (b, workload) not in ctx.runs:
            ctx.record(f"agreement {workload}", "SKIP", "a throughput run is missing")
            continue
        (pa, la), (pb, lb) = ctx.runs[(a, workload)], ctx.runs[(b, workload)]
        c = compare(pa, pb)
        loss_rel = None if la is None or lb is None else abs(la - lb) / max(abs(la), 1e-30)
        ctx.record(f"agreement {workload}", "PASS" if c["close"] else "FAIL",
                   f"{a} vs {b} after {1 + TIMED_EPOCHS} epochs: "
                   f"{'bitwise equal' if c['bitwise'] else 'not bitwise equal'}, max |diff| "
                   f"{c['max_abs']:.2e} (relative {c['max_rel']:.2e}), mean batch loss "
                   f"relative diff {'n/a' if loss_rel is None else f'{loss_rel:.1e}'}",
                   kind="agreement", workload=workload, loss_rel=loss_rel, **c)


def _toggles(ctx: Ctx) -> list[tuple]:
    """``(name, module, constant, A, B, backends, workloads, same bits)`` to run."""
    from fastgd.kernels import device_tables as dt

    out = []
    if "cupy" in ctx.gpu:
        from fastgd.backends import cupy_backend

        out.append(("graphs", cupy_backend, "USE_GRAPHS", True, False, ["cupy"],
                    ["linear-mbgd-256", "mlp-32", "mlp-256"], True))
    # FUSED_MAX and USE_GRAPHS change how the same sums are launched, never their order:
    # the same bits. TARGET_TILES and MAX_BLOCKS change the tiles and blocks, hence the
    # order of the sums, hence the bits (the results agree to rounding only).
    tiles, blocks = ((2, 4), (2, 4)) if ctx.simulate else ((128, 512), (512, 2048))
    out += [("fused", dt, "FUSED_MAX", 1 << 30, 0, ctx.gpu, ["linear-mbgd-256", "mlp-256"],
             True),
            ("tiles", dt, "TARGET_TILES", *tiles, ctx.gpu, ["linear-mbgd-256", "mlp-256"],
             False),
            ("blocks", dt, "MAX_BLOCKS", *blocks, ctx.gpu, ["linear-bgd"], False)]
    return out


def _toggle_arm(ctx, module, constant, value, backend, workload):
    with patched(module, **{constant: value}):
        return timed_run(ctx, backend, workload)


def x_toggles(ctx: Ctx) -> None:
    """A/B runs of one module constant each, same seed, back to back."""
    for name, module, constant, va, vb, backends, workloads, same in _toggles(ctx):
        for workload in workloads:
            for backend in backends:
                label = f"toggle {name} {backend} {workload}"
                arms = [attempt(ctx, label, _toggle_arm, ctx, module, constant, v, backend,
                                workload) for v in (va, vb)]
                if None in arms:
                    continue
                (fa, pa), (fb, pb) = arms
                c = compare(pa, pb)
                ok = c["bitwise"] if same else c["close"]
                bits = ("bitwise equal" if c["bitwise"] else
                        f"bits differ (max relative {c['max_rel']:.1e})")
                if not same:  # either is right; what a reader should expect
                    bits += ("; the summation order changed, its rounding did not show"
                             if c["bitwise"] else ", as expected: another summation order")
                ctx.record(label, "PASS" if ok else "FAIL",
                           f"{constant}={va}: {fa['best_s'] * 1e3:.2f} ms/epoch "
                           f"({fa['launches_per_step']:.2f} launches/step, {fa['blocks']} "
                           f"blocks); {constant}={vb}: {fb['best_s'] * 1e3:.2f} ms/epoch "
                           f"({fb['launches_per_step']:.2f}, {fb['blocks']}); B/A "
                           f"{fb['best_s'] / fa['best_s']:.2f}; {bits}",
                           kind="toggle", toggle=name, constant=constant, a=str(va),
                           b=str(vb), backend=backend, workload=workload,
                           a_s=fa["best_s"], b_s=fb["best_s"], same_bits_expected=same,
                           a_first_s=fa["first_epoch_s"], b_first_s=fb["first_epoch_s"], **c)


def _memory_case(ctx: Ctx, backend: str, case: str) -> None:
    """One run: memory() against the model, device-wide readings around it."""
    import fastgd as fg
    from fastgd.backends import gpu_launch
    from fastgd.measure import estimate_memory

    if case == "linear-bgd-sgd":
        model, X, y = data(ctx, "linear")
        kw, val = dict(mode="bgd", lr=1e-4), {}
    else:
        model, X, y = data(ctx, "mlp")
        n_val = max(16, len(X) // 10)
        kw = dict(mode="mbgd", batch_size=min(256, len(X)), optimizer=fg.Adam(lr=1e-3))
        val = dict(X_val=X[:n_val], y_val=y[:n_val])
    base = device_used(ctx, backend)
    prep = fg.prepare(model, X, y, backend=backend, dtype="float32", seed=SEED, epochs=1,
                      **kw, **val)
    eng = prep.engine
    after_prepare = None if ctx.simulate else eng.device_memory()
    prep.train()  # one epoch and, with validation data, their copy
    n, n_val = len(prep.X), len(val.get("X_val", ()))
    got = eng.memory()
    model_bytes = gpu_launch.peak_bytes(gpu_launch.buffer_bytes(prep.plan, n, n_val,
                                                                eng.block_threads()))
    est = estimate_memory(prep.plan, n, n_val, backend=backend).device_total
    after_train = None if ctx.simulate else eng.device_memory()
    del prep, eng
    after_free = device_used(ctx, backend)
    ok = got == model_bytes == est

    def since_base(reading):
        return None if base is None or reading is None else reading - base

    ctx.record(f"memory {backend} {case}", "PASS" if ok else "FAIL",
               f"memory()={got} B, model {model_bytes} B, estimate_memory {est} B "
               f"({'equal' if ok else 'DIFFERENT'}); device-wide: "
               f"+{_mib(since_base(after_prepare))} after prepare, "
               f"+{_mib(since_base(after_train))} after training (memory() {_mib(got)}), "
               f"{_mib(since_base(after_free))} left after freeing",
               kind="memory", backend=backend, case=case, memory=got, model=model_bytes,
               estimate=est, base=base, after_prepare=after_prepare,
               after_train=after_train, after_free=after_free)


def x_memory(ctx: Ctx) -> None:
    """memory() is the model's prediction, exactly; device-wide readings beside it."""
    for backend in ctx.gpu:
        for case in ("linear-bgd-sgd", "mlp-adam-val"):
            attempt(ctx, f"memory {backend} {case}", _memory_case, ctx, backend, case)


OOM_MESSAGE = re.compile(r"out of memory placing the run.*largest: X .*batch size does not "
                         r"change", re.S)


def _expect_oom(fn) -> tuple[str, str]:
    """``(what was raised, its message)`` of ``fn()``."""
    try:
        fn()
    except MemoryError as exc:
        return "MemoryError", str(exc)
    except Exception as exc:  # noqa: BLE001 - anything else is the finding
        return type(exc).__name__, str(exc)
    return "no error", ""


def _oom_cupy(ctx: Ctx, which: str) -> None:
    """A CuPy pool limit the run's first allocation (``first``) or a later one (``later``:
    the data fit, the per-block buffers do not) exceeds; nothing stays allocated."""
    import cupy

    import fastgd as fg

    pool = cupy.get_default_memory_pool()
    X, y = np.zeros((20_000, D), np.float32), np.zeros(20_000, np.float32)
    release(ctx)
    used, old = pool.used_bytes(), pool.get_limit()
    room = (1 << 20) if which == "first" else X.nbytes + y.nbytes + 4096
    pool.set_limit(size=used + room)
    try:
        kind, msg = _expect_oom(lambda: fg.fit(fg.Linear(D), X, y, backend="cupy",
                                               batch_size=77, epochs=1))
    finally:
        pool.set_limit(size=old)
    release(ctx)
    left = pool.used_bytes() - used
    ok = kind == "MemoryError" and OOM_MESSAGE.search(msg) is not None and left == 0
    ctx.record(f"oom cupy pool limit ({which} allocation)", "PASS" if ok else "FAIL",
               f"{kind}: {msg[:160]}...; {left} B still allocated afterwards", kind="oom")


def _unbacked(shape, dtype) -> np.ndarray:
    """A zero array of ``shape`` on address space only (``MAP_NORESERVE``): no host memory
    is committed until it is written, and ``prepare`` allocates on the device first."""
    import mmap

    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_NORESERVE", 0x4000),
                    prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return np.frombuffer(buf, dtype).reshape(shape)


def _oom_numba_beyond(ctx: Ctx) -> None:
    """numba-cuda given more data than the device holds: a MemoryError from ``prepare``
    naming the buffers, the device as before."""
    from numba import cuda

    import fastgd as fg
    from fastgd.plan import Plan

    total = int(cuda.current_context().get_memory_info()[1])
    rows = total // (D * 4) + (1 << 20)
    before = device_used(ctx, "numba-cuda")
    X, Y = _unbacked((rows, D), np.float32), _unbacked((rows, 1), np.float32)
    plan = Plan.for_model(fg.Linear(D), np.dtype("float32"), "mbgd", 77,
                          optimizer=fg.SGD(lr=0.01))
    theta0 = np.zeros(plan.n_params, np.float32)
    place = functools.partial(fg.backends.create("numba-cuda").prepare, plan, X, Y, theta0)
    kind, msg = _expect_oom(place)
    del place, X, Y  # the engine and the address space with them
    left = device_used(ctx, "numba-cuda") - before
    ok = kind == "MemoryError" and OOM_MESSAGE.search(msg) is not None and abs(left) < 64 << 20
    ctx.record("oom numba-cuda data beyond the device", "PASS" if ok else "FAIL",
               f"{rows * D * 4 / 2**30:.0f} GiB of X on a {total / 2**30:.0f} GiB device: "
               f"{kind}: {msg[:160]}...; device use afterwards {left / 2**20:+.1f} MiB",
               kind="oom")


def x_oom(ctx: Ctx) -> None:
    """Real out-of-memory errors become MemoryError naming the buffers."""
    if ctx.simulate:
        ctx.record("oom", "SKIP", "not under the simulator")
        return
    if "cupy" in ctx.gpu:
        for which in ("first", "later"):
            attempt(ctx, f"oom cupy pool limit ({which} allocation)", _oom_cupy, ctx, which)
    if "numba-cuda" in ctx.gpu:
        attempt(ctx, "oom numba-cuda data beyond the device", _oom_numba_beyond, ctx)


def _workloads_module():
    """``bench/workloads.py`` (the PyTorch CUDA peer's code)."""
    sys.path.insert(0, str(REPO / "bench"))
    return importlib.import_module("workloads")


def _torch_fresh_gradient(ctx: Ctx, wl) -> None:
    """A replay of the captured step writes a fresh gradient: two replays of the same
    batch (lr 1e-12: the parameters barely move) give the same gradient norm."""
    import torch

    _, X, y = data(ctx, "linear")
    net, opt, loss_fn, Xt, yt = wl.torch_cuda_setup(X[:4096], y[:4096], (D, 1), lr=1e-12)
    graph = wl.capture_torch_step(net, opt, loss_fn, Xt[:256].clone(), yt[:256].clone())
    norms = []
    for _ in range(2):
        graph.replay()
        torch.cuda.synchronize()
        norms.append(math.sqrt(sum(float(p.grad.norm()) ** 2 for p in net.parameters())))
    ratio = norms[1] / norms[0]
    ctx.record("torch graph fresh gradient", "PASS" if abs(ratio - 1) < 0.01 else "FAIL",
               f"|grad| after 2 replays / after 1 = {ratio:.4f} (1: a fresh gradient per "
               "replay; 2: the graph accumulates into .grad)", kind="torch")


def _torch_epochs(ctx: Ctx, wl, workload: str, graph: bool) -> None:
    """Best of 3 PyTorch CUDA epochs (eager, or one graph replay per step) at b=256."""
    import torch

    kind = WORKLOADS[workload][0]
    _, X, y = data(ctx, kind)
    sizes, lr, momentum = ((D, 1), 1e-4, 0.0) if kind == "linear" else ((D, 128, 10), 0.01, 0.9)
    batch = fit_kwargs(ctx, workload)["batch_size"]
    run, samples = wl.make_torch_cuda(X, y, sizes, batch, graph=graph, lr=lr,
                                      momentum=momentum)
    times = []
    for _ in range(TIMED_EPOCHS):
        t = time.perf_counter()
        run()  # ends with torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    best, steps = min(times), samples // batch
    backend = f"torch-{'graph' if graph else 'eager'}"
    ctx.record(f"torch {backend} {workload}", "INFO",
               f"best {best:.4f}s, {samples / best / 1e6:.2f} M samples/s, "
               f"{1e6 * best / steps:.1f} us/step", kind="throughput", backend=backend,
               workload=workload, n=len(X), batch=batch, steps=steps, best_s=best,
               median_s=statistics.median(times), samples_per_s=samples / best,
               us_per_step=1e6 * best / steps)
    del run
    torch.cuda.empty_cache()


def x_torch(ctx: Ctx) -> None:
    """The PyTorch CUDA-graph peer: fresh gradients per replay; eager and graph epochs."""
    if ctx.simulate:
        ctx.record("torch", "SKIP", "not under the simulator")
        return
    wl = _workloads_module()
    reason = wl.torch_cuda_reason()
    if reason:
        ctx.record("torch", "SKIP", reason)
        return
    attempt(ctx, "torch graph fresh gradient", _torch_fresh_gradient, ctx, wl)
    for workload in ("linear-mbgd-256", "mlp-256"):
        for graph in (False, True):
            attempt(ctx, f"torch {workload} {'graph' if graph else 'eager'}",
                    _torch_epochs, ctx, wl, workload, graph)


EXTRAS = {"limits": x_limits, "throughput": x_throughput, "agreement": x_agreement,
          "toggles": x_toggles, "memory": x_memory, "oom": x_oom, "torch": x_torch}


# ============================================================================ commands
def usable_gpu_backends() -> tuple[list[str], str]:
    """The GPU backends fastgd can use here, and why the others cannot."""
    import fastgd as fg

    status = fg.backends.describe()
    usable = [b for b in GPU_BACKENDS if status.get(b) is None]
    why = "; ".join(f"{b}: {status.get(b)}" for b in GPU_BACKENDS if status.get(b))
    return usable, why


def cmd_extras(args) -> int:
    """Run the selected extras; 0 whatever they found (the rows say it)."""
    ctx = Ctx(Path(args.out), scale=args.scale, simulate=args.simulate)
    only = [x for x in (args.only or "").split(",") if x]
    unknown = set(only) - set(EXTRAS)
    if unknown:
        print(f"unknown extras {sorted(unknown)}; known: {', '.join(EXTRAS)}", file=sys.stderr)
        return 2
    if not args.dry_run:
        ctx.gpu, ctx.why = usable_gpu_backends()
    if ctx.simulate:  # one Python thread per simulated CUDA thread: few of them
        from fastgd.backends import numba_cuda
        from fastgd.kernels import device_tables

        numba_cuda.THREADS = 8
        device_tables.TARGET_TILES, device_tables.MAX_BLOCKS = 2, 4
    print(f"extras: GPU backends {ctx.gpu or 'none'}; scale {ctx.scale}"
          + (f"; unusable: {ctx.why}" if ctx.why else ""), flush=True)
    if not ctx.gpu and not args.dry_run:
        ctx.record("gpu", "SKIP", f"no GPU backend is usable: {ctx.why}")
    todo = [name for name in EXTRAS if not only or name in only]
    for i, name in enumerate(todo):
        fn = EXTRAS[name]
        if args.dry_run:
            ctx.record(name, "SKIP", "dry run: " + (fn.__doc__ or "").strip().splitlines()[0])
            continue
        if not ctx.gpu:
            ctx.record(name, "SKIP", "no GPU")
            continue
        t = time.perf_counter()
        try:
            attempt(ctx, name, fn, ctx)
        except KeyboardInterrupt:  # the stage's time limit (SIGINT): say what did not run
            ctx.record(name, "ERROR", f"interrupted after {time.perf_counter() - t:.0f}s "
                       "(the stage's time limit)")
            for rest in todo[i + 1:]:
                ctx.record(rest, "SKIP", "not run: out of time")
            return 130
        print(f"    ({name}: {time.perf_counter() - t:.1f}s)", flush=True)
    if not ctx.rows:
        ctx.record("extras", "SKIP", "nothing selected")
    return 0


def _version(mod: str) -> str:
    try:
        return str(getattr(importlib.import_module(mod), "__version__", "?"))
    except Exception as exc:  # noqa: BLE001 - missing or broken: both are the answer
        return f"missing ({type(exc).__name__})"


def _device_info() -> dict | str:
    """Name, compute capability, SMs, memory and shared-memory limits of device 0 (through
    CuPy, else numba-cuda), or why none could be read."""
    try:
        import cupy

        p = cupy.cuda.runtime.getDeviceProperties(0)
        name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
        return {"name": name, "cc": f"{p['major']}.{p['minor']}",
                "sms": p.get("multiProcessorCount"), "memory_bytes": p.get("totalGlobalMem"),
                "shared_per_block_optin": p.get("sharedMemPerBlockOptin"),
                "shared_per_sm": p.get("sharedMemPerMultiprocessor"),
                "l2_bytes": p.get("l2CacheSize"), "via": "cupy"}
    except Exception as exc:  # noqa: BLE001
        first = f"cupy: {type(exc).__name__}: {str(exc)[:100]}"
    try:
        from numba import cuda

        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        return {"name": name, "cc": ".".join(map(str, dev.compute_capability)),
                "sms": dev.MULTIPROCESSOR_COUNT, "via": "numba-cuda"}
    except Exception as exc:  # noqa: BLE001
        return f"unavailable ({first}; numba: {type(exc).__name__}: {str(exc)[:100]})"


def tree_digest() -> str:
    """A short hash of the GPU code this run checks (kernels, backends, benchmarking,
    this script), to tie results to a tree when git is not at hand."""
    h = hashlib.sha256()
    files = sorted([*REPO.glob("kernels/**/*.py"), *REPO.glob("kernels/cu/*"),
                    *REPO.glob("fastgd/backends/*.py"), REPO / "fastgd/benchmarking.py",
                    REPO / "bench/gpu_extras.py", REPO / "bench/gpu_check.sh"])
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def _torch_cuda() -> tuple[bool, str]:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return False, f"torch is not importable ({type(exc).__name__})"
    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA device"
    return True, f"torch CUDA {torch.version.cuda}"


def cmd_env(args) -> int:
    """Versions, the backends' status, the device; ``flags.env`` for the shell script."""
    out = Path(args.out)
    info = {"python": platform.python_version(), "executable": sys.executable,
            "platform": platform.platform(), "git": os.environ.get("GPU_CHECK_GIT", "?"),
            "tree": tree_digest()}
    for mod in ("numpy", "numba", "numba_cuda", "cupy", "torch", "pytest", "pytest_benchmark",
                "cuda.bindings"):
        info[mod] = _version(mod)
    usable, why = [], "fastgd is not importable"
    try:
        import fastgd as fg

        info["fastgd"] = fg.__file__
        info["backends"] = fg.backends.describe()
        usable, why = usable_gpu_backends()
    except Exception as exc:  # noqa: BLE001 - the setup stage's failure, reported here
        info["fastgd"] = f"import failed: {type(exc).__name__}: {exc}"
        why = info["fastgd"]
    info["device"] = _device_info()
    torch_ok, torch_why = _torch_cuda()
    info["torch_cuda"] = torch_why
    (out / "env.json").write_text(json.dumps(info, indent=1, default=str))
    print(json.dumps(info, indent=1, default=str))
    status = info.get("backends", {})
    flags = {"NUMBA_CUDA_OK": int("numba-cuda" in usable), "CUPY_OK": int("cupy" in usable),
             "TORCH_CUDA_OK": int(torch_ok),
             "NUMBA_CUDA_WHY": status.get("numba-cuda") or why,
             "CUPY_WHY": status.get("cupy") or why, "TORCH_WHY": torch_why}
    (out / "flags.env").write_text("".join(f"{k}={shlex.quote(str(v))}\n"
                                           for k, v in flags.items()))
    print(f"usable: numba-cuda={flags['NUMBA_CUDA_OK']} cupy={flags['CUPY_OK']} "
          f"torch-cuda={flags['TORCH_CUDA_OK']}")
    return 0


# ============================================================================ summary
def _junit(path: Path) -> str | None:
    """``N passed, N failed, ...`` of a JUnit XML file and its first failures."""
    if not path.exists():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return f"unreadable JUnit XML ({exc})"
    suites = [root] if root.tag == "testsuite" else list(root)
    c = {k: sum(int(s.get(k, 0)) for s in suites)
         for k in ("tests", "failures", "errors", "skipped")}
    failed = [tc.get("name") for s in suites for tc in s.iter("testcase")
              if tc.find("failure") is not None or tc.find("error") is not None]
    text = (f"{c['tests'] - c['failures'] - c['errors'] - c['skipped']} passed, "
            f"{c['failures']} failed, {c['errors']} errors, {c['skipped']} skipped")
    if failed:
        text += " [" + ", ".join(failed[:4]) + (" ..." if len(failed) > 4 else "") + "]"
    return text


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()
                 if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:100] if lines else ""


def _stage_rows(out: Path) -> list[list[str]]:
    """The stages' rows (``stages/NN-name.tsv``: name, status, seconds, note), in start
    order, each with its result."""
    rows = []
    for f in sorted((out / "stages").glob("*.tsv")):
        name, status, secs, note = (f.read_text().rstrip("\n").split("\t") + [""] * 4)[:4]
        result = note or _junit(out / f"{name}.xml")
        if not result and name == "extras" and (out / "extras.json").exists():
            st = [r["status"] for r in json.loads((out / "extras.json").read_text())]
            result = ", ".join(f"{st.count(k)} {k}" for k in
                               ("PASS", "FAIL", "ERROR", "INFO", "SKIP") if st.count(k))
        result = (result or _last_line(out / f"{name}.log")).replace("|", "/")
        rows.append([name, status, secs, result[:160]])
    return rows


def _table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]


def _num(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _figures(rows: list[dict]) -> list[str]:
    """The throughput rows as one table."""
    figs = [r for r in rows if r.get("kind") == "throughput"]
    if not figs:
        return []
    body = [[r["backend"], r["workload"], r.get("n", ""), r.get("steps", ""),
             _num(r.get("launches_per_step"), ".2f"), _num(r.get("prepare_s"), ".2f"),
             _num(r.get("compile_s"), ".2f"), _num(r.get("first_epoch_s"), ".3f"),
             _num(r.get("best_s"), ".4f"), _num(r.get("samples_per_s", 0) / 1e6, ".2f"),
             _num(r.get("us_per_step"), ".1f"),
             _num(None if r.get("read_fraction") is None else 100 * r["read_fraction"], ".1f")]
            for r in figs]
    return ["## Figures (extras, float32, best of 3 epochs after the first)", "",
            *_table(["backend", "workload", "n", "steps", "launches/step", "prepare s",
                     "compile s", "1st epoch s", "best epoch s", "M samples/s", "us/step",
                     "% read limit"], body),
            "", "compile s: the warm-up's; the first row of a model on a backend compiles "
            "cold (CuPy: an empty kernel cache), later rows reuse it.", ""]


def _toggle_table(rows: list[dict]) -> list[str]:
    togs = [r for r in rows if r.get("kind") == "toggle"]
    if not togs:
        return []
    body = [[r["constant"], r["backend"], r["workload"], f"{r['a']} / {r['b']}",
             f"{1e3 * r['a_s']:.2f} / {1e3 * r['b_s']:.2f}", f"{r['b_s'] / r['a_s']:.2f}",
             "equal" if r["bitwise"] else f"differ ({r['max_rel']:.1e})", r["status"]]
            for r in togs]
    return ["## A/B toggles (same seed; ms per epoch, best of 3)", "",
            *_table(["constant", "backend", "workload", "A / B", "ms A / B", "B/A", "bits",
                     "check"], body), ""]


def _bench_table(out: Path) -> list[str]:
    path = out / "bench-smoke.json"
    if not path.exists():
        return []
    try:
        benches = json.loads(path.read_text()).get("benchmarks", [])
    except (OSError, ValueError):
        return []
    body = []
    for b in benches:
        e, s = b.get("extra_info", {}), b.get("stats", {})
        body.append([b["name"][:60], _num(1e3 * s.get("mean", math.nan), ".2f"),
                     _num(e.get("samples_per_s", math.nan) / 1e6, ".2f"),
                     _num(e.get("fraction_of_read_bw"), ".3f")])
    return ["## bench/test_gpu.py at quick size (a smoke test: it ran beside the test "
            "stages, so these are not figures)", "",
            *_table(["benchmark", "mean ms", "M samples/s", "fraction of read"], body), ""]


def cmd_summary(args) -> int:
    """Print the summary (stage table last) and write it to ``summary.md``."""
    out = Path(args.out)
    env = {}
    if (out / "env.json").exists():
        env = json.loads((out / "env.json").read_text())
    rows = json.loads((out / "extras.json").read_text()) if (out / "extras.json").exists() else []
    dev = env.get("device")
    gpu = dev.get("name") if isinstance(dev, dict) else _last_line(out / "gpu.log") or "none"
    lines = [f"# fastgd GPU check, {time.strftime('%Y-%m-%d %H:%M %Z')}", "",
             f"GPU: {gpu}" + (f" (cc {dev.get('cc')}, {dev.get('sms')} SMs)"
                              if isinstance(dev, dict) else ""),
             f"git {env.get('git', '?')}, tree {env.get('tree', '?')}; numba "
             f"{env.get('numba', '?')}, numba-cuda {env.get('numba_cuda', '?')}, cupy "
             f"{env.get('cupy', '?')}, torch {env.get('torch', '?')} "
             f"({env.get('torch_cuda', '?')}); Python {env.get('python', '?')}", ""]
    lines += _figures(rows) + _toggle_table(rows)
    checks = [r for r in rows if r.get("kind") not in ("throughput", "toggle")]
    if checks:
        lines += ["## Checks (extras)", "",
                  *_table(["status", "check", "detail"],
                          [[r["status"], r["check"], r["detail"][:180].replace("|", "/")]
                           for r in checks]), ""]
    lines += _bench_table(out)
    budget = os.environ.get("GPU_CHECK_BUDGET_LINE", "")
    lines += ["## Stages" + (f" ({budget})" if budget else ""), "",
              *_table(["stage", "status", "s", "result"], _stage_rows(out)), "",
              f"All files: {out}"]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text, end="")
    return 0


# ============================================================================ main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="extras", choices=("env", "extras", "summary"),
                   help="default: extras")
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="output folder")
    p.add_argument("--only", default=os.environ.get("GPU_CHECK_EXTRAS", ""),
                   help=f"comma-separated extras ({', '.join(EXTRAS)}); default all")
    p.add_argument("--scale", type=float, default=float(os.environ.get("GPU_CHECK_SCALE", 1)),
                   help="scale the data sizes (default 1)")
    p.add_argument("--dry-run", action="store_true", help="record every extra as SKIP, "
                   "touch no device")
    p.add_argument("--simulate", action="store_true", help="numba-cuda on the CUDA "
                   "simulator at tiny sizes (a test of this file, not figures)")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    # the simulator switched on from outside (it is read once, at numba's first import)
    args.simulate = args.simulate or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    if args.simulate:  # before anything imports numba
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        os.environ["FASTGD_ALLOW_CUDASIM"] = "1"
        if args.scale == 1:
            args.scale = 1e-6  # 64 rows
    return {"env": cmd_env, "extras": cmd_extras, "summary": cmd_summary}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
