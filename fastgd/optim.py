"""Optimizer settings and learning-rate schedules (evaluated once per epoch, in Python)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Constant:
    """``lr`` every epoch."""

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return lr


@dataclass(frozen=True)
class StepDecay:
    """``lr * gamma ** (epoch // step_size)``."""

    step_size: int = 1
    gamma: float = 0.5

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return lr * self.gamma ** (epoch // self.step_size)


@dataclass(frozen=True)
class InverseScaling:
    """``eta0 / t ** power`` with ``t = epoch + 1`` (scikit-learn's ``invscaling``, per epoch)."""

    power: float = 0.5

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return lr / (epoch + 1) ** self.power


@dataclass(frozen=True)
class Cosine:
    """``lr_min + (lr - lr_min) * (1 + cos(pi * epoch / epochs)) / 2``."""

    lr_min: float = 0.0

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return self.lr_min + (lr - self.lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


SCHEDULES = {"constant": Constant, "step": StepDecay, "invscaling": InverseScaling,
             "cosine": Cosine}


def make_schedule(spec) -> Callable[[float, int, int], float]:
    """Turn ``lr_schedule`` (None, a name, a schedule object or ``f(epoch) -> lr``) into
    ``f(lr, epoch, epochs) -> lr``."""
    if spec is None:
        return Constant()
    if isinstance(spec, str):
        if spec not in SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {sorted(SCHEDULES)}, a schedule object or a "
                f"callable of the epoch; got {spec!r}"
            )
        return SCHEDULES[spec]()
    if isinstance(spec, (Constant, StepDecay, InverseScaling, Cosine)):
        return spec
    if callable(spec):
        return lambda lr, epoch, epochs: float(spec(epoch))
    raise TypeError(f"lr_schedule must be None, a name or a callable; got {type(spec).__name__}")
