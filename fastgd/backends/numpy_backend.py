"""The reference backend: plain NumPy, the oracle every other backend is tested against."""

from __future__ import annotations

import numpy as np

from ..kernels import reference
from .base import BaseBackend


class NumpyBackend(BaseBackend):
    """Runs ``fastgd.kernels.reference`` one step at a time (Python per step, by design)."""

    name = "numpy"

    def prepare(self, plan, X, Y, theta0):
        """Keep the data and copies of the parameter vector and the optimizer state."""
        self.plan, self.X, self.Y = plan, X, Y
        self.theta = np.array(theta0, dtype=plan.dtype)
        self.opt_state = plan.optimizer.init_state(plan.n_params, plan.dtype)
        self.hyper = plan.optimizer.hyper()
        self.steps_done = 0

    def warmup(self):
        """Nothing to compile."""

    def run_epoch(self, epoch: int, lrs) -> None:
        """One epoch of the reference optimizer, a Python iteration per step."""
        p, lrs = self.plan, self.check_rates(lrs)
        n = len(self.X)
        reference.run_epoch(
            self.theta, self.opt_state, self.X, self.Y, p.sizes, p.activation, p.loss,
            optimizer=p.optimizer.code, hyper=self.hyper, lrs=lrs, step0=self.steps_done,
            batches=((start, rows) for start, rows, _ in p.batches(n)),
            order=reference.epoch_order(n, p.shuffle, p.seed, epoch))
        self.steps_done += len(lrs)

    def loss(self, X, Y) -> float:
        """Mean loss over a whole data set."""
        p = self.plan
        return reference.dataset_loss(self.theta, X, Y, p.sizes, p.activation, p.loss)

    def params(self) -> np.ndarray:
        """A copy of the flat parameter vector."""
        return self.theta.copy()

    def state(self) -> np.ndarray:
        """A copy of the optimizer state."""
        return self.opt_state.copy()
