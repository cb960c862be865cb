"""The reference backend: plain NumPy, the oracle every other backend is tested against."""

from __future__ import annotations

import numpy as np

from ..kernels import reference


class NumpyBackend:
    """Runs ``fastgd.kernels.reference`` one step at a time (Python per step, by design)."""

    name = "numpy"

    def prepare(self, plan, X, Y, theta0):
        """Keep the data and copies of the parameter and momentum vectors."""
        self.plan, self.X, self.Y = plan, X, Y
        self.theta = np.array(theta0, dtype=plan.dtype)
        self.mom = np.zeros_like(self.theta)

    def warmup(self):
        """Nothing to compile."""

    def run_epoch(self, epoch: int, lr: float) -> None:
        """One epoch of reference mini-batch SGD."""
        p = self.plan
        reference.run_epoch(
            self.theta, self.mom, self.X, self.Y, p.sizes, p.activation, p.loss, lr=lr,
            momentum=p.momentum, nesterov=p.nesterov, weight_decay=p.weight_decay,
            batch_size=p.batch_size, drop_last=p.drop_last, shuffle=p.shuffle, seed=p.seed,
            epoch=epoch,
        )

    def loss(self, X, Y) -> float:
        """Mean loss over a whole data set."""
        p = self.plan
        return reference.dataset_loss(self.theta, X, Y, p.sizes, p.activation, p.loss)

    def params(self) -> np.ndarray:
        """A copy of the flat parameter vector."""
        return self.theta.copy()
