"""CuPy backend: the kernels of ``kernels/cu/dense.cu`` (CUDA C++, compiled by NVRTC through
``cupy.RawModule``), data, parameters and buffers on the GPU for the whole fit.

The same design as the ``numba-cuda`` backend: each step is one launch (the blocks'
cooperative gradient pass over tiles of rows in shared memory; the last block to finish
sums the blocks' gradients in block order, applies the fused update of the flat parameters
and the optimizer state, ``kernels/cu/optim.cuh``, and adds the step's batch loss to a
float64 device array that ``epoch_loss`` reads). The epoch's per-step learning rates, its
order table and the step count before it live in small device arrays written when a
``run_epoch`` call starts, so a step's launch arguments are the same in every epoch: a
whole epoch's launches are captured once in a CUDA graph (stream capture) and the graph is
replayed every epoch, one host call instead of one launch per step (``USE_GRAPHS``; parts
of an epoch, as the batch-size study runs them, are launched step by step). With
``plan.track_noise`` a step of at least two rows is the tracked variant of the same launch
(per-example gradient norms, the gradient's squares, the step's noise estimates added to a
device array that ``epoch_noise`` reads). Everything runs on the backend's own stream.
Results are bitwise reproducible (fixed-order sums; the one atomic counts finished blocks)
and match the reference to float rounding.

Limitation: ``fastgd.fit`` validates inputs into NumPy arrays, so the data are copied to
the device once in :meth:`CupyBackend.prepare`; CuPy arrays passed to ``fit`` are not used
in place (``prepare`` itself accepts CuPy arrays of the right dtype and uses them in place).
"""

from __future__ import annotations

import dataclasses
import math

import cupy
import numpy as np

from ..kernels import cupy_module as cm
from ..kernels import noise
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

# Threads per block (a power of two): fixed (not read from the device) so results are the
# same on every GPU; the tile decomposition is ``device_tables.launch_shape``'s. Whole
# epochs replay a captured CUDA graph when ``USE_GRAPHS``.
THREADS = 128
USE_GRAPHS = True


def _device_array(a, dtype) -> cupy.ndarray:
    """``a`` on the device as a C-contiguous ``dtype`` array (CuPy input kept in place)."""
    return cupy.ascontiguousarray(cupy.asarray(a, dtype=dtype))


