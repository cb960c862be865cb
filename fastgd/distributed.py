"""Data-parallel training over MPI ranks (``fit(comm=MPI.COMM_WORLD)``): the checks that
keep ranks from deadlocking, and the epoch-level reductions.

Each rank passes its own shard; ``batch_size`` is the per-rank batch. Every step's gradient
is the mean of the ranks' batch gradients, exchanged inside the compiled loop
(``kernels/cpu/distributed.py``; the ``numpy`` backend calls mpi4py per step) and summed in
rank order, so every rank applies the same update and ends with the same bits. Before
training the ranks check, together, that each one's data and settings are valid and that
they agree (an error names the rank and the field, on every rank, instead of a hang).
Shards of unequal length train on the shortest one's number of rows (each rank's extra rows
are dropped every epoch), so every rank takes the same steps. With ``shuffle``, rank ``r``
permutes its own shard with the keyed bijection of ``(rank_seed(seed, r), epoch)``.

A rank that fails during training (an exception, Ctrl-C) cannot be waited for by the
others, which are inside a collective: it writes the error and calls ``MPI_Abort``, which
ends every rank of the job at once; a divergence is seen by all ranks together (the epoch's
loss is reduced over them) and raises ``DivergenceError`` on each.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import replace

import numpy as np

#: Seconds between printing a failing rank's error and ``MPI_Abort``.
ABORT_GRACE_S = 1.0
#: Backends whose steps can exchange gradients.
BACKENDS = ("numpy", "numba-cpu")
_GOLDEN = 0x9E3779B97F4A7C15


def rank_seed(seed: int, rank: int) -> int:
    """The shuffle seed of ``rank``'s shard (rank 0 keeps ``seed``)."""
    return (int(seed) + _GOLDEN * int(rank)) & ((1 << 63) - 1)


def check_comm(comm, backend: str) -> None:
    """``comm`` must be ``MPI.COMM_WORLD`` (or congruent to it: numba-mpi's compiled
    collectives run on it) and the backend one that exchanges gradients."""
    from mpi4py import MPI

    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py communicator; got {type(comm).__name__}")
    if MPI.Comm.Compare(comm, MPI.COMM_WORLD) not in (MPI.IDENT, MPI.CONGRUENT):
        raise ValueError("comm must be MPI.COMM_WORLD (the compiled all-gather of numba-mpi "
                         "runs on it)")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} cannot train data-parallel yet; use one of "
                         f"{BACKENDS}")


def fingerprint(plan, backend: str, epochs: int, schedule, init, eval_every: int,
                n_features: int) -> dict:
    """What every rank must agree on, as plain values."""
    sched = schedule.__class__.__name__
    if hasattr(schedule, "__dataclass_fields__") and sched != "_EpochCallable":
        sched = repr(schedule)
    return {"model": (plan.sizes, plan.loss, plan.activation), "dtype": plan.dtype.name,
            "mode": plan.mode, "drop_last": plan.drop_last,
            # BGD's batch is the shard (equalised by shard_plan), not a setting
            "batch_size": None if plan.mode == "bgd" else plan.batch_size,
            "shuffle": (plan.shuffle, plan.block_rows, plan.shuffle_once), "seed": plan.seed,
            "optimizer": plan.optimizer.to_dict(), "track_noise": plan.track_noise,
            "epochs": epochs, "lr_schedule": sched, "backend": backend,
            "eval_every": eval_every, "n_features": n_features,
            "sync_every": plan.sync_every,
            "initial parameters": hashlib.sha256(
                b"".join(np.ascontiguousarray(p).tobytes() for p in init)).hexdigest()[:16]}


def together(comm, check):
    """Run ``check()`` on every rank; if it raised on any, raise on every rank a
    ``ValueError`` naming each failing rank and its error."""
    result, error = None, None
    try:
        result = check()
    except Exception as exc:  # noqa: BLE001 - reported to every rank below
        error = f"{type(exc).__name__}: {exc}"
    errors = comm.allgather(error)
    bad = [f"rank {r}: {e}" for r, e in enumerate(errors) if e]
    if bad:
        raise ValueError("data-parallel fit stopped before training on every rank; "
                         + "; ".join(bad))
    return result


def agree(comm, fields: dict) -> None:
    """Every rank's ``fields`` must equal rank 0's: else a ``ValueError`` on every rank
    naming the first rank and field that differ."""
    everyone = comm.allgather(fields)
    for r, theirs in enumerate(everyone):
        for key, value in everyone[0].items():
            if theirs.get(key) != value:
                raise ValueError(f"rank {r} disagrees with rank 0 on {key}: {theirs.get(key)!r}"
                                 f" against {value!r}; every rank must train the same run")


def shard_plan(comm, plan, n: int):
    """``(plan for this rank, rows every rank trains on)``: the shortest shard's length."""
    from mpi4py import MPI

    rows = comm.allreduce(int(n), op=MPI.MIN)
    batch = rows if plan.mode == "bgd" else plan.batch_size
    return replace(plan, ranks=comm.Get_size(), batch_size=batch,
                   seed=rank_seed(plan.seed, comm.Get_rank())), rows


def mean_over_ranks(comm, value, weight: float = 1.0):
    """The ``weight``-weighted mean of every rank's ``value`` (None stays None), summed in
    rank order so every rank gets the same bits."""
    if value is None:
        return None
    pairs = comm.allgather((float(value) * weight, float(weight)))
    total = weights = 0.0
    for v, w in pairs:
        total += v
        weights += w
    return total / weights


def abort(comm, exc: BaseException) -> None:
    """Report ``exc`` on this rank and end every rank of the job (``MPI_Abort``): the
    others wait in a collective this rank will never join."""
    print(f"fastgd: rank {comm.Get_rank()} of {comm.Get_size()} failed during data-parallel "
          f"training ({type(exc).__name__}: {exc}); aborting every rank", file=sys.stderr,
          flush=True)
    # MPI_Abort tears the job down at once; mpiexec may drop output it has not forwarded
    # yet (seen once: an empty stderr), so give it a moment to pass the message on
    time.sleep(ABORT_GRACE_S)
    comm.Abort(1)
