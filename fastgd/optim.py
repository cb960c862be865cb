"""Optimizers (``torch.optim``'s rules, defaults included) and learning-rate schedules.

An optimizer here is a *spec*: its name, hyper-parameters, the number of state buffers it
keeps and an integer code. The update itself is one function per kernel language (the NumPy
reference in ``kernels/optimizers.py``, Numba CPU, Numba-CUDA and CUDA C), run fused with
the gradient inside the compiled epoch. State lives in one flat ``(n_state, n_params)``
buffer beside the parameters.

Schedules give the learning rate of every step of an epoch as one array, computed once per
epoch in Python (:meth:`Schedule.rates`): per-epoch schedules (:class:`Constant`,
:class:`StepDecay`, :class:`InverseScaling`, :class:`Cosine`, a callable of the epoch) repeat
one value; :class:`Warmup` and :class:`PerStep` change it every step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from .kernels.optimizers import HYPER_SLOTS, OPTIMIZER_CODES

# the public vocabulary, re-exported by ``fastgd`` itself (a new optimizer listed here is
# ``fg.<Name>`` with no other change)
__all__ = [
    "SGD", "Adagrad", "Adam", "AdamW", "Constant", "Cosine", "InverseScaling", "Optimizer",
    "PerStep", "RMSprop", "Schedule", "StepDecay", "Warmup",
]


# ----------------------------------------------------------------------------- checks
def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return v


def _at_least(name: str, value, lo: float, inclusive: bool = True) -> float:
    v = _real(name, value)
    if v < lo or (v == lo and not inclusive):
        raise ValueError(f"{name} must be {'>=' if inclusive else '>'} {lo}; got {value!r}")
    return v


def _in_unit(name: str, value) -> float:
    v = _real(name, value)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must be in [0, 1); got {value!r}")
    return v


def _flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


# ----------------------------------------------------------------------------- optimizers
@dataclass(frozen=True)
class Optimizer:
    """Base of the optimizer specs. Subclasses set ``kernel`` (the key of their code in
    ``OPTIMIZER_CODES``), validate their fields, and define :meth:`slots` (the hyper vector
    the kernels read) and :meth:`n_state`."""

    kernel: ClassVar[str] = ""
    lr: float = 0.01

    @property
    def name(self) -> str:
        """The optimizer's name as ``torch.optim`` spells it (``"Adam"``, ``"SGD"``...)."""
        return type(self).__name__

    @property
    def code(self) -> int:
        """The integer code every kernel language dispatches on."""
        return OPTIMIZER_CODES[self.kernel]

    def n_state(self) -> int:
        """Number of parameter-sized state buffers."""
        raise NotImplementedError

    def slots(self) -> tuple[float, ...]:
        """The hyper-parameters in the kernels' slot order (``kernels/optimizers.py``)."""
        raise NotImplementedError

    def state_fill(self) -> float:
        """The value every state buffer starts at (0, or Adagrad's initial accumulator)."""
        return 0.0

    def hyper(self) -> np.ndarray:
        """The float64 hyper-parameter vector of the kernels (``HYPER_SLOTS`` long)."""
        out = np.zeros(HYPER_SLOTS, dtype=np.float64)
        values = self.slots()
        out[: len(values)] = values
        return out

    def init_state(self, n_params: int, dtype) -> np.ndarray:
        """The initial ``(n_state, n_params)`` state buffer."""
        return np.full((self.n_state(), int(n_params)), self.state_fill(), dtype=dtype)

    def state_bytes(self, n_params: int, dtype) -> int:
        """Bytes of the optimizer state for ``n_params`` parameters of ``dtype``."""
        return self.n_state() * int(n_params) * np.dtype(dtype).itemsize

    def to_dict(self) -> dict:
        """``{"name": ..., hyper-parameters...}`` (for results and reports)."""
        return {"name": self.name, **asdict(self)}

    def _check_lr(self) -> None:
        object.__setattr__(self, "lr", _at_least("lr", self.lr, 0.0, inclusive=False))

    def _check_weight_decay(self) -> None:
        object.__setattr__(self, "weight_decay", _at_least("weight_decay", self.weight_decay, 0))


@dataclass(frozen=True)
class SGD(Optimizer):
    """``torch.optim.SGD``: ``lr``, ``momentum``, ``dampening``, ``nesterov``,
    ``weight_decay`` (Nesterov needs momentum > 0 and dampening 0, as in PyTorch)."""

    kernel: ClassVar[str] = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self):
        self._check_lr()
        object.__setattr__(self, "momentum", _at_least("momentum", self.momentum, 0.0))
        object.__setattr__(self, "dampening", _real("dampening", self.dampening))
        object.__setattr__(self, "nesterov", _flag("nesterov", self.nesterov))
        self._check_weight_decay()
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0 "
                             "(as in torch.optim.SGD)")

    def n_state(self) -> int:
        """The momentum buffer, when there is momentum."""
        return 1 if self.momentum != 0 else 0

    def slots(self) -> tuple[float, ...]:
        """``momentum, dampening, nesterov, weight_decay``."""
        return (self.momentum, self.dampening, float(self.nesterov), self.weight_decay)


