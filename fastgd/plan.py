"""The Plan: everything a backend needs to run, resolved from user arguments once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels.reference import layer_offsets


@dataclass(frozen=True)
class Plan:
    """A resolved training configuration. Backends read it; they never see user strings
    other than the validated ``loss``/``activation`` names."""

    sizes: tuple[int, ...]
    loss: str
    activation: str
    dtype: np.dtype
    mode: str
    batch_size: int
    drop_last: bool
    shuffle: bool
    seed: int
    momentum: float
    nesterov: bool
    weight_decay: float

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector."""
        return layer_offsets(self.sizes)[2]

    @property
    def flops_per_sample(self) -> int:
        """Multiply-adds x2 of forward and backward (about 3 matrix products per layer)."""
        return 6 * sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=False))

    def steps_per_epoch(self, n: int) -> int:
        """Number of optimizer steps in one epoch over ``n`` samples."""
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    @classmethod
    def for_model(cls, model, dtype, mode="mbgd", batch_size=1, drop_last=False, shuffle=True,
                  seed=0, momentum=0.0, nesterov=False, weight_decay=0.0) -> Plan:
        """The Plan of training ``model`` with these (already validated) settings; BGD is
        never shuffled (the order only changes rounding)."""
        return cls(sizes=tuple(model.sizes), loss=model.loss, activation=model.activation,
                   dtype=np.dtype(dtype), mode=mode, batch_size=int(batch_size),
                   drop_last=bool(drop_last), shuffle=bool(shuffle) and mode != "bgd",
                   seed=int(seed), momentum=float(momentum), nesterov=bool(nesterov),
                   weight_decay=float(weight_decay))

    def samples_per_epoch(self, n: int) -> int:
        """Samples used in one epoch (less than ``n`` with ``drop_last``)."""
        return n - (n % self.batch_size if self.drop_last else 0)
