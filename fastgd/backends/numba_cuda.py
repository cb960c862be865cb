"""Numba-CUDA backend: data, parameters and buffers stay on the GPU for the whole fit.

Each step is one kernel launch from ``fastgd.kernels.cuda`` (the blocks' cooperative
gradient pass over tiles of rows in shared memory; the last block to finish sums the
blocks' gradients in block order and applies the fused update of the flat parameters and
the optimizer state, and adds the step's batch loss to a float64 device array that
``epoch_loss`` reads), queued without host synchronisation or copies; the epoch's per-step
learning rates, its order table and its first step's count are written to small device
arrays when a ``run_epoch`` call starts, the optimizer's hyper-parameters once. With
``plan.track_noise`` a step of at least two rows is the tracked variant of the same launch
(the per-example gradient norms, the gradient's squares and the step's noise estimates
added to a device array that ``epoch_noise`` reads).
Results are bitwise reproducible (every sum in a fixed order that depends on the batch size
and the model, never on the device) and match the reference to float rounding.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np
from numba import cuda

from ..kernels import noise
from ..kernels.cuda import dense
from .base import BaseBackend
from .gpu_launch import (
    BUFFERS,
    DeviceBytes,
    DeviceMemoryModel,
    check_threads,
    out_of_memory,
    refuse_sample_weights,
    step_launches,
)

# Threads per block (a power of two, <= dense.MAX_THREADS): fixed (not read from the
# device) so results are the same on every GPU. The tile decomposition is
# ``device_tables.launch_shape``'s.
THREADS = 128


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


class NumbaCudaBackend(DeviceMemoryModel, BaseBackend):
    """Whole fit on the GPU through Numba-CUDA kernels; Python launches, never waits."""

    name = "numba-cuda"
    on_device = True

    @staticmethod
    def block_threads() -> int:
        """Threads per block of this backend's launches (``THREADS``, read at call time)."""
        return THREADS

    def prepare(self, plan, X, Y, theta0):
        """Copy the data and parameters to the device and allocate every buffer once.

        Raises ``ValueError`` for a network whose row of activations does not fit the
        kernels' shared memory, ``MemoryError`` (naming what did not fit) when the device
        is out of memory.
        """
        refuse_sample_weights(self.name, plan, Y)
        self.plan, self.X, self.Y = plan, X, Y
        self.threads = check_threads(THREADS)
        lay, self.width = dense.layout(plan.sizes)
        self.itemsize = plan.dtype.itemsize
        dense.max_tile_rows(self.width, self.itemsize, plan.n_params)  # it fits the kernels
        self.kernels = dense.build(plan.loss, plan.activation, plan.dtype.name)
        self.steps_done = 0
        self.bytes = DeviceBytes()
        # per-block buffers for the widest launch over at most the n training rows
        self.blocks = dense.max_blocks(self.width, self.itemsize, len(X), plan.n_params)
        try:
            self.dX, self.dY = cuda.to_device(X), cuda.to_device(Y)
            self.theta = cuda.to_device(np.asarray(theta0, dtype=plan.dtype))
            self.opt_state = cuda.to_device(plan.optimizer.init_state(plan.n_params,
                                                                      plan.dtype))
            self.lay = cuda.to_device(lay)
            self.partial = cuda.device_array((self.blocks, plan.n_params), plan.dtype)
            self.counter = cuda.to_device(np.zeros(1, np.int32))  # the finished blocks
            self.hyper = cuda.to_device(plan.optimizer.hyper())
            self.lrs = cuda.to_device(np.zeros(max(2, plan.steps_per_epoch(len(X))), np.float64))
            self.t0 = cuda.to_device(np.zeros(1, np.int64))  # steps before the epoch call
            # the epoch's order table (_set_epoch writes each epoch's at its start)
            self.perm = cuda.to_device(dense.perm_capacity(plan, len(X)))
            self.identity = cuda.to_device(dense.perm_table())  # loss, exact_noise: in order
            # per-block float64 sums: the rows' losses, their |g_i|^2; the gradient's
            # squares (exact_noise, one thread per parameter)
            self.loss_blocks = cuda.device_array(self.blocks, np.float64)
            self.sq_blocks = cuda.device_array(self.blocks, np.float64)
            self.update_blocks = -(-plan.n_params // THREADS)
            self.gsq_blocks = cuda.device_array(self.update_blocks, np.float64)
            # the sums of the steps' batch losses (loss times rows, rows) and noise estimates
            self.losses = cuda.to_device(np.zeros(2, np.float64))
            self.noise = cuda.to_device(np.zeros(3, np.float64))
        except _cuda_api_error() as exc:
            if not _is_out_of_memory(exc):
                raise
            for name in BUFFERS:  # what was placed goes now, not with the traceback
                self.__dict__.pop(name, None)
            raise out_of_memory(self.name, plan, len(X), threads=THREADS) from exc
        self.bytes.add(*(getattr(self, name) for name in BUFFERS))
        self._val = None

    def _shape(self, rows: int) -> tuple[int, int, int, bool]:
        """``(blocks, tile rows, shared bytes, parameters in shared memory)`` of a launch
        over ``rows`` rows (``device_tables.launch_shape``)."""
        return dense.launch_shape(self.width, self.itemsize, rows, self.plan.n_params)

    # ------------------------------------------------------------------ device memory
    def memory(self) -> int:
        """Peak bytes of this backend's own device arrays since ``prepare`` (the buffers of
        ``gpu_launch.buffer_bytes``, the warm-up's copies, the validation data)."""
        return self.bytes.peak

    def device_memory(self) -> int | None:
        """Bytes in use on the whole device now (every process and allocator), read after
        the queued work finished and Numba's deferred frees ran; None under the CUDA
        simulator (it reports no memory)."""
        if _simulated():
            return None
        cuda.synchronize()
        cuda.current_context().deallocations.clear()
        free, total = cuda.current_context().get_memory_info()
        return int(total) - int(free)

    # ------------------------------------------------------------------ epochs
    def _set_epoch(self, epoch: int, lrs: np.ndarray, n: int, step0: int) -> None:
        p = self.plan
        self.lrs[: len(lrs)].copy_to_device(lrs)
        self.t0.copy_to_device(np.array([step0], np.int64))
        table = dense.perm_table(p.seed, epoch, n, p.shuffle, p.block_rows)
        self.perm[:len(table)].copy_to_device(table)

    def _steps(self, X, Y, theta, state, plan, n: int, start: int, stop: int, losses,
               noise_sums=None, fused: bool | None = None):
        """Queue steps ``start .. stop`` of one epoch of ``plan`` over the first ``n`` rows
        (no synchronisation) as ``gpu_launch.step_launches`` plans them; step ``s`` is
        global step ``t0 + s + 1`` with learning rate ``lrs[s]`` (``_set_epoch``). Every
        step adds (its mean batch loss times its rows, its rows) to ``losses`` (a float64
        device array of 2). With
        ``noise_sums`` (a float64 device array of 3) a step of at least two rows also adds
        its noise estimates there. ``fused`` forces one launch (True) or two (False) for
        the untracked steps (the same bits either way; the warm-up compiles both)."""
        k, i64 = self.kernels, np.int64
        code = i64(plan.optimizer.code)
        for sl in step_launches(plan, n, start, stop, noise_sums is not None, fused):
            args = (X, Y, theta, state, self.perm, self.lay, self.partial, self.loss_blocks,
                    self.counter, self.hyper, self.lrs, self.t0, code, i64(sl.step),
                    i64(sl.first), i64(sl.rows), sl.scale, i64(sl.tile), i64(sl.wsh), losses)
            grid = (sl.blocks, self.threads, 0, sl.shared)
            if sl.form == "step":
                k.step[grid](*args)
            elif sl.form == "two":
                k.grad_blocks[grid](X, Y, theta, self.perm, self.lay, self.partial,
                                    self.loss_blocks, i64(sl.first), i64(sl.rows), sl.scale,
                                    i64(sl.tile), i64(sl.wsh))
                k.update_params[self.update_blocks, self.threads](
                    theta, state, self.partial, i64(sl.blocks), self.loss_blocks, self.hyper,
                    self.lrs, self.t0, code, i64(sl.step), np.float64(sl.weight),
                    i64(sl.rows), losses)
            else:
                k.step_noise[grid](*args, self.sq_blocks, i64(len(self.X)), noise_sums)

    def warmup(self):
        """Compile every kernel (both forms of a step) on two rows, leaving parameters,
        state, noise and batch-loss sums untouched (with ``track_noise``, the tracked step's
        kernel too)."""
        n = min(2, len(self.X))
        theta = cuda.to_device(self.theta.copy_to_host())
        state = cuda.to_device(self.opt_state.copy_to_host())
        sums = cuda.to_device(np.zeros(3, np.float64))
        losses = cuda.to_device(np.zeros(2, np.float64))
        self.bytes.add(theta, state, sums, losses)
        self._set_epoch(0, np.zeros(2), n, 0)
        for b in (1, 2) if self.plan.track_noise else (1,):
            plan = dataclasses.replace(self.plan, batch_size=b, drop_last=False)
            self._steps(self.dX[:n], self.dY[:n], theta, state, plan, n, 0,
                        plan.steps_per_epoch(n), losses,
                        sums if self.plan.track_noise else None)
        plan = dataclasses.replace(self.plan, batch_size=1, drop_last=False)
        self._steps(self.dX[:n], self.dY[:n], theta, state, plan, n, 0, 1, losses,
                    fused=False)  # the two-launch form too
        self._loss(self.dX[:n], self.dY[:n])
        cuda.synchronize()
        self.bytes.remove(theta, state, sums, losses)

    def run_epoch(self, epoch: int, lrs, start: int = 0, stop: int | None = None) -> None:
        """Queue steps ``start .. stop`` (default all) of epoch ``epoch``: one launch per
        step, no host synchronisation."""
        lrs, start, stop = self.check_rates(lrs, start, stop)
        self._set_epoch(epoch, lrs, len(self.X), self.steps_done - start)
        self._steps(self.dX, self.dY, self.theta, self.opt_state, self.plan, len(self.X),
                    start, stop, self.losses, self.noise if self.plan.track_noise else None)
        self.steps_done += stop - start

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
        blocks, tile, shared, wsh = self._shape(n)
        blocks = min(blocks, self.blocks)  # other data than the training rows: <= partial's
        own = noise.own_scale(p.loss, p.sizes[-1])
        self.kernels.grad_norms[blocks, self.threads, 0, shared](
            dX, dY, self.theta, self.identity, self.lay, self.partial, np.int64(0),
            np.int64(n), p.dtype.type(own), np.int64(tile), np.int64(wsh), self.loss_blocks,
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
        blocks, tile, shared, wsh = self._shape(n)
        blocks = min(blocks, self.blocks)
        self.kernels.loss_sum[blocks, self.threads, 0, shared](
            dX, dY, self.theta, self.identity, self.lay, np.int64(tile), np.int64(wsh),
            self.loss_blocks)
        total = math.fsum(self.loss_blocks[:blocks].copy_to_host())
        per = n if self.plan.loss == "softmax" else n * self.plan.sizes[-1]
        return total / per

    def _device_data(self, X, Y):
        """``(X, Y)`` on the device: the training data already there, other arrays
        (validation) copied once and kept while the caller passes the same ones."""
        if X is self.X and Y is self.Y:
            return self.dX, self.dY
        if self._val is None or self._val[0] is not X or self._val[1] is not Y:
            if self._val is not None:  # the previous evaluation copies go first
                self.bytes.remove(*self._val[2:])
                self._val = None
            try:
                self._val = (X, Y, cuda.to_device(X), cuda.to_device(Y))
            except _cuda_api_error() as exc:
                if not _is_out_of_memory(exc):
                    raise
                raise out_of_memory(self.name, self.plan, len(self.X),
                                    f"copying {len(X)} rows of evaluation data",
                                    len(X), THREADS) from exc
            self.bytes.add(*self._val[2:])
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
