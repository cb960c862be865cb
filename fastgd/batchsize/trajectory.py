"""Train one configuration until a target loss: steps and seconds to the first crossing.

The loss is evaluated (exactly, on the whole training or validation set) at checkpoints
outside the timed region: geometrically spaced steps (each ``CHECKPOINT_RATIO`` times the
last, at least one step apart). When a checkpoint is at or below the target, the crossing
lies between it and the previous one; the backend goes back to the saved previous
checkpoint (``Backend.load``) and bisects that interval by replaying it (the same steps,
the same bits: the backends are deterministic) until the interval is within
``RESOLUTION`` of its upper end. The count reported is that upper end, so it is at most
``RESOLUTION`` above the first crossing the bisection brackets.

Seconds to target are measured: the steady-state time inside ``run_epoch`` of every step
up to the crossing (compile excluded: ``prepare`` compiled already), each interval timed
when it ran (a replayed interval's time replaces nothing: it is the time of those steps).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

#: Each checkpoint is at most this many times the previous one's step count.
CHECKPOINT_RATIO = 1.25
#: The bisection stops when its interval is within this fraction of its upper end.
RESOLUTION = 0.04


@dataclass
class Point:
    """A saved point of a run: step count, elapsed training seconds, the loss there and the
    backend's state (host copies) to go back to."""

    step: int
    seconds: float
    loss: float
    theta: np.ndarray | None = None
    state: np.ndarray | None = None


@dataclass
class Trajectory:
    """What :func:`train_to_target` found. ``status``: ``"ok"`` (reached; ``steps`` and
    ``seconds`` are to the target), ``"not reached"`` (within the step budget; ``best_loss``
    is the lowest checkpoint loss), ``"diverged"`` (the loss became NaN/inf or exploded) or
    ``"pruned"`` (stopped at ``step_cap``, below ``max_steps``: it could not beat a
    faster candidate).
    ``curve`` holds (step, seconds, loss) at every checkpoint, in order of steps."""

    status: str
    steps: int | None = None
    seconds: float | None = None
    loss: float | None = None
    best_loss: float = math.inf
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    train_steps: int = 0
    train_seconds: float = 0.0
    end: Point | None = None

    @property
    def step_s(self) -> float | None:
        """Measured seconds per step over everything this run trained (replays included)."""
        return self.train_seconds / self.train_steps if self.train_steps else None


class Runner:
    """Steps a prepared run (``fastgd.prepare``) forward across epoch boundaries, timing
    only the training calls; ``snapshot``/``restore`` go back to a saved point."""

    def __init__(self, run, evaluate):
        self.run, self.evaluate = run, evaluate
        self.engine = run.engine
        self.per_epoch = run.steps_per_epoch
        self.step, self.seconds = 0, 0.0
        self.trained_steps, self.trained_seconds = 0, 0.0
        self._rates: dict[int, np.ndarray] = {}

    def _epoch_rates(self, epoch: int, start: int) -> np.ndarray:
        if epoch not in self._rates:
            # a schedule's rates continue from the step counter at the epoch's first step;
            # kept, so that a replay from inside the epoch uses the same ones
            assert start == 0, "an epoch's rates are computed at its first step"
            self._rates[epoch] = self.run.rates(epoch)
        return self._rates[epoch]

    def advance_to(self, step: int) -> None:
        """Train until ``step`` steps are done (timed: the seconds add to ``seconds``)."""
        while self.step < step:
            epoch, start = divmod(self.step, self.per_epoch)
            stop = min(self.per_epoch, start + step - self.step)
            lrs = self._epoch_rates(epoch, start)
            t = time.perf_counter()
            self.engine.run_epoch(epoch, lrs, start, stop)
            self.engine.synchronize()
            dt = time.perf_counter() - t
            self.seconds += dt
            self.trained_seconds += dt
            self.trained_steps += stop - start
            self.step += stop - start

    def snapshot(self, loss: float) -> Point:
        """The current point, with copies of the parameters and the optimizer state."""
        return Point(self.step, self.seconds, loss, self.engine.params(), self.engine.state())

    def restore(self, point: Point) -> None:
        """Go back to ``point`` (its parameters, state, step count and elapsed seconds)."""
        self.engine.load(point.theta, point.state, point.step)
        self.step, self.seconds = point.step, point.seconds


def _diverged(loss: float, initial: float) -> bool:
    return not math.isfinite(loss) or loss > 1e3 * max(initial, 1e-12)


def next_checkpoint(step: int) -> int:
    """The checkpoint after ``step``: ``CHECKPOINT_RATIO`` times it, at least one step on."""
    return max(step + 1, math.ceil(step * CHECKPOINT_RATIO))


def train_to_target(run, target: float, max_steps: int, evaluate,
                    step_cap: int | None = None) -> Trajectory:
    """Train ``run`` (a ``fastgd.PreparedRun``) until ``evaluate()`` (the exact loss at the
    current parameters) is ``<= target``, for at most ``max_steps`` steps (``step_cap``:
    give up earlier, as ``"pruned"``); see the module docstring."""
    runner = Runner(run, evaluate)
    loss = evaluate()
    initial = loss
    previous = runner.snapshot(loss)
    out = Trajectory("not reached", best_loss=loss, curve=[(0, 0.0, loss)])
    if loss <= target:
        out.status, out.steps, out.seconds, out.loss = "ok", 0, 0.0, loss
        out.end = previous
        return out
    limit = max_steps if step_cap is None else min(max_steps, step_cap)
    while runner.step < limit:
        runner.advance_to(min(next_checkpoint(runner.step), limit))
        loss = evaluate()
        out.curve.append((runner.step, runner.seconds, loss))
        out.best_loss = min(out.best_loss, loss) if math.isfinite(loss) else out.best_loss
        if _diverged(loss, initial):
            out.status = "diverged"
            break
        if loss <= target:
            _bisect(runner, previous, runner.snapshot(loss), target, out)
            break
        previous = runner.snapshot(loss)
    else:
        if step_cap is not None and step_cap < max_steps:
            out.status = "pruned"
    out.train_steps, out.train_seconds = runner.trained_steps, runner.trained_seconds
    if out.end is None:
        out.end = runner.snapshot(loss)
    return out


def _bisect(runner: Runner, lo: Point, hi: Point, target: float, out: Trajectory) -> None:
    """Narrow ``(lo, hi]`` (``lo`` above the target, ``hi`` at or below) by replays."""
    while hi.step - lo.step > max(1, math.floor(RESOLUTION * hi.step)):
        mid = (lo.step + hi.step) // 2
        runner.restore(lo)
        runner.advance_to(mid)
        loss = runner.evaluate()
        point = runner.snapshot(loss)
        out.curve.append((mid, runner.seconds, loss))
        if loss <= target:
            hi = point
        else:
            lo = point
    out.curve.sort()
    out.status, out.steps, out.seconds, out.loss, out.end = "ok", hi.step, hi.seconds, hi.loss, hi
    out.best_loss = min(out.best_loss, hi.loss)
    runner.restore(hi)