class CupyBackend(DeviceMemoryModel, BaseBackend):
    """Whole fit on the GPU through hand-written CUDA kernels; Python launches, never waits."""

    name = "cupy"
    on_device = True

    @staticmethod
    def block_threads() -> int:
        """Threads per block of this backend's launches (``THREADS``, read at call time)."""
        return THREADS

    def prepare(self, plan, X, Y, theta0):
        """Place the data and parameters on the device and allocate every buffer once.

        Raises ``ValueError`` for a network whose row of activations does not fit the
        kernels' shared memory, ``MemoryError`` (naming what did not fit) when the device
        is out of memory.
        """
        refuse_sample_weights(self.name, plan, Y)
        self.plan, self.X, self.Y = plan, X, Y
        self.threads = check_threads(THREADS)
        self.dtype = np.dtype(plan.dtype)
        lay, self.width = cm.layout(plan.sizes)
        cm.max_tile_rows(self.width, self.dtype.itemsize, plan.n_params)  # it fits
        self.n_layers = len(lay)
        self.bytes = DeviceBytes()
        # per-block buffers for the widest launch over at most the n training rows
        self.blocks = cm.max_blocks(self.width, self.dtype.itemsize, len(X), plan.n_params)
        self.steps_done = 0
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._graphs: dict[tuple, object] = {}
        try:
            with self.stream:
                self.kernels = cm.build(self.dtype, plan.loss, plan.activation)
                self.dX, self.dY = _device_array(X, self.dtype), _device_array(Y, self.dtype)
                self.theta = cupy.asarray(np.asarray(theta0, dtype=self.dtype))
                self.opt_state = cupy.asarray(plan.optimizer.init_state(plan.n_params,
                                                                        self.dtype))
                self.lay = cupy.asarray(lay)
                self.partial = cupy.empty((self.blocks, plan.n_params), self.dtype)
                self.counter = cupy.zeros(1, np.uint32)  # the finished blocks of a launch
                self.hyper = cupy.asarray(plan.optimizer.hyper())
                self.lrs = cupy.zeros(max(2, plan.steps_per_epoch(len(X))), np.float64)
                self.t0 = cupy.zeros(1, np.int64)  # the steps before the epoch call
                # the epoch's order table (_set_epoch writes each epoch's at its start)
                self.perm = cupy.asarray(cm.perm_capacity(plan, len(X)))
                self.identity = cupy.asarray(cm.perm_table())  # loss, exact_noise: in order
                # per-block float64 sums: the rows' losses, their |g_i|^2; the gradient's
                # squares (exact_noise, one thread per parameter)
                self.loss_blocks = cupy.zeros(self.blocks, np.float64)
                self.sq_blocks = cupy.zeros(self.blocks, np.float64)
                self.update_blocks = -(-plan.n_params // THREADS)
                self.gsq_blocks = cupy.zeros(self.update_blocks, np.float64)
                # the sums of the steps' batch losses (loss times rows, rows) and noise
                self.losses = cupy.zeros(2, np.float64)
                self.noise = cupy.zeros(3, np.float64)
        except cupy.cuda.memory.OutOfMemoryError as exc:
            for name in BUFFERS:  # what was placed goes now, not with the traceback
                self.__dict__.pop(name, None)
            raise out_of_memory(self.name, plan, len(X), threads=THREADS) from exc
        self.bytes.add(*(getattr(self, name) for name in BUFFERS))
        self._val = None

    def _shape(self, rows: int) -> tuple[int, int, int, bool]:
        """``(blocks, tile rows, shared bytes, parameters in shared memory)`` of a launch
        over ``rows`` rows (``device_tables.launch_shape``)."""
        return cm.launch_shape(self.width, self.dtype.itemsize, rows, self.plan.n_params)

    def memory(self) -> int:
        """Peak bytes of this backend's own device arrays since ``prepare`` (the buffers of
        ``gpu_launch.buffer_bytes``, the warm-up's copies, the validation data)."""
        return self.bytes.peak

    def device_memory(self) -> int:
        """Bytes in use on the whole device now (every process and allocator), read after
        the queued work finished and CuPy's pool returned its cached blocks."""
        self.synchronize()
        cupy.get_default_memory_pool().free_all_blocks()
        free, total = cupy.cuda.runtime.memGetInfo()
        return int(total) - int(free)

    # ------------------------------------------------------------------ epochs
    def _set_epoch(self, epoch: int, lrs: np.ndarray, n: int, step0: int) -> None:
        p = self.plan
        self.lrs[: len(lrs)].set(lrs)
        self.t0.set(np.array([step0], np.int64))
        table = cm.perm_table(p.seed, epoch, n, p.shuffle, p.block_rows)
        self.perm[:len(table)].set(table)

    def _steps(self, X, Y, theta, state, plan, n: int, start: int, stop: int, losses,
               noise_sums=None, fused: bool | None = None) -> None:
        """Queue steps ``start .. stop`` of one epoch of ``plan`` over the first ``n`` rows
        (no synchronisation) as ``gpu_launch.step_launches`` plans them; step ``s`` is
        global step ``t0 + s + 1`` with learning rate ``lrs[s]`` (``_set_epoch``). Every
        step adds (its mean batch loss times its rows, its rows) to ``losses`` (a float64
        device array of 2). With
        ``noise_sums`` (a float64 device array of 3) a step of at least two rows also adds
        its noise estimates there. ``fused`` forces one launch (True) or two (False) for
        the untracked steps (the same bits either way; the warm-up compiles both)."""
        k, i64 = self.kernels, np.int64
        code = np.int32(plan.optimizer.code)
        for sl in step_launches(plan, n, start, stop, noise_sums is not None, fused):
            args = (X, Y, theta, state, self.perm, self.lay, i64(self.n_layers), self.partial,
                    self.loss_blocks, self.counter, self.hyper, self.lrs, self.t0, code,
                    i64(sl.step), i64(n), i64(X.shape[1]), i64(Y.shape[1]),
                    i64(plan.n_params), i64(sl.first), i64(sl.rows), sl.scale, i64(sl.tile),
                    i64(sl.wsh), losses)
            grid, block = (sl.blocks,), (self.threads,)
            if sl.form == "step":
                k.step(grid, block, args, shared_mem=sl.shared)
            elif sl.form == "two":
                k.grad_blocks(grid, block, (
                    X, Y, theta, self.perm, self.lay, i64(self.n_layers), self.partial,
                    self.loss_blocks, i64(n), i64(X.shape[1]), i64(Y.shape[1]),
                    i64(plan.n_params), i64(sl.first), i64(sl.rows), sl.scale, i64(sl.tile),
                    i64(sl.wsh)), shared_mem=sl.shared)
                k.update_params((self.update_blocks,), block, (
                    theta, state, self.partial, i64(sl.blocks), i64(plan.n_params),
                    self.loss_blocks, self.hyper, self.lrs, self.t0, code, i64(sl.step),
                    np.float64(sl.weight), i64(sl.rows), losses))
            else:
                k.step_noise(grid, block, (*args, self.sq_blocks, noise_sums),
                             shared_mem=sl.shared)

    def warmup(self) -> None:
        """Run every kernel (both forms of a step) on two rows (loading the compiled
        module), leaving parameters, state, noise and batch-loss sums untouched (with
        ``track_noise``, the tracked step's kernel too)."""
        n = min(2, len(self.X))
        track = self.plan.track_noise
        with self.stream:
            theta, state = self.theta.copy(), self.opt_state.copy()
            sums, losses = cupy.zeros(3, np.float64), cupy.zeros(2, np.float64)
            self.bytes.add(theta, state, sums, losses)
            self._set_epoch(0, np.zeros(2), n, 0)
            for b in (1, 2) if track else (1,):
                plan = dataclasses.replace(self.plan, batch_size=b, drop_last=False)
                self._steps(self.dX[:n], self.dY[:n], theta, state, plan, n, 0,
                            plan.steps_per_epoch(n), losses, sums if track else None)
            plan = dataclasses.replace(self.plan, batch_size=1, drop_last=False)
            self._steps(self.dX[:n], self.dY[:n], theta, state, plan, n, 0, 1, losses,
                        fused=False)  # the two-launch form too
            self._loss(self.dX[:n], self.dY[:n])
        self.synchronize()
        self.bytes.remove(theta, state, sums, losses)

    def run_epoch(self, epoch: int, lrs, start: int = 0, stop: int | None = None) -> None:
        """Queue steps ``start .. stop`` (default all) of epoch ``epoch``, no host
        synchronisation: a whole epoch replays its CUDA graph (captured on first use), a
        part launches its steps one by one."""
        lrs, start, stop = self.check_rates(lrs, start, stop)
        n = len(self.X)
        noise = self.noise if self.plan.track_noise else None
        with self.stream:
            self._set_epoch(epoch, lrs, n, self.steps_done - start)
            whole = start == 0 and stop == self.plan.steps_per_epoch(n)
            if USE_GRAPHS and whole:
                self._epoch_graph(n, stop, noise).launch(stream=self.stream)
            else:
                self._steps(self.dX, self.dY, self.theta, self.opt_state, self.plan, n,
                            start, stop, self.losses, noise)
        self.steps_done += stop - start

    def _epoch_graph(self, n: int, steps: int, noise):
        """The CUDA graph of a whole epoch's launches (captured on the backend's stream the
        first time, then reused: every argument of a step is the same in every epoch)."""
        graph = self._graphs.get(steps)
        if graph is None:
            self.stream.begin_capture()
            try:
                self._steps(self.dX, self.dY, self.theta, self.opt_state, self.plan, n, 0,
                            steps, self.losses, noise)
            finally:
                graph = self.stream.end_capture()
            self._graphs[steps] = graph
        return graph

    def load(self, theta, state, steps_done) -> None:
        """Set the parameters (flat, public layout), the optimizer state and the step
        counter (copies to the device, in stream order with queued work)."""
        theta, state, self.steps_done = self.check_load(theta, state, steps_done)
        with self.stream:
            self.theta.set(theta)
            if state.size:
                self.opt_state.set(state)

    def epoch_noise(self) -> np.ndarray:
        """float64 ``[sum of tr(Sigma) estimates, sum of |G|^2 estimates, steps]`` of the
        tracked steps since the last call (copied from the device, then reset there);
        zeros without ``plan.track_noise`` (nothing is read from the device)."""
        if not self.plan.track_noise:
            return np.zeros(3, np.float64)
        with self.stream:
            out = self.noise.get()
            self.noise.fill(0)
        return out

    def loss_sums(self) -> np.ndarray:
        """A host copy of the device's batch-loss sums (sum of batch losses times rows,
        rows) since the last ``epoch_loss`` (waits for the queued steps)."""
        with self.stream:
            return self.losses.get()

    def reset_loss_sums(self) -> None:
        """Zero the device's batch-loss sums (``epoch_loss``, shared, reads them first)."""
        with self.stream:
            self.losses.fill(0)

    def exact_noise(self, X, Y) -> tuple[float, float]:
        """``(S, |G|^2)`` at the current parameters over ``(X, Y)`` (training data used in
        place, like :meth:`loss`): one ``grad_norms`` pass in order with the own-loss scale
        (per-block sums of the own gradients and of their float64 squared norms), then
        ``grad_sq`` (per-block float64 sums of the summed gradient's squares); the blocks'
        sums are added on the host in block order."""
        dX, dY = self._device_data(X, Y)
        p, n, i64 = self.plan, dX.shape[0], np.int64
        blocks, tile, shared, wsh = self._shape(n)
        blocks = min(blocks, self.blocks)  # other data than the training rows: <= partial's
        own = noise.own_scale(p.loss, p.sizes[-1])
        with self.stream:
            self.kernels.grad_norms((blocks,), (self.threads,), (
                dX, dY, self.theta, self.identity, self.lay, i64(self.n_layers), self.partial,
                i64(n), i64(dX.shape[1]), i64(dY.shape[1]), i64(p.n_params), i64(0), i64(n),
                self.dtype.type(own), i64(tile), i64(wsh), self.loss_blocks, self.sq_blocks),
                shared_mem=shared)
            self.kernels.grad_sq((self.update_blocks,), (self.threads,), (
                self.partial, i64(blocks), i64(p.n_params), self.gsq_blocks))
            sq = math.fsum(self.sq_blocks[:blocks].get())
            gsq = math.fsum(self.gsq_blocks.get())
        return sq / n, gsq / (float(n) * float(n))

    def synchronize(self) -> None:
        """Wait until the queued work is done (``fit`` calls it before stopping the clock)."""
        self.stream.synchronize()

    # ------------------------------------------------------------------ loss and params
    def _loss(self, dX, dY) -> float:
        n = dX.shape[0]
        blocks, tile, shared, wsh = self._shape(n)
        blocks = min(blocks, self.blocks)
        i64 = np.int64
        with self.stream:
            self.kernels.loss_sum((blocks,), (self.threads,), (
                dX, dY, self.theta, self.identity, self.lay, i64(self.n_layers), i64(n),
                i64(dX.shape[1]), i64(dY.shape[1]), i64(tile), i64(wsh), self.loss_blocks),
                shared_mem=shared)
            total = math.fsum(self.loss_blocks[:blocks].get())
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
                with self.stream:
                    self._val = (X, Y, _device_array(X, self.dtype),
                                 _device_array(Y, self.dtype))
            except cupy.cuda.memory.OutOfMemoryError as exc:
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
        with self.stream:
            return self.theta.get()

    def state(self) -> np.ndarray:
        """A copy of the optimizer state (host)."""
        with self.stream:
            return self.opt_state.get()
