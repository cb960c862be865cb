"""The Numba CPU epoch drivers: every step of an epoch in one compiled call.

Each kernel family (``linear.py``, ``dense.py``) gets its own drivers, serial and grouped,
one per optimizer (:func:`driver`). They walk the epoch's steps; for each they compute the
batch gradient (rows from ``linear.py`` or ``dense.py``) and apply the optimizer's update
(``optim.py``) in place on the flat ``theta`` and the ``(n_state, n_params)`` ``state``.
Python never runs per step; the backend picks the driver once per run.

Parallelism and determinism
---------------------------
A step's rows are split into ``groups`` contiguous ranges, a function of the batch size and
the model only (``n_groups``), never of the thread count; groups run in parallel into their
own row of ``partial`` and are summed in a fixed order, so results do not depend on the
number of threads. Small steps run serially (one group, ``serial_epoch``): the fork/join of
a parallel region costs more than a small batch's arithmetic.

Shuffled epochs
---------------
Sample indices come from a look-ahead ring (``common.RING`` positions ahead): each index
is computed once and its row prefetched before it is used. Serial steps share one ring
across the whole epoch (the look-ahead crosses step boundaries); a parallel group primes its
own ring and looks ahead within its range only.

Buffers: ``act`` (max_groups, TILE * tile_width) scratch rows, ``partial`` (max_groups,
n_params), ``ring`` (max_groups, RING) int64, ``sums`` (2, max_groups) float64 (a group's
loss or noise sum in row 0, its batch-loss sum in row 1). ``losses``: float64 (2,), every
training step adds its mean batch loss times its rows and its rows (the epoch's training
loss, computed from the forward pass the gradient needs). ``hyper``: the optimizer's float64
hyper-parameter vector; ``lrs``: float64, one learning rate per step of the epoch. The
per-step scalars derived from them are rounded to the parameters' dtype once per step, so
the update loop stays in that dtype (float32 SIMD lanes are not widened).
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

from . import dense, linear
from .common import (
    FASTMATH,
    add_batch_loss,
    add_noise_estimates,
    inline_ir,
    n_groups,
    step_bounds,
)
from .optim import step_scalars, update_flat

# error_model="numpy": a float division by zero gives inf/nan instead of raising, so the
# optimizers' divisions need no per-element check (which kept their loops scalar); divergence
# is still caught from the loss
_parallel = njit(cache=True, fastmath=FASTMATH, parallel=True, nogil=True,
                 error_model="numpy")

# ``serial_steps``, ``group_rows``, ``group_noise_rows`` and ``loss_rows`` below are the entry
# points of a kernel family; ``OPT`` and ``ROWS`` the optimizer's code and its number of
# state rows, ``NOISE`` whether steps add gradient-noise estimates. ``_specialise`` binds
# them (as compile-time globals) to one family's functions and one optimizer, so the
# update's branches and the noise code fold away in every copy.
serial_steps = group_rows = group_noise_rows = loss_rows = None
OPT = ROWS = NOISE = 0


def serial_epoch(X, Y, theta, state, hyper, lrs, keys, layout, act, partial, ring, sums, noise,
                 losses, cfg):
    """Run steps ``cfg.start .. cfg.stop`` of an epoch, one after the other, in place on
    ``theta``/``state``. For batches too small to split (``n_groups == 1``).

    ``X``: (n, d) C-contiguous; ``Y``: (n, k) targets (class id in column 0 for softmax).
    ``noise``: float64 (3,), the gradient-noise sums the steps add to when ``NOISE``.
    """
    serial_steps(X, Y, theta, state, hyper, lrs, keys, ring[0], act[0], partial[0], layout, cfg,
                 OPT, ROWS, NOISE, noise, losses)


@inline_ir
def sum_groups(partial, sums, groups):
    """Sum the groups' gradients into ``partial[0]`` (returned) and their batch-loss sums
    into ``sums[1, 0]``, in group order (the fixed order that keeps results independent of
    the thread count)."""
    total = partial[0]
    for g in range(1, groups):
        other = partial[g]
        for i in range(total.size):
            total[i] += other[i]
        sums[1, 0] += sums[1, g]
    return total


def grouped_epoch(X, Y, theta, state, hyper, lrs, keys, layout, act, partial, ring, sums, noise,
                  losses, cfg):
    """Like :func:`serial_epoch`, each step's rows split into parallel groups (with
    ``NOISE``, each group's sum of squared per-example gradient norms goes to ``sums``)."""
    n = X.shape[0]
    n_out = layout[0][layout[0].size - 1]
    cast = theta.dtype.type
    for step in range(cfg.start, cfg.stop):
        start, rows, scale = step_bounds(step, n, cfg, n_out)
        groups = n_groups(rows, cfg.rows_per_group, cfg.max_groups)
        for g in prange(groups):
            lo = start + g * rows // groups
            hi = start + (g + 1) * rows // groups
            if NOISE:
                sums[1, g], sums[0, g] = group_noise_rows(X, Y, theta, act[g], partial[g], keys,
                                                          ring[g], lo, hi, layout, cfg, scale)
            else:
                sums[1, g] = group_rows(X, Y, theta, act[g], partial[g], keys, ring[g], lo, hi,
                                        layout, cfg, scale)
        total = sum_groups(partial, sums, groups)
        add_batch_loss(losses, sums[1, 0], scale, rows)
        if NOISE:
            sq = 0.0
            for g in range(groups):
                sq += sums[0, g]
            add_noise_estimates(noise, total, sq, rows, n)
        s = step_scalars(OPT, hyper, lrs[step], cfg.step0 + step + 1, cast)
        update_flat(theta, state, total, OPT, s, ROWS)


