"""The learning-rate search of the batch-size study: per batch size, a handful of
log-spaced rates around a scaling guess, keeping the one that reaches the target in the
fewest steps (Shallue et al. 2019: comparing batch sizes at one untuned rate measures the
rate, not the batch size).

The guess for a batch size scales the best rate of the previous (smaller) one: linearly
for SGD (Goyal et al. 2017; the noise of a step falls as 1/B), by the square root for the
adaptive optimizers (their steps are normalised by the gradient's second moment). The first
batch size searches a wider grid around the optimizer's own ``lr``. Candidates run from the
guess outwards; one that has not reached the target by the best steps so far is stopped
(it cannot win), a rate above one that diverged is not tried, and a candidate at the edge
of what was tried that wins extends the grid one factor further (when every rate diverged,
one factor lower), up to ``MAX_EXTENSIONS`` times.
"""

from __future__ import annotations

import math

#: Candidates are the guess times FACTOR ** k.
FACTOR = 2.0
#: k of the first batch size (a wide bracket) and of the others (around the scaled guess).
FIRST_GRID = (0, -1, 1, -2, 2, -3, 3)
GRID = (0, -1, 1)
#: How many times a winning edge candidate may push the grid further out.
MAX_EXTENSIONS = 2


def scaled_guess(best_lr: float, previous_b: int, batch_size: int, kernel: str) -> float:
    """The guess at ``batch_size`` from the best rate at ``previous_b``."""
    ratio = batch_size / previous_b
    return best_lr * (ratio if kernel == "sgd" else math.sqrt(ratio))


def search(guess: float, first: bool, try_lr):
    """Try rates around ``guess`` with ``try_lr(lr, step_cap)`` (returning a
    ``Trajectory``), the guess first; returns ``(best_lr, attempts, best_trajectory)``:
    the rate that reached the target in the fewest steps (None if none did), every attempt
    as a dict (``lr``, ``status``, ``steps``, ``best_loss``) and the winner's trajectory."""
    grid = list(FIRST_GRID if first else GRID)
    tried: dict[int, object] = {}
    best_k, best_steps = None, None
    extensions = 0
    while True:
        if not grid:
            # a winner at the edge of what was tried pushes the grid one factor further;
            # when every rate diverged, the grid moves down
            if extensions >= MAX_EXTENSIONS or not tried:
                break
            lo, hi = min(tried), max(tried)
            if best_k is None:
                if any(t.status != "diverged" for t in tried.values()):
                    break
                grid.append(lo - 1)
            elif best_k in (lo, hi) and lo != hi:
                grid.append(best_k + (1 if best_k == hi else -1))
            else:
                break
            extensions += 1
        k = grid.pop(0)
        if k in tried:
            continue
        # a rate above one that diverged diverges too: skip it
        if any(t.status == "diverged" and j < k for j, t in tried.items()):
            continue
        traj = try_lr(guess * FACTOR**k, best_steps)
        tried[k] = traj
        if traj.status == "ok" and (best_steps is None or traj.steps < best_steps):
            best_k, best_steps = k, traj.steps
    attempts = [dict(lr=guess * FACTOR**k, status=t.status, steps=t.steps,
                     best_loss=t.best_loss) for k, t in sorted(tried.items())]
    return (None if best_k is None else guess * FACTOR**best_k), attempts, tried.get(best_k)
