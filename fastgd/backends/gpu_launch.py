"""What the GPU backends (``numba_cuda``, ``cupy_backend``) share: the block-size rule, the
device buffers a run places (the memory model, :func:`buffer_bytes`), the count of a
backend's own device bytes (:class:`DeviceBytes`) and the out-of-memory error. Each backend
keeps its own ``THREADS`` constant (tests shrink it); the rules applied to it live here
once. The launch decomposition itself is ``kernels/device_tables.py``'s."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from ..kernels.device_tables import (
    MAX_THREADS,
    fused_step,
    launch_shape,
    max_blocks,
    perm_capacity,
    perm_table,
)


def check_threads(threads: int) -> int:
    """``threads`` after checking it is a power of two the kernels can be launched with
    (the shared-memory tree needs a power of two of at most ``MAX_THREADS``, whose size it
    has; more threads would need more registers than a block has: the compile test in
    tests/test_cuda_compile.py checks registers x THREADS against the limit)."""
    if threads & (threads - 1) or not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"THREADS must be a power of two <= {MAX_THREADS}; got {threads}")
    return threads


class StepLaunch(NamedTuple):
    """How one step of an epoch is launched, the same for both GPU backends: the step's
    index, first position, rows, loss scale (a scalar of the parameters' dtype) and batch
    loss weight (``float64(scale) * rows``, as the one-launch step computes it),
    ``device_tables.launch_shape``'s blocks, tile rows, shared bytes and parameters in
    shared memory, and its ``form``: ``"step"`` (one launch), ``"two"`` (``grad_blocks``
    then ``update_params``: the same sums, the same bits) or ``"noise"`` (tracked)."""

    step: int
    first: int
    rows: int
    scale: np.floating
    weight: float
    blocks: int
    tile: int
    shared: int
    wsh: bool
    form: str


def step_launches(plan, n: int, start: int, stop: int, tracked: bool,
                  fused: bool | None = None):
    """The :class:`StepLaunch` of steps ``start .. stop`` of an epoch of ``plan`` over ``n``
    rows; ``tracked``: steps of at least two rows track gradient noise; ``fused`` forces
    one launch (True) or two (False) for the untracked steps (default:
    ``device_tables.fused_step``)."""
    width, item = int(sum(plan.sizes)), np.dtype(plan.dtype).itemsize
    for step, (first, rows, scale) in itertools.islice(enumerate(plan.batches(n)), start,
                                                       stop):
        blocks, tile, shared, wsh = launch_shape(width, item, rows, plan.n_params)
        scale = np.dtype(plan.dtype).type(scale)
        if tracked and rows >= 2:
            form = "noise"
        elif fused_step(blocks, plan.n_params) if fused is None else fused:
            form = "step"
        else:
            form = "two"
        yield StepLaunch(step, first, rows, scale, float(scale) * rows, blocks, tile, shared,
                         wsh, form)


def buffer_bytes(plan, n: int, n_val: int = 0, threads: int = 128) -> dict[str, int]:
    """The device bytes a GPU run of ``plan`` on ``n`` training rows (``n_val`` validation
    rows) allocates, by buffer, exactly as the backends allocate them (blocks of
    ``threads``): a plain name is held from ``prepare`` to the end, ``"warmup.<name>"`` a
    copy the warm-up holds (freed before the epochs), ``"val.<name>"`` the validation
    data's copy (made at the first validation loss). No buffer grows with the batch size
    but the per-step learning rates (8 bytes a step)."""
    item = np.dtype(plan.dtype).itemsize
    width = int(sum(plan.sizes))
    params = plan.n_params
    blocks = max_blocks(width, item, n, params)
    y_width = 1 if plan.loss == "softmax" else plan.sizes[-1]
    state = plan.optimizer.state_bytes(params, plan.dtype)
    out = {
        "X": n * plan.sizes[0] * item,
        "Y": n * y_width * item,
        "theta": params * item,
        "opt_state": state,
        "layer table": 6 * 8 * (len(plan.sizes) - 1),
        "partial": blocks * params * item,
        "block counter": 4,
        "hyper": plan.optimizer.hyper().nbytes,
        "lrs": 8 * max(2, plan.steps_per_epoch(n)),
        "t0": 8,
        "order tables": perm_capacity(plan, n).nbytes + perm_table().nbytes,
        "block sums": 8 * (2 * blocks + -(-params // threads)),
        "loss and noise sums": 8 * (2 + 3),
        "warmup.theta": params * item,
        "warmup.opt_state": state,
        "warmup.sums": 8 * (2 + 3),
    }
    if n_val:
        out["val.X"] = n_val * plan.sizes[0] * item
        out["val.Y"] = n_val * y_width * item
    return out


def peak_bytes(buffers: dict[str, int]) -> int:
    """The peak of :func:`buffer_bytes`: what is held, plus the larger of the warm-up's
    copies and the validation data (the warm-up frees its copies before any epoch)."""
    held = sum(v for k, v in buffers.items() if "." not in k)
    phase = {p: sum(v for k, v in buffers.items() if k.startswith(p + "."))
             for p in ("warmup", "val")}
    return held + max(phase.values())


# The device arrays a GPU backend's ``prepare`` allocates (attribute names; their sizes are
# :func:`buffer_bytes`'s).
BUFFERS = ("dX", "dY", "theta", "opt_state", "lay", "partial", "counter", "hyper", "lrs", "t0",
           "perm", "identity", "loss_blocks", "sq_blocks", "gsq_blocks", "losses", "noise")


class DeviceMemoryModel:
    """The memory model of a GPU backend (a mixin; the backend states ``block_threads()``):
    the few host arrays of a run and its device buffers, for ``fastgd.measure``."""

    @classmethod
    def workspace(cls, plan, n: int, n_val: int) -> dict[str, int]:
        """The host arrays of a run: each epoch's order table and learning rates, made on
        the host and copied to the device (everything else lives on the device:
        :meth:`device_buffers`)."""
        return {"shuffle.order_table": perm_capacity(plan, n).nbytes,
                "lrs": 8 * max(2, plan.steps_per_epoch(n))}

    @classmethod
    def device_buffers(cls, plan, n: int, n_val: int) -> dict[str, int]:
        """The device bytes of a run by buffer (:func:`buffer_bytes`)."""
        return buffer_bytes(plan, n, n_val, cls.block_threads())

    def set_data(self, X, Y) -> None:
        """Train on ``(X, Y)`` from now on: the run is placed again for the new rows (every
        buffer is sized by them) with the parameters, optimizer state and step counter
        carried over; the kernels are already compiled. ``memory()`` keeps its peak."""
        theta, state, steps, peak = self.params(), self.state(), self.steps_done, \
            self.bytes.peak
        self.prepare(self.plan, X, Y, theta)
        self.load(theta, state, steps)
        self.bytes.peak = max(self.bytes.peak, peak)


class DeviceBytes:
    """A backend's own live device bytes and their running peak: every device array it
    allocates is added, and removed when it lets it go (the same figure on every backend,
    unlike a device-wide reading, which sees other processes and allocators' caches)."""

    def __init__(self):
        self.live = self.peak = 0

    def add(self, *arrays) -> None:
        """Count ``arrays`` as allocated now."""
        self.live += sum(int(a.nbytes) for a in arrays)
        self.peak = max(self.peak, self.live)

    def remove(self, *arrays) -> None:
        """Count ``arrays`` as freed."""
        self.live -= sum(int(a.nbytes) for a in arrays)


def _size(nbytes: int) -> str:
    """``nbytes`` in MiB, or KiB below one MiB."""
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.1f} KiB"


def refuse_sample_weights(backend: str, plan, Y) -> None:
    """The GPU kernels read no sample weights: a clear error when ``Y`` carries them."""
    n_targets = 1 if plan.loss == "softmax" else plan.sizes[-1]
    if Y.shape[1] > n_targets:
        raise ValueError(f"sample_weight runs on the 'numpy' and 'numba-cpu' backends; the "
                         f"{backend} kernels read no weights")


def out_of_memory(backend: str, plan, n: int, what: str = "placing the run",
                  n_val: int = 0, threads: int = 128) -> MemoryError:
    """The error a GPU backend raises when the device is out of memory while ``what``
    (its blocks of ``threads``)."""
    need = buffer_bytes(plan, n, n_val, threads)
    big = sorted(need.items(), key=lambda kv: -kv[1])[:4]
    parts = ", ".join(f"{k} {_size(v)}" for k, v in big)
    return MemoryError(
        f"{backend}: the GPU is out of memory {what} ({n} samples x {plan.sizes[0]} "
        f"features, a {plan.sizes} network; the run needs about "
        f"{_size(peak_bytes(need))} at its peak; largest: {parts}). The batch "
        "size does not change "
        "this (no device buffer grows with it): use fewer samples (or a memory-mapped file "
        "on the CPU), smaller layers or float32, free other GPU memory, or use "
        "backend='numba-cpu'")
