"""CuPy backend: the kernels of ``kernels/cu/dense.cu`` (CUDA C++, compiled by NVRTC through
``cupy.RawModule``), data, parameters and scratch on the GPU for the whole fit.

The same design as the ``numba-cuda`` backend: each step is two launches (per-block
gradient sums, then one fused reduce-and-update of the flat parameters and the optimizer
state, ``kernels/cu/optim.cuh``) queued on the current stream without host
synchronisation; the epoch's per-step learning rates and order table are written to small
device arrays when a ``run_epoch`` call starts, the optimizer's hyper-parameters once. Every
step also adds its batch loss (``grad_step`` sums its rows' losses per block from the
forward pass; thread 0 of the update adds the blocks in order) to a float64 device array of
2 that ``epoch_loss`` reads: no launch of its own. With ``plan.track_noise`` a step of at
least two rows is three launches (``grad_norms``, ``opt_update_noise``, ``noise_step``: the
per-example gradient norms, the gradient's squares, the step's noise estimates added to a
device array that ``epoch_noise`` reads); without it nothing of that is launched. Results
are bitwise reproducible (fixed-order sums, no atomics) and match the reference to float
rounding.

Limitation: ``fastgd.fit`` validates inputs into NumPy arrays, so the data are copied to
the device once in :meth:`CupyBackend.prepare`; CuPy arrays passed to ``fit`` are not used
in place (``prepare`` itself accepts CuPy arrays of the right dtype and uses them in place).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import cupy
import numpy as np

from ..kernels import cupy_module as cm
from ..kernels import noise
from .base import BaseBackend
from .gpu_launch import launch_blocks, out_of_memory

# Threads per block (a power of two, <= cm.MAX_THREADS) and the most blocks a launch uses;
# fixed (not read from the device) so results are the same on every GPU.
THREADS = 128
MAX_BLOCKS = 256


class _PeakHook(cupy.cuda.MemoryHook):
    """Keeps the running maximum of the default pool's used bytes (after every malloc and
    free made while the hook is active)."""

    def __init__(self, name: str):
        self.name = name
        self.peak = 0

    def note(self) -> None:
        """Fold the pool's current used bytes into the peak."""
        self.peak = max(self.peak, int(cupy.get_default_memory_pool().used_bytes()))

    def malloc_postprocess(self, *args, **kwargs) -> None:
        """After an allocation from the pool."""
        self.note()

    def free_postprocess(self, *args, **kwargs) -> None:
        """After memory went back to the pool."""
        self.note()


def _device_array(a, dtype) -> cupy.ndarray:
    """``a`` on the device as a C-contiguous ``dtype`` array (CuPy input kept in place)."""
    return cupy.ascontiguousarray(cupy.asarray(a, dtype=dtype))


