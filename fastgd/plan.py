"""The Plan: everything a backend needs to run, resolved from user arguments once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .kernels.permutation import block_rows_for
from .kernels.reference import layer_offsets
from .optim import SGD, Optimizer


@dataclass(frozen=True)
class Plan:
    """A resolved training configuration. Backends read it; they never see user strings
    other than the validated ``loss``/``activation`` names.

    The step arithmetic of an epoch (how many steps, each one's rows, the partial last
    batch or ``drop_last``, the mean-reduction scale) is defined here once
    (:meth:`steps_per_epoch`, :meth:`batches`, :meth:`scale`); the Numba CPU kernels, which
    cannot call Python per step, compute the same formulas (``kernels/cpu/common.py``,
    checked against these in the tests).
    """

    sizes: tuple[int, ...]
    loss: str
    activation: str
    dtype: np.dtype
    mode: str
    batch_size: int
    drop_last: bool
    shuffle: bool
    seed: int
    optimizer: Optimizer = SGD()
    #: Whether epochs accumulate the online gradient-noise estimates (``kernels/noise.py``).
    track_noise: bool = False
    #: ``shuffle="once"``: ``fit`` permuted a private copy of the data before the first epoch
    #: (``permutation(seed, 0, n)``); the epochs then run in that order (``shuffle`` False).
    shuffle_once: bool = False
    #: ``shuffle="blocks"``: rows per block of the epochs' block shuffle (a power of two,
    #: ``kernels.permutation.block_rows_for``); 0 for a row shuffle or none.
    block_rows: int = 0
    #: Whether the run computes the exact loss over the whole training set: ``fit`` sets it
    #: from ``eval_every``; a Plan built directly (the batch-size study's and ``compare``'s
    #: memory estimates, which evaluate it) defaults to True. The memory model's loss pass
    #: covers the training rows only when set, else only the validation rows.
    full_train_loss: bool = True
    #: Data-parallel ranks (``fit(comm=...)``): every step's gradient is averaged over
    #: them before the update (``kernels/cpu/distributed.py``); 1: a single process.
    ranks: int = 1
    #: Local SGD (``fit(sync_every=K)``): with ``ranks > 1``, each rank steps on its own
    #: gradient and the ranks average parameters and optimizer state every ``K`` steps (and
    #: at each epoch's end); 0: the gradients are averaged every step.
    sync_every: int = 0

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector."""
        return layer_offsets(self.sizes)[2]

    @property
    def n_state(self) -> int:
        """Rows of the optimizer-state buffer (each ``n_params`` long)."""
        return self.optimizer.n_state()

    @property
    def flops_per_sample(self) -> int:
        """Multiply-adds x2 of forward and backward (about 3 matrix products per layer)."""
        return 6 * sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=False))

    def steps_per_epoch(self, n: int) -> int:
        """Number of optimizer steps in one epoch over ``n`` samples."""
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def scale(self, rows: int) -> float:
        """The mean-reduction factor of a step of ``rows`` rows: ``MSELoss`` and
        ``BCEWithLogitsLoss`` average every element, ``CrossEntropyLoss`` every row."""
        return 1.0 / rows if self.loss == "softmax" else 1.0 / (rows * self.sizes[-1])

    def batches(self, n: int) -> Iterator[tuple[int, int, float]]:
        """``(start, rows, scale)`` of every step of an epoch over ``n`` samples: positions
        ``start .. start + rows`` of the epoch's order."""
        b = self.batch_size
        for step in range(self.steps_per_epoch(n)):
            rows = min(b, n - step * b)
            yield step * b, rows, self.scale(rows)

    def samples_per_epoch(self, n: int) -> int:
        """Samples used in one epoch (less than ``n`` with ``drop_last``)."""
        return n - (n % self.batch_size if self.drop_last else 0)

    @classmethod
    def for_model(cls, model, dtype, mode="mbgd", batch_size=1, drop_last=False, shuffle=True,
                  seed=0, optimizer: Optimizer | None = None, track_noise=False,
                  full_train_loss=True) -> Plan:
        """The Plan of training ``model`` with these (already validated) settings;
        ``shuffle`` is True, False, ``"blocks"`` or ``"once"``. BGD is never shuffled (the
        order only changes rounding)."""
        once = isinstance(shuffle, str) and shuffle == "once" and mode != "bgd"
        blocks = isinstance(shuffle, str) and shuffle == "blocks" and mode != "bgd"
        shuffle = blocks or shuffle is True or (isinstance(shuffle, (bool, np.bool_))
                                                and bool(shuffle))
        return cls(sizes=tuple(model.sizes), loss=model.loss, activation=model.activation,
                   dtype=np.dtype(dtype), mode=mode, batch_size=int(batch_size),
                   drop_last=bool(drop_last), shuffle=shuffle and mode != "bgd",
                   seed=int(seed), optimizer=SGD() if optimizer is None else optimizer,
                   track_noise=bool(track_noise), shuffle_once=once,
                   block_rows=block_rows_for(model.sizes[0]) if blocks else 0,
                   full_train_loss=bool(full_train_loss))
