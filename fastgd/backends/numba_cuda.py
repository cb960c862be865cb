"""Numba-CUDA backend: data, parameters and scratch stay on the GPU for the whole fit.

Each step is two kernel launches from ``fastgd.kernels.cuda`` (per-block gradient sums, then
one fused reduce-and-update of the flat parameters and the optimizer state), queued without
host synchronisation or copies; the epoch's per-step learning rates and its order table are
written to small device arrays when a ``run_epoch`` call starts, the optimizer's
hyper-parameters once. Every step also adds its batch loss (from the gradient launch's
forward pass, summed per block; thread 0 of the update adds the blocks in order) to a
float64 device array of 2 that ``epoch_loss`` reads: no launch of its own. With
``plan.track_noise`` a step of at least two rows is three launches (the gradient pass also
sums its rows' per-example gradient norms, the update also the gradient's squares, and one
block adds the step's noise estimates to a device array that ``epoch_noise`` reads);
without it nothing of that is launched.
Results are bitwise reproducible (every sum in a fixed order, no atomics) and match the
reference to float rounding.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numba
import numpy as np
from numba import cuda

from ..kernels import noise
from ..kernels.cuda import dense
from .base import BaseBackend
from .gpu_launch import launch_blocks, out_of_memory

# Threads per block (a power of two, <= dense.MAX_THREADS) and the most blocks a launch
# uses. Both are fixed (not read from the device) so results are the same on every GPU.
THREADS = 128
MAX_BLOCKS = 256


def _simulated() -> bool:
    return bool(numba.config.ENABLE_CUDASIM)


def _is_out_of_memory(exc: BaseException) -> bool:
    code = getattr(exc, "code", None)
    try:
        if code is not None and int(code) == 2:  # CUDA_ERROR_OUT_OF_MEMORY
            return True
    except (TypeError, ValueError):
        pass
    return "OUT_OF_MEMORY" in str(exc).upper()


def _cuda_api_error() -> type[BaseException]:
    try:
        from numba.cuda.cudadrv.driver import CudaAPIError
    except ImportError:  # pragma: no cover - very old numba-cuda
        return RuntimeError
    return CudaAPIError


class NumbaCudaBackend(BaseBackend):
    """Whole fit on the GPU through Numba-CUDA kernels; Python launches, never waits."""

    name = "numba-cuda"
    on_device = True

    def prepare(self, plan, X, Y, theta0):
        """Copy the data and parameters to the device and allocate every buffer once.

        Raises ``MemoryError`` (naming the batch size) when the device is out of memory.
        """
        self.plan, self.X, self.Y = plan, X, Y
        self.kernels = dense.build(plan.loss, plan.activation, plan.dtype.name)
        self.steps_done = 0
        self.threads = THREADS
        self._peak = self._base = self._used()
        lay, width = dense.layout(plan.sizes)
        # scratch rows for the largest launch: a step (<= n rows) or a loss pass over n rows
        self.blocks = launch_blocks(THREADS, MAX_BLOCKS, len(X))
        try:
            self.dX, self.dY = cuda.to_device(X), cuda.to_device(Y)
            self.theta = cuda.to_device(np.asarray(theta0, dtype=plan.dtype))
            self.opt_state = cuda.to_device(plan.optimizer.init_state(plan.n_params,
                                                                      plan.dtype))
            self.lay = cuda.to_device(lay)
            self.scratch = cuda.device_array((self.blocks * THREADS, 2 * width), plan.dtype)
            self.partial = cuda.device_array((self.blocks, plan.n_params), plan.dtype)
            self.sums = cuda.device_array(self.blocks, np.float64)
            self.hyper = cuda.to_device(plan.optimizer.hyper())
            self.lrs = cuda.to_device(np.zeros(max(2, plan.steps_per_epoch(len(X))), np.float64))
            # the epoch's order table (_set_epoch writes each epoch's at its start)
            self.perm = cuda.to_device(dense.perm_capacity(plan, len(X)))
            self.identity = cuda.to_device(dense.perm_table())  # exact_noise: in order
            # gradient noise: per-block float64 sums of |g_i|^2 (gradient launches) and of
            # the gradient's squares (update launches), and the epoch's sums of estimates
            self.update_blocks = -(-plan.n_params // THREADS)  # one thread per parameter
            self.sq_blocks = cuda.device_array(self.blocks, np.float64)
            self.gsq_blocks = cuda.device_array(self.update_blocks, np.float64)
            self.noise = cuda.to_device(np.zeros(3, np.float64))
            # the batch losses: per-block float64 sums of a step's row losses (gradient
            # launches) and the sums (loss times rows, rows) of the steps (epoch_loss)
            self.loss_blocks = cuda.device_array(self.blocks, np.float64)
            self.losses = cuda.to_device(np.zeros(2, np.float64))
        except _cuda_api_error() as exc:
            if not _is_out_of_memory(exc):
                raise
            raise out_of_memory(self.name, plan, len(X), self.blocks * THREADS) from exc
        self._val = None
        self._record()

    # ------------------------------------------------------------------ device memory
    @staticmethod
    def _used() -> int | None:
        if _simulated():
            return None
        free, total = cuda.current_context().get_memory_info()
        return int(total) - int(free)

    def _record(self) -> None:
        used = self._used()
        if used is not None and self._peak is not None:
            self._peak = max(self._peak, used)

    def memory(self) -> int | None:
        """Peak device bytes in use (whole device, read at prepare and epoch ends) above the
        reading taken before ``prepare``; None under the CUDA simulator."""
        if self._base is None or self._peak is None:
            return None
        return max(0, self._peak - self._base)

    # ------------------------------------------------------------------ epochs
    def _set_epoch(self, epoch: int, lrs: np.ndarray, n: int) -> None:
        p = self.plan
        self.lrs[: len(lrs)].copy_to_device(lrs)
        table = dense.perm_table(p.seed, epoch, n, p.shuffle, p.block_rows)
        self.perm[:len(table)].copy_to_device(table)

    def _steps(self, X, Y, theta, state, plan, n: int, start: int, stop: int, step0: int,
               losses, noise_sums=None):
        """Queue steps ``start .. stop`` of one epoch of ``plan`` over the first ``n`` rows
        (no synchronisation); step ``s`` is global step ``step0 + s + 1`` with learning
        rate ``lrs[s]``. Every step adds (its mean batch loss times its rows, its rows) to
        ``losses`` (a float64 device array of 2). With ``noise_sums`` (a float64 device
        array of 3) a step of at least two rows also adds its noise estimates there."""
        k, i64, f64 = self.kernels, np.int64, np.float64
        code, update_blocks = i64(plan.optimizer.code), self.update_blocks
        steps = itertools.islice(enumerate(plan.batches(n)), start, stop)
        for step, (first, rows, scale) in steps:
            blocks = min(self.blocks, -(-rows // self.threads))
            grad = (X, Y, theta, self.perm, self.lay, self.scratch, self.partial, i64(first),
                    i64(rows), plan.dtype.type(scale), self.loss_blocks)
            # the blocks' loss sums times scale * rows: the batch mean times its rows
            update = (theta, state, self.partial, i64(blocks), self.hyper, self.lrs, code,
                      i64(step), i64(step0 + step + 1), self.loss_blocks, f64(scale * rows),
                      f64(rows), losses)
            if noise_sums is None or rows < 2:
                k.grad_step[blocks, self.threads](*grad)
                k.update[update_blocks, self.threads](*update)
                continue
            # the deltas carry the batch scale 1/rows of the own-loss scale: |g_i|^2 * rows^2
            k.grad_norms[blocks, self.threads](*grad, f64(rows * rows), self.sq_blocks)
            k.update_noise[update_blocks, self.threads](*update, self.gsq_blocks)
            k.noise_step[1, self.threads](self.sq_blocks, i64(blocks), self.gsq_blocks,
                                          i64(update_blocks), i64(rows), i64(len(self.X)),
                                          noise_sums)

    def warmup(self):
        """Compile every kernel on two rows, leaving parameters, state, noise and batch-loss
        sums untouched (with ``track_noise``, the tracked step's kernels too)."""
        n = min(2, len(self.X))
        theta = cuda.to_device(self.theta.copy_to_host())
        state = cuda.to_device(self.opt_state.copy_to_host())
        sums = cuda.to_device(np.zeros(3, np.float64))
        losses = cuda.to_device(np.zeros(2, np.float64))
        self._set_epoch(0, np.zeros(2), n)
        for b in (1, 2) if self.plan.track_noise else (1,):
            plan = dataclasses.replace(self.plan, batch_size=b, drop_last=False)
            self._steps(self.dX[:n], self.dY[:n], theta, state, plan, n, 0,
                        plan.steps_per_epoch(n), 0, losses,
                        sums if self.plan.track_noise else None)
        self._loss(self.dX[:n], self.dY[:n])
        cuda.synchronize()

    def run_epoch(self, epoch: int, lrs, start: int = 0, stop: int | None = None) -> None:
        """Queue steps ``start .. stop`` (default all) of epoch ``epoch``: two launches per
        step (three for a tracked step), no host synchronisation."""
        lrs, start, stop = self.check_rates(lrs, start, stop)
        self._set_epoch(epoch, lrs, len(self.X))
        self._steps(self.dX, self.dY, self.theta, self.opt_state, self.plan, len(self.X),
                    start, stop, self.steps_done - start, self.losses,
                    self.noise if self.plan.track_noise else None)
        self.steps_done += stop - start
        self._record()

    def load(self, theta, state, steps_done) -> None:
        """Set the parameters (flat, public layout), the optimizer state and the step
        counter (copies to the device, in stream order with queued work)."""
        theta, state, self.steps_done = self.check_load(theta, state, steps_done)
        self.theta.copy_to_device(theta)
        if state.size:
            self.opt_state.copy_to_device(state)

    def epoch_noise(self) -> np.ndarray:
        """float64 ``[sum of tr(Sigma) estimates, sum of |G|^2 estimates, steps]`` of the
        tracked steps since the last call (copied from the device, then reset there);
        zeros without ``plan.track_noise`` (nothing is read from the device)."""
        if not self.plan.track_noise:
            return np.zeros(3, np.float64)
        out = self.noise.copy_to_host()
        self.noise.copy_to_device(np.zeros(3, np.float64))
        return out

    def loss_sums(self) -> np.ndarray:
        """A host copy of the device's batch-loss sums (sum of batch losses times rows,
        rows) since the last ``epoch_loss`` (waits for the queued steps)."""
        return self.losses.copy_to_host()

    def reset_loss_sums(self) -> None:
        """Zero the device's batch-loss sums (``epoch_loss``, shared, reads them first)."""
        self.losses.copy_to_device(np.zeros(2, np.float64))

    def exact_noise(self, X, Y) -> tuple[float, float]:
        """``(S, |G|^2)`` at the current parameters over ``(X, Y)`` (training data used in
        place, like :meth:`loss`): one ``grad_norms`` pass in order with the own-loss scale
        (per-block sums of the own gradients and of their float64 squared norms), then
        ``grad_sq`` (per-block float64 sums of the summed gradient's squares); the blocks'
        sums are added on the host in block order."""
        dX, dY = self._device_data(X, Y)
        p, n = self.plan, dX.shape[0]
        blocks = min(self.blocks, -(-n // self.threads))
        own = noise.own_scale(p.loss, p.sizes[-1])
        self.kernels.grad_norms[blocks, self.threads](
            dX, dY, self.theta, self.identity, self.lay, self.scratch, self.partial,
            np.int64(0), np.int64(n), p.dtype.type(own), self.loss_blocks, np.float64(1.0),
            self.sq_blocks)
        self.kernels.grad_sq[self.update_blocks, self.threads](self.partial, np.int64(blocks),
                                                               self.gsq_blocks)
        sq = math.fsum(self.sq_blocks[:blocks].copy_to_host())
        gsq = math.fsum(self.gsq_blocks.copy_to_host())
        return sq / n, gsq / (float(n) * float(n))

    def synchronize(self) -> None:
        """Wait until the queued work is done (``fit`` calls it before stopping the clock)."""
        cuda.synchronize()

    # ------------------------------------------------------------------ loss and params
    def _loss(self, dX, dY) -> float:
        n = dX.shape[0]
        blocks = min(self.blocks, -(-n // self.threads))
        self.kernels.loss_sum[blocks, self.threads](dX, dY, self.theta, self.lay,
                                                    self.scratch, self.sums)
        total = math.fsum(self.sums[:blocks].copy_to_host())
        per = n if self.plan.loss == "softmax" else n * self.plan.sizes[-1]
        return total / per

    def _device_data(self, X, Y):
        """``(X, Y)`` on the device: the training data already there, other arrays
        (validation) copied once and kept while the caller passes the same ones."""
        if X is self.X and Y is self.Y:
            return self.dX, self.dY
        if self._val is None or self._val[0] is not X or self._val[1] is not Y:
            self._val = (X, Y, cuda.to_device(X), cuda.to_device(Y))
        return self._val[2], self._val[3]

    def loss(self, X, Y) -> float:
        """Mean loss over a whole data set: the training data already on the device, other
        arrays (validation) copied once and kept while the caller passes the same ones."""
        return self._loss(*self._device_data(X, Y))

    def params(self) -> np.ndarray:
        """A copy of the flat parameter vector (host)."""
        return self.theta.copy_to_host()

    def state(self) -> np.ndarray:
        """A copy of the optimizer state (host)."""
        return self.opt_state.copy_to_host()