class CupyBackend(BaseBackend):
    """Whole fit on the GPU through hand-written CUDA kernels; Python launches, never waits."""

    name = "cupy"
    on_device = True

    def prepare(self, plan, X, Y, theta0):
        """Place the data and parameters on the device and allocate every buffer once.

        Raises ``MemoryError`` (naming the batch size) when the device is out of memory.
        """
        self.plan, self.X, self.Y = plan, X, Y
        self.threads = THREADS
        self.dtype = np.dtype(plan.dtype)
        self._hook = _PeakHook(f"fastgd-cupy-peak-{id(self)}")
        self._base = int(cupy.get_default_memory_pool().used_bytes())
        self._hook.peak = self._base
        lay, self.width = cm.layout(plan.sizes)
        self.n_layers = len(lay)
        self.blocks = launch_blocks(THREADS, MAX_BLOCKS, len(X))
        self.steps_done = 0
        try:
            with self._hook:
                self.kernels = cm.build(self.dtype, plan.loss, plan.activation)
                self.dX, self.dY = _device_array(X, self.dtype), _device_array(Y, self.dtype)
                self.theta = cupy.asarray(np.asarray(theta0, dtype=self.dtype))
                self.opt_state = cupy.asarray(plan.optimizer.init_state(plan.n_params,
                                                                        self.dtype))
                self.lay = cupy.asarray(lay)
                self.scratch = cupy.empty((self.blocks * THREADS, 2 * self.width), self.dtype)
                self.partial = cupy.empty((self.blocks, plan.n_params), self.dtype)
                self.sums = cupy.empty(self.blocks, np.float64)
                self.hyper = cupy.asarray(plan.optimizer.hyper())
                self.lrs = cupy.zeros(max(2, plan.steps_per_epoch(len(X))), np.float64)
                # the epoch's order table (_set_epoch writes each epoch's at its start)
                self.perm = cupy.asarray(cm.perm_capacity(plan, len(X)))
                self.identity = cupy.asarray(cm.perm_table())  # exact_noise: in order
                # gradient noise: per-block float64 sums of |g_i|^2 (gradient launches) and
                # of the gradient's squares (update launches), the sums of the estimates
                self.update_blocks = -(-plan.n_params // THREADS)  # one thread per parameter
                self.sq_blocks = cupy.zeros(self.blocks, np.float64)
                self.gsq_blocks = cupy.zeros(self.update_blocks, np.float64)
                self.noise = cupy.zeros(3, np.float64)
                # the batch losses: per-block float64 sums of a step's row losses (gradient
                # launches) and the sums (loss times rows, rows) of the steps (epoch_loss)
                self.loss_blocks = cupy.zeros(self.blocks, np.float64)
                self.losses = cupy.zeros(2, np.float64)
        except cupy.cuda.memory.OutOfMemoryError as exc:
            raise out_of_memory(self.name, plan, len(X), self.blocks * THREADS) from exc
        self._val = None

    def memory(self) -> int:
        """Peak bytes of CuPy's default pool in use during ``prepare`` and the epochs, above
        the pool's use before ``prepare`` (this backend's own device allocations)."""
        return max(0, self._hook.peak - self._base)

    # ------------------------------------------------------------------ epochs
    def _set_epoch(self, epoch: int, lrs: np.ndarray, n: int) -> None:
        p = self.plan
        self.lrs[: len(lrs)].set(lrs)
        table = cm.perm_table(p.seed, epoch, n, p.shuffle, p.block_rows)
        self.perm[:len(table)].set(table)

    def _steps(self, X, Y, theta, state, plan, n: int, start: int, stop: int, step0: int,
               losses, noise_sums=None) -> None:
        """Queue steps ``start .. stop`` of one epoch of ``plan`` over the first ``n`` rows
        (no synchronisation); step ``s`` is global step ``step0 + s + 1`` with learning
        rate ``lrs[s]``. Every step adds (its mean batch loss times its rows, its rows) to
        ``losses`` (a float64 device array of 2). With ``noise_sums`` (a float64 device
        array of 3) a step of at least two rows also adds its noise estimates there."""
        k, threads, n_params = self.kernels, self.threads, plan.n_params
        update_blocks = self.update_blocks
        code, i64, f64 = np.int32(plan.optimizer.code), np.int64, np.float64
        steps = itertools.islice(enumerate(plan.batches(n)), start, stop)
        for step, (first, rows, scale) in steps:
            blocks = min(self.blocks, -(-rows // threads))
            grad = (X, Y, theta, self.perm, self.lay, i64(self.n_layers), self.scratch,
                    self.partial, i64(n), i64(X.shape[1]), i64(Y.shape[1]), i64(n_params),
                    i64(self.width), i64(first), i64(rows), self.dtype.type(scale),
                    self.loss_blocks)
            # the blocks' loss sums times scale * rows: the batch mean times its rows
            update = (theta, state, self.partial, i64(blocks), i64(n_params), self.hyper,
                      self.lrs, code, i64(step), i64(step0 + step + 1), self.loss_blocks,
                      f64(scale * rows), f64(rows), losses)
            if noise_sums is None or rows < 2:
                k.grad_step((blocks,), (threads,), grad)
                k.opt_update((update_blocks,), (threads,), update)
                continue
            # the deltas carry the batch scale 1/rows of the own-loss scale: |g_i|^2 * rows^2
            k.grad_norms((blocks,), (threads,), (*grad, f64(rows * rows), self.sq_blocks))
            k.opt_update_noise((update_blocks,), (threads,), (*update, self.gsq_blocks))
            k.noise_step((1,), (threads,), (self.sq_blocks, i64(blocks), self.gsq_blocks,
                                            i64(update_blocks), i64(rows), i64(len(self.X)),
                                            noise_sums))

    def warmup(self) -> None:
        """Run every kernel on two rows (loading the compiled module), leaving parameters,
        state, noise and batch-loss sums untouched (with ``track_noise``, the tracked step's
        kernels too)."""
        n = min(2, len(self.X))
        track = self.plan.track_noise
        with self._hook:
            theta, state = self.theta.copy(), self.opt_state.copy()
            sums, losses = cupy.zeros(3, np.float64), cupy.zeros(2, np.float64)
            self._set_epoch(0, np.zeros(2), n)
            for b in (1, 2) if track else (1,):
                plan = dataclasses.replace(self.plan, batch_size=b, drop_last=False)
                self._steps(self.dX[:n], self.dY[:n], theta, state, plan, n, 0,
                            plan.steps_per_epoch(n), 0, losses, sums if track else None)
            self._loss(self.dX[:n], self.dY[:n])
            del theta, state, sums, losses
        self.synchronize()

    def run_epoch(self, epoch: int, lrs, start: int = 0, stop: int | None = None) -> None:
        """Queue steps ``start .. stop`` (default all) of epoch ``epoch``: two launches per
        step (three for a tracked step), no host synchronisation."""
        lrs, start, stop = self.check_rates(lrs, start, stop)
        with self._hook:
            self._set_epoch(epoch, lrs, len(self.X))
            self._steps(self.dX, self.dY, self.theta, self.opt_state, self.plan, len(self.X),
                        start, stop, self.steps_done - start, self.losses,
                        self.noise if self.plan.track_noise else None)
        self.steps_done += stop - start
        self._hook.note()

    def load(self, theta, state, steps_done) -> None:
        """Set the parameters (flat, public layout), the optimizer state and the step
        counter (copies to the device, in stream order with queued work)."""
        theta, state, self.steps_done = self.check_load(theta, state, steps_done)
        self.theta.set(theta)
        if state.size:
            self.opt_state.set(state)

    def epoch_noise(self) -> np.ndarray:
        """float64 ``[sum of tr(Sigma) estimates, sum of |G|^2 estimates, steps]`` of the
        tracked steps since the last call (copied from the device, then reset there);
        zeros without ``plan.track_noise`` (nothing is read from the device)."""
        if not self.plan.track_noise:
            return np.zeros(3, np.float64)
        out = self.noise.get()
        self.noise.fill(0)
        return out

    def loss_sums(self) -> np.ndarray:
        """A host copy of the device's batch-loss sums (sum of batch losses times rows,
        rows) since the last ``epoch_loss`` (waits for the queued steps)."""
        return self.losses.get()

    def reset_loss_sums(self) -> None:
        """Zero the device's batch-loss sums (``epoch_loss``, shared, reads them first)."""
        self.losses.fill(0)

    def exact_noise(self, X, Y) -> tuple[float, float]:
        """``(S, |G|^2)`` at the current parameters over ``(X, Y)`` (training data used in
        place, like :meth:`loss`): one ``grad_norms`` pass in order with the own-loss scale
        (per-block sums of the own gradients and of their float64 squared norms), then
        ``grad_sq`` (per-block float64 sums of the summed gradient's squares); the blocks'
        sums are added on the host in block order."""
        dX, dY = self._device_data(X, Y)
        p, n, i64 = self.plan, dX.shape[0], np.int64
        blocks = min(self.blocks, -(-n // self.threads))
        own = noise.own_scale(p.loss, p.sizes[-1])
        self.kernels.grad_norms((blocks,), (self.threads,), (
            dX, dY, self.theta, self.identity, self.lay, i64(self.n_layers), self.scratch,
            self.partial, i64(n), i64(dX.shape[1]), i64(dY.shape[1]), i64(p.n_params),
            i64(self.width), i64(0), i64(n), self.dtype.type(own), self.loss_blocks,
            np.float64(1.0), self.sq_blocks))
        self.kernels.grad_sq((self.update_blocks,), (self.threads,), (
            self.partial, i64(blocks), i64(p.n_params), self.gsq_blocks))
        sq = math.fsum(self.sq_blocks[:blocks].get())
        gsq = math.fsum(self.gsq_blocks.get())
        return sq / n, gsq / (float(n) * float(n))

    def synchronize(self) -> None:
        """Wait until the queued work is done (``fit`` calls it before stopping the clock)."""
        cupy.cuda.get_current_stream().synchronize()

    # ------------------------------------------------------------------ loss and params
    def _loss(self, dX, dY) -> float:
        n = dX.shape[0]
        blocks = min(self.blocks, -(-n // self.threads))
        i64 = np.int64
        self.kernels.loss_sum((blocks,), (self.threads,), (
            dX, dY, self.theta, self.lay, i64(self.n_layers), self.scratch, self.sums, i64(n),
            i64(dX.shape[1]), i64(dY.shape[1]), i64(self.width)))
        total = math.fsum(self.sums[:blocks].get())
        per = n if self.plan.loss == "softmax" else n * self.plan.sizes[-1]
        return total / per

    def _device_data(self, X, Y):
        """``(X, Y)`` on the device: the training data already there, other arrays
        (validation) copied once and kept while the caller passes the same ones."""
        if X is self.X and Y is self.Y:
            return self.dX, self.dY
        if self._val is None or self._val[0] is not X or self._val[1] is not Y:
            with self._hook:
                self._val = (X, Y, _device_array(X, self.dtype), _device_array(Y, self.dtype))
        return self._val[2], self._val[3]

    def loss(self, X, Y) -> float:
        """Mean loss over a whole data set: the training data already on the device, other
        arrays (validation) copied once and kept while the caller passes the same ones."""
        return self._loss(*self._device_data(X, Y))

    def params(self) -> np.ndarray:
        """A copy of the flat parameter vector (host)."""
        return self.theta.get()

    def state(self) -> np.ndarray:
        """A copy of the optimizer state (host)."""
        return self.opt_state.get()
