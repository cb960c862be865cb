"""The data-parallel epoch driver: every rank's steps in compiled code, the gradient
exchanged between ranks inside the same compiled loop (numba-mpi).

Each step: the rank's gradient of its own batch (row groups as in ``epoch.grouped_epoch``,
summed in a fixed order), then ``MPI_Allgather`` of that flat gradient into a
``(ranks, n_params)`` buffer, then every rank sums the rows in rank order and divides by
the number of ranks. The sum's order is fixed by construction (not left to the MPI
library's reduction algorithm), so every rank applies the same bits and the run does not
depend on timing; with equal batches on every rank the mean of the ranks' mean gradients
is the gradient of the mean over the global batch. The update is the optimizer's fused one
(``optim.py``). An allgather moves ``(ranks - 1) * n_params`` values to each rank, an
all-reduce ``2 (ranks - 1) / ranks`` times fewer for large ``ranks``: the price of a
reduction order that cannot vary (``bench/RESULTS.md`` models both).

Needs ``numba-mpi`` (the ``mpi`` extra); it runs on ``MPI.COMM_WORLD``.
"""

from __future__ import annotations

import numba_mpi
from numba import njit, prange

from .common import add_batch_loss, n_groups, step_bounds
from .epoch import _specialise, sum_groups
from .optim import step_scalars, update_flat

# bound per kernel family and optimizer by ``_specialise`` (compile-time globals)
group_rows = None
OPT = ROWS = 0


@njit(nogil=True)
def ranks_mean(vec, vec_bits, gathered, gathered_bits, inv, status, timing):
    """Overwrite ``vec`` (1-D) with the mean of every rank's ``vec``: an all-gather of its
    raw bits (``vec_bits``, an integer view) into ``gathered``, then a sum in rank order
    times ``inv`` (1 / ranks). False (and ``status[0]`` set) when MPI failed."""
    t0 = numba_mpi.wtime()
    code = numba_mpi.allgather(vec_bits, gathered_bits, vec.size)
    timing[0] += numba_mpi.wtime() - t0
    if code != 0:
        status[0] = code
        return False
    ranks = gathered.shape[0]
    for i in range(vec.size):
        v = gathered[0, i]
        for r in range(1, ranks):
            v += gathered[r, i]
        vec[i] = v * inv
    return True


def distributed_epoch(X, Y, theta, state, hyper, lrs, keys, layout, act, partial, ring, sums,
                      noise, losses, cfg, gathered, gathered_bits, sent_bits, theta_bits,
                      state_bits, sync_every, status, timing):
    """Steps ``cfg.start .. cfg.stop`` of this rank's epoch (arguments as
    ``epoch.grouped_epoch``'s); ``gathered``: ``(ranks, n_params)`` in the parameters'
    dtype; ``gathered_bits`` and ``sent_bits``: integer views (of the same item size) of
    ``gathered`` and of ``partial[0]``, the step's gradient, which the all-gather moves as
    raw bits (numba-mpi has no float32 type, and a gather does no arithmetic);
    ``theta_bits``/``state_bits``: integer views of ``theta`` and ``state``;
    ``sync_every``: 0 to average the gradients every step, else ``K`` for local SGD: each
    rank steps on its own gradient and the ranks average parameters and optimizer state
    after every ``K``-th global step and after the call's last step (so every epoch ends
    with the same bits on every rank); ``status``: int64 (1,), set to the first non-zero
    MPI return code (the loop then stops); ``timing``: float64 (1,), the seconds spent in
    the all-gathers are added to it (the transfer and any wait for a slower rank:
    ``MPI_Wtime`` around each call)."""
    n = X.shape[0]
    n_out = layout[0][layout[0].size - 1]
    cast = theta.dtype.type
    inv = cast(1.0 / gathered.shape[0])
    for step in range(cfg.start, cfg.stop):
        start, rows, scale = step_bounds(step, n, cfg, n_out)
        groups = n_groups(rows, cfg.rows_per_group, cfg.max_groups)
        for g in prange(groups):
            lo = start + g * rows // groups
            hi = start + (g + 1) * rows // groups
            sums[1, g] = group_rows(X, Y, theta, act[g], partial[g], keys, ring[g], lo, hi,
                                    layout, cfg, scale)
        total = sum_groups(partial, sums, groups)
        add_batch_loss(losses, sums[1, 0], scale, rows)
        if sync_every == 0 and not ranks_mean(total, sent_bits, gathered, gathered_bits, inv,
                                              status, timing):
            return
        s = step_scalars(OPT, hyper, lrs[step], cfg.step0 + step + 1, cast)
        update_flat(theta, state, total, OPT, s, ROWS)
        if sync_every > 0 and ((cfg.step0 + step + 1) % sync_every == 0
                               or step == cfg.stop - 1):
            if not ranks_mean(theta, theta_bits, gathered, gathered_bits, inv, status,
                              timing):
                return
            for row in range(state.shape[0]):
                if not ranks_mean(state[row], state_bits[row], gathered, gathered_bits, inv,
                                  status, timing):
                    return


_drivers: dict[tuple, object] = {}


def driver(family: str, code: int, rows: int):
    """The data-parallel driver of a kernel family and optimizer (made on first use)."""
    from . import dense, linear

    key = (family, int(code), int(rows))
    if key not in _drivers:
        _drivers[key] = _specialise(distributed_epoch, {"linear": linear, "dense": dense}[family],
                                    f"{family}_distributed_epoch_opt{code}_rows{rows}",
                                    OPT=int(code), ROWS=int(rows))
    return _drivers[key]
