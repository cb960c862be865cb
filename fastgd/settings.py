"""The settings of a training run other than its data, validated once (``fit``, ``prepare``
and :class:`fastgd.session.Session` share them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .optim import Optimizer, Schedule, make_optimizer, make_schedule
from .validate import check_float, check_int, check_params, check_shuffle


@dataclass(frozen=True)
class RunSettings:
    """Validated: the epoch count, the optimizer, the schedule, the seed, the shuffle and
    the initial parameters (``[W1, b1, ...]`` in the run's dtype)."""

    epochs: int
    optimizer: Optimizer
    schedule: Schedule
    seed: int
    shuffle: bool | str
    init: list
    track_noise: bool


def check_run_settings(model, dtype: np.dtype, epochs=3, lr=None, momentum=None,
                       nesterov=None, weight_decay=None, lr_schedule=None, shuffle=True,
                       seed=0, params=None, optimizer=None, track_noise=False) -> RunSettings:
    """Check the arguments of ``fit`` that do not describe the data (see :func:`fastgd.fit`)
    and resolve them: a clear ``ValueError``/``TypeError`` for any bad one."""
    epochs = check_int("epochs", epochs, 1)
    if lr is not None:
        lr = check_float("lr", lr, 0.0, lo_inclusive=False)
    for name, value in (("momentum", momentum), ("weight_decay", weight_decay)):
        if value is not None:
            check_float(name, value, 0.0, lo_inclusive=True)
    opt = make_optimizer(optimizer, lr=lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay)
    seed = check_int("seed", seed, 0)
    schedule = make_schedule(lr_schedule)
    init = model.init_params(seed, dtype) if params is None else check_params(model, params,
                                                                               dtype)
    if not isinstance(track_noise, (bool, np.bool_)):
        raise TypeError(f"track_noise must be True or False; got {track_noise!r}")
    return RunSettings(epochs, opt, schedule, seed, check_shuffle(shuffle), init,
                       bool(track_noise))
