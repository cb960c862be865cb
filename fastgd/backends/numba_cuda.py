"""Numba-CUDA backend: data, parameters and scratch stay on the GPU for the whole fit.

Each step is two kernel launches from ``fastgd.kernels.cuda`` (per-block gradient sums, then
one fused reduce-and-update of the flat parameters and the optimizer state), queued without
host synchronisation or copies; the epoch's per-step learning rates and its shuffle key are
written to small device arrays once per epoch, the optimizer's hyper-parameters once.
Results are bitwise reproducible (every sum in a fixed order, no atomics) and match the
reference to float rounding.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np
from numba import cuda

from ..kernels.cuda import dense
from ..kernels.permutation import epoch_key
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
            self.perm = cuda.to_device(dense.perm_table(None))
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
        key = epoch_key(p.seed, epoch, n) if p.shuffle else None
        self.perm.copy_to_device(dense.perm_table(key))

    def _steps(self, X, Y, theta, state, plan, n: int):
        """Queue every step of one epoch of ``plan`` over the first ``n`` rows (no
        synchronisation)."""
        k, i64 = self.kernels, np.int64
        code = i64(plan.optimizer.code)
        update_blocks = -(-plan.n_params // self.threads)
        for step, (start, rows, scale) in enumerate(plan.batches(n)):
            blocks = min(self.blocks, -(-rows // self.threads))
            k.grad_step[blocks, self.threads](X, Y, theta, self.perm, self.lay, self.scratch,
                                              self.partial, i64(start), i64(rows),
                                              plan.dtype.type(scale))
            k.update[update_blocks, self.threads](theta, state, self.partial, i64(blocks),
                                                  self.hyper, self.lrs, code, i64(step),
                                                  i64(self.steps_done + step + 1))

    def warmup(self):
        """Compile every kernel on two rows, leaving parameters and state untouched."""
        n = min(2, len(self.X))
        theta = cuda.to_device(self.theta.copy_to_host())
        state = cuda.to_device(self.opt_state.copy_to_host())
        self._set_epoch(0, np.zeros(2), n)
        self._steps(self.dX[:n], self.dY[:n], theta, state,
                    dataclasses.replace(self.plan, batch_size=1, drop_last=False), n)
        self._loss(self.dX[:n], self.dY[:n])
        cuda.synchronize()

    def run_epoch(self, epoch: int, lrs) -> None:
        """Queue one epoch: two launches per step, no host synchronisation."""
        lrs = self.check_rates(lrs)
        self._set_epoch(epoch, lrs, len(self.X))
        self._steps(self.dX, self.dY, self.theta, self.opt_state, self.plan, len(self.X))
        self.steps_done += len(lrs)
        self._record()

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

    def loss(self, X, Y) -> float:
        """Mean loss over a whole data set: the training data already on the device, other
        arrays (validation) copied once and kept while the caller passes the same ones."""
        if X is self.X and Y is self.Y:
            return self._loss(self.dX, self.dY)
        if self._val is None or self._val[0] is not X or self._val[1] is not Y:
            self._val = (X, Y, cuda.to_device(X), cuda.to_device(Y))
        return self._loss(self._val[2], self._val[3])

    def params(self) -> np.ndarray:
        """A copy of the flat parameter vector (host)."""
        return self.theta.copy_to_host()

    def state(self) -> np.ndarray:
        """A copy of the optimizer state (host)."""
        return self.opt_state.copy_to_host()