@dataclass(frozen=True)
class Adam(Optimizer):
    """``torch.optim.Adam``: ``lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0``
    (added to the gradient), ``amsgrad=False``."""

    kernel: ClassVar[str] = "adam"
    decoupled: ClassVar[bool] = False
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False

    def __post_init__(self):
        self._check_lr()
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else None
        if betas is None or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got {self.betas!r}")
        object.__setattr__(self, "betas", (_in_unit("betas[0]", betas[0]),
                                           _in_unit("betas[1]", betas[1])))
        object.__setattr__(self, "eps", _at_least("eps", self.eps, 0.0, inclusive=False))
        self._check_weight_decay()
        object.__setattr__(self, "amsgrad", _flag("amsgrad", self.amsgrad))

    def n_state(self) -> int:
        """``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad)."""
        return 3 if self.amsgrad else 2

    def slots(self) -> tuple[float, ...]:
        """``beta1, beta2, eps, weight_decay, amsgrad, decoupled``."""
        return (*self.betas, self.eps, self.weight_decay, float(self.amsgrad),
                float(self.decoupled))


@dataclass(frozen=True)
class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay (``theta *= 1 - lr * wd``
    before the step), ``weight_decay=1e-2`` by default."""

    decoupled: ClassVar[bool] = True
    weight_decay: float = 1e-2


@dataclass(frozen=True)
class RMSprop(Optimizer):
    """``torch.optim.RMSprop``: ``lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0,
    momentum=0, centered=False``."""

    kernel: ClassVar[str] = "rmsprop"
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False

    def __post_init__(self):
        self._check_lr()
        object.__setattr__(self, "alpha", _at_least("alpha", self.alpha, 0.0))
        object.__setattr__(self, "eps", _at_least("eps", self.eps, 0.0, inclusive=False))
        self._check_weight_decay()
        object.__setattr__(self, "momentum", _at_least("momentum", self.momentum, 0.0))
        object.__setattr__(self, "centered", _flag("centered", self.centered))

    def n_state(self) -> int:
        """``square_avg`` (+ ``grad_avg`` when centered, + the momentum buffer)."""
        return 1 + int(self.centered) + int(self.momentum > 0)

    def slots(self) -> tuple[float, ...]:
        """``alpha, eps, weight_decay, momentum, centered``."""
        return (self.alpha, self.eps, self.weight_decay, self.momentum, float(self.centered))


@dataclass(frozen=True)
class Adagrad(Optimizer):
    """``torch.optim.Adagrad``: ``lr=1e-2, lr_decay=0, weight_decay=0,
    initial_accumulator_value=0, eps=1e-10``."""

    kernel: ClassVar[str] = "adagrad"
    lr: float = 1e-2
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10

    def __post_init__(self):
        self._check_lr()
        object.__setattr__(self, "lr_decay", _at_least("lr_decay", self.lr_decay, 0.0))
        self._check_weight_decay()
        object.__setattr__(self, "initial_accumulator_value", _at_least(
            "initial_accumulator_value", self.initial_accumulator_value, 0.0))
        object.__setattr__(self, "eps", _at_least("eps", self.eps, 0.0, inclusive=False))

    def n_state(self) -> int:
        """The running sum of squared gradients."""
        return 1

    def state_fill(self) -> float:
        """``initial_accumulator_value``."""
        return self.initial_accumulator_value

    def slots(self) -> tuple[float, ...]:
        """``lr_decay, weight_decay, eps``."""
        return (self.lr_decay, self.weight_decay, self.eps)


#: The optimizer names ``make_optimizer`` (and the command line) accept.
OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}
#: Keywords of ``fit`` that are shorthand for ``SGD(...)``; defaults as in ``torch.optim.SGD``
#: (``lr`` 0.01 is fastgd's own default, torch has none).
SGD_KEYWORDS = {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}


def make_optimizer(optimizer=None, **sgd_keywords) -> Optimizer:
    """The optimizer of a run: ``optimizer`` (a spec or a name such as ``"adam"``), or
    ``SGD`` built from the shorthand keywords (``lr``, ``momentum``, ``nesterov``,
    ``weight_decay``; ``None`` = not given). Giving both is a ``ValueError``."""
    given = {k: v for k, v in sgd_keywords.items() if v is not None}
    unknown = set(given) - set(SGD_KEYWORDS)
    if unknown:
        raise TypeError(f"unknown optimizer keyword(s): {', '.join(sorted(unknown))}")
    if optimizer is None:
        return SGD(**{**SGD_KEYWORDS, **given})
    if given:
        raise ValueError(
            f"give the optimizer's settings in optimizer= only; got optimizer={optimizer!r} "
            f"and {', '.join(f'{k}={v!r}' for k, v in given.items())} (the SGD shorthand); "
            "set them on the optimizer, e.g. fg.SGD(lr=0.05, momentum=0.9)")
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))} "
                             f"or an optimizer object; got {optimizer!r}")
        return OPTIMIZERS[key]()
    if not isinstance(optimizer, Optimizer) or not optimizer.kernel:
        raise TypeError("optimizer must be an optimizer object such as fg.Adam(lr=1e-3), or a "
                        f"name; got {type(optimizer).__name__}")
    return optimizer


# ----------------------------------------------------------------------------- schedules
class Schedule:
    """Base of the learning-rate schedules: :meth:`rates` gives every step's rate of one
    epoch; a per-epoch schedule defines ``__call__(lr, epoch, epochs)`` instead."""

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        raise NotImplementedError

    def rates(self, lr: float, epoch: int, epochs: int, step0: int, n_steps: int) -> np.ndarray:
        """float64 learning rates of the ``n_steps`` steps of ``epoch`` (0-based), whose
        first is global step ``step0`` (0-based), for the base rate ``lr``."""
        return np.full(n_steps, float(self(lr, epoch, epochs)), dtype=np.float64)


@dataclass(frozen=True)
class Constant(Schedule):
    """``lr`` every epoch."""

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return lr


@dataclass(frozen=True)
class StepDecay(Schedule):
    """``lr * gamma ** (epoch // step_size)``."""

    step_size: int = 1
    gamma: float = 0.5

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return lr * self.gamma ** (epoch // self.step_size)


@dataclass(frozen=True)
class InverseScaling(Schedule):
    """``eta0 / t ** power`` with ``t = epoch + 1`` (scikit-learn's ``invscaling``, per epoch)."""

    power: float = 0.5

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return lr / (epoch + 1) ** self.power


@dataclass(frozen=True)
class Cosine(Schedule):
    """``lr_min + (lr - lr_min) * (1 + cos(pi * epoch / epochs)) / 2``."""

    lr_min: float = 0.0

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return self.lr_min + (lr - self.lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


@dataclass(frozen=True)
class _EpochCallable(Schedule):
    fn: Callable = field(compare=False)

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return float(self.fn(epoch))


@dataclass(frozen=True)
class PerStep(Schedule):
    """``fn(step) -> lr`` of the global step (0-based), evaluated for every step of an
    epoch once, before the epoch runs."""

    fn: Callable = field(compare=False)

    def rates(self, lr, epoch, epochs, step0, n_steps) -> np.ndarray:
        """``fn(step0), ..., fn(step0 + n_steps - 1)``."""
        return np.array([float(self.fn(s)) for s in range(step0, step0 + n_steps)],
                        dtype=np.float64)


@dataclass(frozen=True)
class Warmup(Schedule):
    """Linear warm-up over the first ``steps`` optimizer steps, then ``then``.

    Step ``s`` (0-based, global) of the warm-up uses ``lr * (start_factor + (1 -
    start_factor) * s / steps)``: ``torch.optim.lr_scheduler.LinearLR(start_factor,
    end_factor=1.0, total_iters=steps)`` stepped after every iteration. From step ``steps``
    on, the rate is ``then``'s (a schedule or name, its per-epoch meaning unchanged; default
    constant ``lr``).
    """

    steps: int = 100
    start_factor: float = 1.0 / 3
    then: object = None

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) \
                or self.steps < 1:
            raise ValueError(f"Warmup steps must be an integer >= 1; got {self.steps!r}")
        f = _real("start_factor", self.start_factor)
        if not 0.0 < f <= 1.0:
            raise ValueError(f"Warmup start_factor must be in (0, 1] (as in LinearLR); got "
                             f"{self.start_factor!r}")
        object.__setattr__(self, "then", make_schedule(self.then))

    def rates(self, lr, epoch, epochs, step0, n_steps) -> np.ndarray:
        """Warm-up factors times ``lr`` for steps below ``steps``, ``then``'s rates after."""
        out = self.then.rates(lr, epoch, epochs, step0, n_steps)
        s = np.arange(step0, step0 + min(n_steps, max(0, self.steps - step0)))
        out[: s.size] = lr * (self.start_factor + (1.0 - self.start_factor) * s / self.steps)
        return out


SCHEDULES = {"constant": Constant, "step": StepDecay, "invscaling": InverseScaling,
             "cosine": Cosine}


def make_schedule(spec) -> Schedule:
    """Turn ``lr_schedule`` (None, a name, a schedule object or ``f(epoch) -> lr``) into a
    :class:`Schedule`."""
    if spec is None:
        return Constant()
    if isinstance(spec, str):
        if spec not in SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {sorted(SCHEDULES)}, a schedule object or a "
                f"callable of the epoch; got {spec!r}"
            )
        return SCHEDULES[spec]()
    if isinstance(spec, Schedule):
        return spec
    if callable(spec):
        return _EpochCallable(spec)
    raise TypeError(f"lr_schedule must be None, a name or a callable; got {type(spec).__name__}")
