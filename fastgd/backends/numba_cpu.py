"""Numba CPU backend: whole epochs inside ``fastgd.kernels.cpu.epoch``."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from numba.core.errors import NumbaPerformanceWarning, NumbaWarning

from ..kernels import noise
from ..kernels.cpu import common, dense, epoch
from ..kernels.permutation import order_table, table_size
from ..kernels.reference import layer_offsets
from .base import BaseBackend

# A step's rows are split into parallel groups only when each group gets at least this much
# arithmetic; below it the fork/join of a parallel region costs more than it saves
# (a per-step prange on a 256-row linear batch ran 4x slower than the serial loop).
MIN_GROUP_FLOPS = 2_000_000
# At most this many groups (so at most this many threads work on one step). Each group's
# gradient is summed serially after the parallel part, so more groups cost more than they
# gain on few cores (measured, MLP 64-128-10 at batch 1024 on 2 cores: a cap of 64 groups
# ran at 1.39M samples/s, 8 at 1.58M, 4 at 1.66M). The cap is a constant, not the thread
# count, so results stay the same bits whatever the threads.
MAX_GROUPS = 8


class NumbaCpuBackend(BaseBackend):
    """Fused compiled epochs; Python runs once per epoch."""

    name = "numba-cpu"

    def prepare(self, plan, X, Y, theta0):
        """Allocate the flat buffers, the layout and the per-group scratch once."""
        self.plan, self.X, self.Y = plan, X, Y
        # MLP kernels keep each W transposed (see kernels/cpu/dense.py); linear ones do not
        self.mlp = len(plan.sizes) > 2
        theta0 = dense.to_kernel_layout(theta0, plan.sizes) if self.mlp else theta0
        self.theta = np.array(theta0, dtype=plan.dtype)
        family = "dense" if self.mlp else "linear"
        self._loss = getattr(epoch, f"{family}_loss")
        self._noise_pass = getattr(epoch, f"{family}_noise")
        self.opt_state = plan.optimizer.init_state(plan.n_params, plan.dtype)
        self.hyper = plan.optimizer.hyper()
        self.steps_done = 0
        w_off, b_off, _ = layer_offsets(plan.sizes)
        act_off = np.concatenate([[0], np.cumsum(plan.sizes)])[:-1]
        u64 = np.uint64
        self.layout = (np.array(plan.sizes, u64), w_off.astype(u64), b_off.astype(u64),
                       act_off.astype(u64), dense.wide_layers(plan.sizes))
        self.rows_per_group = max(1, MIN_GROUP_FLOPS // plan.flops_per_sample)
        # every epoch of the run uses one driver: serial unless a step splits into groups
        split = common.n_groups(plan.batch_size, self.rows_per_group, MAX_GROUPS) > 1
        if plan.ranks > 1:  # the gradient exchanged inside the compiled loop (numba-mpi)
            from ..kernels.cpu import distributed

            drive = distributed.driver(family, plan.optimizer.code, plan.n_state)
            self.gathered = np.zeros((plan.ranks, plan.n_params), plan.dtype)
            self.status = np.zeros(1, np.int64)
            self.exchange = np.zeros(1, np.float64)  # seconds in the all-gather
            self._epoch = lambda *a: self._exchange(drive, *a)
        else:
            self._epoch = epoch.driver(family, "grouped" if split else "serial",
                                       plan.optimizer.code, plan.n_state, plan.track_noise)
        self.act = np.zeros((MAX_GROUPS, dense.TILE * dense.tile_width(plan.sizes)), plan.dtype)
        self.partial = np.zeros((MAX_GROUPS, plan.n_params), plan.dtype)
        self.sums = np.zeros((2, MAX_GROUPS), np.float64)
        self.ring = np.zeros((MAX_GROUPS, common.RING), np.int64)
        self.noise = np.zeros(3, np.float64)
        self.losses = np.zeros(2, np.float64)

    def _exchange(self, drive, *args) -> None:
        """Run the data-parallel driver (``args`` as every driver's; ``args[9]`` is the
        partial gradients, whose first row each step sends); an MPI error code it met is a
        clear error."""
        bits = np.int32 if self.plan.dtype.itemsize == 4 else np.int64
        theta, state = args[2], args[3]  # the warm-up passes copies
        drive(*args, self.gathered, self.gathered.view(bits), args[9][0].view(bits),
              theta.view(bits), state.view(bits), np.int64(self.plan.sync_every),
              self.status, self.exchange)
        if self.status[0]:
            raise RuntimeError(f"MPI_Allgather of the step's gradient failed with code "
                               f"{int(self.status[0])}")

    def exchange_seconds(self) -> float:
        """Seconds spent exchanging gradients between ranks so far (0 in one process)."""
        return float(self.exchange[0]) if self.plan.ranks > 1 else 0.0

    def _config(self, epoch: int, n: int, batch_size: int | None = None, start: int = 0,
                stop: int | None = None, shuffle: bool | None = None):
        p = self.plan
        shuffle = p.shuffle if shuffle is None else shuffle
        table = order_table(p.seed, epoch, n, shuffle, p.block_rows)
        batch_size = batch_size or p.batch_size
        if stop is None:
            stop = dataclasses.replace(p, batch_size=batch_size).steps_per_epoch(n)
        cfg = common.EpochConfig(
            batch_size=batch_size, drop_last=p.drop_last,
            shuffle=shuffle,
            loss=common.LOSS_CODES[p.loss],
            activation=common.ACTIVATION_CODES[p.activation],
            step0=self.steps_done - start, start=start, stop=stop,
            rows_per_group=self.rows_per_group, max_groups=MAX_GROUPS,
        )
        return cfg, table

    def warmup(self):
        """Compile (or load from Numba's cache) on two rows, leaving the state untouched."""
        X, Y = self.X[:2], self.Y[:2]
        cfg, table = self._config(0, len(X), batch_size=1)
        with warnings.catch_warnings():
            # the serial driver is compiled with parallel=True for its code generation and
            # has no prange, which Numba reports (kernels/cpu/epoch.py says why)
            warnings.filterwarnings("ignore", category=NumbaPerformanceWarning)
            # numba-mpi's collectives hold ctypes pointers: the data-parallel driver is
            # compiled in every process (kernels/cpu/distributed.py)
            warnings.filterwarnings("ignore", message="Cannot cache compiled function",
                                    category=NumbaWarning)
            self._epoch(X, Y, self.theta.copy(), self.opt_state.copy(), self.hyper,
                        np.zeros(2, np.float64), table, self.layout, self.act, self.partial,
                        self.ring, self.sums, np.zeros(3, np.float64), np.zeros(2, np.float64),
                        cfg)
        self._loss(X, Y, self.theta, self.layout, self.act, self.sums, cfg)
        if self.plan.ranks > 1:
            self.exchange[:] = 0  # the warm-up's exchanges are not the run's

    def run_epoch(self, index: int, lrs, start: int = 0, stop: int | None = None) -> None:
        """Steps ``start .. stop`` of an epoch (all by default), every one in compiled code."""
        lrs, start, stop = self.check_rates(lrs, start, stop)
        cfg, table = self._config(index, len(self.X), start=start, stop=stop)
        self._epoch(self.X, self.Y, self.theta, self.opt_state, self.hyper, lrs, table,
                    self.layout, self.act, self.partial, self.ring, self.sums,
                    self.noise_sums(), self.loss_sums(), cfg)
        self.steps_done += stop - start

    def load(self, theta, state, steps_done) -> None:
        """Set parameters, optimizer state and step counter (public layout in)."""
        theta, state, self.steps_done = self.check_load(theta, state, steps_done)
        if self.mlp:
            theta = dense.to_kernel_layout(theta, self.plan.sizes)
            state = np.array([dense.to_kernel_layout(row, self.plan.sizes) for row in state]
                             ).reshape(state.shape)
        self.theta[:], self.opt_state[:] = theta, state

    def exact_noise(self, X, Y) -> tuple[float, float]:
        """``(S, |G|^2)`` over ``(X, Y)`` in one compiled, parallel pass (fixed groups)."""
        p = self.plan
        cfg, _ = self._config(0, len(X), shuffle=False)
        S, grad_sq = self._noise_pass(X, Y, self.theta, self.layout, self.act, self.partial,
                                      self.ring, self.sums, cfg,
                                      noise.own_scale(p.loss, p.sizes[-1]))
        return float(S), float(grad_sq)

    def loss(self, X, Y) -> float:
        """Mean loss over a whole data set (compiled, parallel over fixed row groups)."""
        cfg, _ = self._config(0, len(X), shuffle=False)
        return float(self._loss(X, Y, self.theta, self.layout, self.act, self.sums, cfg))

    def params(self) -> np.ndarray:
        """A copy of the flat parameter vector."""
        if self.mlp:
            return dense.from_kernel_layout(self.theta, self.plan.sizes)
        return self.theta.copy()

    def state(self) -> np.ndarray:
        """A copy of the optimizer state, each row in the public parameter layout."""
        if self.mlp:
            return np.array([dense.from_kernel_layout(row, self.plan.sizes)
                             for row in self.opt_state]).reshape(self.opt_state.shape)
        return self.opt_state.copy()

    @classmethod
    def workspace(cls, plan, n: int, n_val: int) -> dict[str, int]:
        """Bytes of what this backend allocates (see ``Backend.workspace``): the buffers of
        :meth:`prepare`, sized by the same constants, and the copies of ``theta`` and the
        state that :meth:`warmup` runs on; epochs and loss passes allocate nothing. (An
        MLP's ``theta0`` converted to the kernels' layout, before these buffers exist, is
        never the peak: the partial gradients alone are ``MAX_GROUPS`` times larger.) A
        shuffled epoch holds its order table (``step``; a block shuffle's lists the blocks'
        order: ``n / block_rows + block_rows`` values)."""
        isz, n_layers = plan.dtype.itemsize, len(plan.sizes)
        ws = super().workspace(plan, n, n_val)
        ws.update(
            layout=8 * (2 * n_layers + 3 * (n_layers - 1)),  # sizes, act_off; w/b_off, wide
            act=MAX_GROUPS * dense.TILE * dense.tile_width(plan.sizes) * isz,
            partial=MAX_GROUPS * plan.n_params * isz,
            sums=2 * MAX_GROUPS * 8,
            ring=MAX_GROUPS * common.RING * 8,
        )
        ws["warmup.theta_copy"], ws["warmup.opt_state_copy"] = ws["theta"], ws["opt_state"]
        if plan.ranks > 1:  # every rank's step gradient (kernels/cpu/distributed.py)
            ws["gathered"] = plan.ranks * plan.n_params * isz
            ws["status"] = ws["exchange"] = 8
        if plan.shuffle:  # the epoch's order table, held while the epoch runs
            ws["step.order_table"] = 8 * table_size(n, True, plan.block_rows)
        if plan.block_rows:  # making it: the bijections' working arrays (order_peak's)
            full, tail = divmod(n, plan.block_rows)
            ws["shuffle.order_table"] = (ws["step.order_table"]
                                         + 33 * max(full, plan.block_rows, tail))
        return ws