def dataset_loss(X, Y, theta, layout, act, sums, cfg):
    """Mean loss over all rows of ``X`` (float64), rows split into fixed groups."""
    n = X.shape[0]
    n_out = layout[0][layout[0].size - 1]
    groups = n_groups(n, cfg.rows_per_group, cfg.max_groups)
    for g in prange(groups):
        sums[0, g] = loss_rows(X, Y, theta, act[g], g * n // groups, (g + 1) * n // groups,
                               layout, cfg)
    total = 0.0
    for g in range(groups):
        total += sums[0, g]
    return total / n if cfg.loss == 2 else total / (n * n_out)


def dataset_noise(X, Y, theta, layout, act, partial, ring, sums, cfg, scale):
    """``(S, |G|^2)`` over all rows of ``X`` (unshuffled ``cfg``) at ``theta``: the mean of
    the per-example squared gradient norms and the squared norm of the mean gradient, in
    float64, in one pass (rows split into fixed groups; ``scale`` is a batch of one's)."""
    n = X.shape[0]
    groups = n_groups(n, cfg.rows_per_group, cfg.max_groups)
    no_keys = np.zeros(0, np.uint64)
    for g in prange(groups):
        sums[1, g], sums[0, g] = group_noise_rows(X, Y, theta, act[g], partial[g], no_keys,
                                                  ring[g], g * n // groups,
                                                  (g + 1) * n // groups, layout, cfg, scale)
    sq = 0.0
    for g in range(groups):
        sq += sums[0, g]
    grad_sq = 0.0
    for i in range(theta.size):
        v = 0.0
        for g in range(groups):
            v += np.float64(partial[g, i])
        v /= n
        grad_sq += v * v
    return sq / n, grad_sq


def _specialise(fn, family, name, **constants):
    """Compile the driver ``fn`` for ``family`` (``linear`` or ``dense``) under its own name,
    with ``constants`` (``OPT``, ``ROWS``) as compile-time globals.

    Each family gets its own compiled driver, so a linear model never compiles the MLP
    kernels. The copy has its own qualified name, hence its own Numba cache file (a closure
    would do the same job but its cache key hashes the captured dispatchers, which differ in
    every process, so it would never load from the cache)."""
    scope = dict(fn.__globals__, serial_steps=family.serial_steps, group_rows=family.group_rows,
                 group_noise_rows=family.group_noise_rows, loss_rows=family.loss_rows,
                 **constants)
    copy = types.FunctionType(fn.__code__, scope, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__, copy.__doc__, copy.__module__ = name, fn.__doc__, fn.__module__
    return _parallel(copy)


# The drivers are compiled with ``parallel=True``. The serial one has no ``prange`` (Numba
# warns that nothing was parallelised; the backend silences it), yet it runs faster than the
# same code compiled as a plain ``njit`` function (measured, linear d=64: batch 1 at 36 vs
# 75 ns a row, shuffled batch 256 at 60-67 vs 78-88). One driver per (family, serial or
# grouped, optimizer code, state rows, noise tracking), made on first use: a fit compiles
# only the one it needs (each about as long to compile as the family's only driver was
# before).
FAMILIES = {"linear": linear, "dense": dense}
DRIVERS = {"serial": serial_epoch, "grouped": grouped_epoch}
_drivers: dict[tuple, object] = {}


def driver(family: str, kind: str, code: int, rows: int, noise: bool = False):
    """The epoch driver of a kernel family (``"linear"``/``"dense"``), ``kind``
    (``"serial"``/``"grouped"``), optimizer (``code``, ``rows`` state rows) and whether its
    steps track gradient noise."""
    key = (family, kind, int(code), int(rows), bool(noise))
    if key not in _drivers:
        suffix = "_noise" if noise else ""
        _drivers[key] = _specialise(DRIVERS[kind], FAMILIES[family],
                                    f"{family}_{kind}_epoch_opt{code}_rows{rows}{suffix}",
                                    OPT=int(code), ROWS=int(rows), NOISE=int(bool(noise)))
    return _drivers[key]


linear_loss = _specialise(dataset_loss, linear, "linear_loss")
dense_loss = _specialise(dataset_loss, dense, "dense_loss")
linear_noise = _specialise(dataset_noise, linear, "linear_noise")
dense_noise = _specialise(dataset_noise, dense, "dense_noise")
