"""``fg.batch_size_study``: which batch size reaches a target loss fastest here, and why.

For every batch size: tune the learning rate (``tuning.py``), train to the target and
count steps and measured seconds (``trajectory.py``), then at the parameters where the
target was reached measure the exact gradient noise scale, train/validation accuracy and
loss (the generalization gap) and the sharpness (the Hessian's top eigenvalue). Across
batch sizes, fit McCandlish's ``S(B) = S_min (1 + B_crit / B)`` (``scaling.py``) and
explain the recommendation from the fit and the measured step times (``report.py``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import statistics
import warnings

import numpy as np

from ..fit import prepare
from ..kernels.reference import unflatten
from ..measure import estimate_memory
from ..metrics import accuracy
from ..noise import exact_from_engine
from ..optim import SGD, make_optimizer
from ..plan import Plan
from ..validate import check_dtype, check_features, check_float, check_int, check_targets
from . import tuning
from .report import BatchSizeStudy, StudyGroup
from .scaling import fit_critical_batch
from .trajectory import Runner, train_to_target

#: Rows of the training set the sharpness is computed on (a fixed seeded subsample above).
SHARPNESS_ROWS = 1024
#: Checkpoints of the noise-over-training curve of the recommended batch size.
NOISE_POINTS = 10


def default_batch_sizes(n: int) -> tuple[int, ...]:
    """Powers of two from 1 up to ``n`` (and ``n`` itself: full batch)."""
    sizes = [2**k for k in range(int(math.log2(n)) + 1)]
    return tuple(sizes if sizes[-1] == n else [*sizes, n])


def _mode(batch_size: int, n: int) -> str:
    return "sgd" if batch_size == 1 else "bgd" if batch_size >= n else "mbgd"


def _optimizers(optimizer, momentum):
    """One optimizer spec per momentum value (momentum is SGD's; a tuple runs each; None
    keeps the optimizer's own)."""
    opt = make_optimizer(optimizer) if optimizer is not None else SGD()
    if momentum is None:
        return [(getattr(opt, "momentum", None), opt)]
    values = tuple(momentum) if isinstance(momentum, (tuple, list)) else (momentum,)
    if not values:
        raise ValueError("momentum must be a number or a non-empty tuple of numbers")
    if opt.kernel != "sgd":
        if values != (0.0,):
            raise ValueError(f"momentum applies to SGD; {type(opt).__name__} has its own "
                             "moments: leave momentum at 0.0")
        return [(None, opt)]
    out = []
    for m in values:
        m = check_float("momentum", m, 0.0, lo_inclusive=True)
        if m >= 1:
            raise ValueError(f"momentum must be in [0, 1); got {m}")
        out.append((m, dataclasses.replace(opt, momentum=m)))
    return out


class _Problem:
    """The validated data and settings every configuration of a study shares."""

    def __init__(self, model, X, y, X_val, y_val, target_loss, backend, dtype, max_epochs,
                 seed, memory_budget):
        self.model, self.backend, self.seed = model, backend, check_int("seed", seed, 0)
        self.dtype = check_dtype(dtype)
        self.X = check_features(X, model.n_features, self.dtype, "X")
        self.y = y
        self.Y = check_targets(y, model, len(self.X), self.dtype, "y")
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        self.val = None
        if X_val is not None:
            Xv = check_features(X_val, model.n_features, self.dtype, "X_val")
            self.val = (Xv, y_val, check_targets(y_val, model, len(Xv), self.dtype, "y_val"))
        self.target = check_float("target_loss", target_loss, 0.0, lo_inclusive=False)
        self.max_epochs = check_int("max_epochs", max_epochs, 1)
        self.memory_budget = (None if memory_budget is None
                              else check_int("memory_budget", memory_budget, 1))
        self.init = model.init_params(self.seed, self.dtype)
        self.n = len(self.X)

    def prepare(self, batch_size: int, optimizer):
        """A prepared run of ``batch_size`` from the study's initial parameters."""
        val = {} if self.val is None else dict(X_val=self.val[0], y_val=self.val[1])
        return prepare(self.model, self.X, self.y, mode=_mode(batch_size, self.n),
                       batch_size=batch_size, epochs=self.max_epochs, optimizer=optimizer,
                       seed=self.seed, backend=self.backend, dtype=self.dtype,
                       params=self.init, **val)

    def evaluate(self, run, on: str):
        """The exact loss the target is judged on: training (``on="train"``) or validation."""
        if on == "val":
            Xv, Yv = run.val
            return lambda: run.engine.loss(Xv, Yv)
        return run.engine.train_loss

    def memory(self, batch_size: int, optimizer) -> int | None:
        """Predicted peak host bytes of a fit on a host backend; None for a device backend
        (its peak is measured after the run) or one without a memory model."""
        plan = Plan.for_model(self.model, self.dtype, _mode(batch_size, self.n), batch_size,
                              optimizer=optimizer)
        n_val = 0 if self.val is None else len(self.val[0])
        try:
            return int(estimate_memory(plan, self.n, n_val, backend=self.backend).total)
        except ValueError:
            return None


def _lr_for(lr, batch_size):
    if callable(lr):
        return check_float("lr(batch_size)", lr(batch_size), 0.0, lo_inclusive=False)
    return check_float("lr", lr, 0.0, lo_inclusive=False)


def _measure_at_target(problem, run, traj, sharpness_rows) -> dict:
    """Noise, accuracy, losses, gap and sharpness at the point the target was reached."""
    from ..sharpness import sharpness

    model, engine = problem.model, run.engine
    params = [p.copy() for p in unflatten(traj.end.theta, model.sizes)]
    out = dict(train_loss=engine.train_loss())
    noise = exact_from_engine(engine, problem.X, problem.Y)
    out["b_simple"] = noise.b_simple
    out["train_accuracy"] = accuracy(model, params, problem.X, problem.Y)
    if problem.val is not None:
        Xv, _, Yv = problem.val
        out["val_loss"] = engine.loss(Xv, Yv)
        out["val_accuracy"] = accuracy(model, params, Xv, Yv)
        if out["train_accuracy"] is not None:
            out["generalization_gap"] = out["train_accuracy"] - out["val_accuracy"]
        else:
            out["generalization_gap"] = out["val_loss"] - out["train_loss"]
    if sharpness_rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sharp = sharpness(model, params, problem.X, problem.y, max_iter=50, tol=1e-3,
                              seed=problem.seed, max_rows=min(sharpness_rows, problem.n))
        out["sharpness"] = sharp.value
        out["sharpness_converged"] = sharp.converged
    return out


def _row(problem, batch_size, optimizer, lr, previous, target_on, sharpness_rows, progress):
    """One batch size: tune (or take) the rate, train to target, measure there."""
    row = dict(batch_size=batch_size, mode=_mode(batch_size, problem.n), status="ok",
               reason=None, lr=None)
    mem = problem.memory(batch_size, optimizer)
    row["peak_memory_bytes"] = mem
    if problem.memory_budget is not None and mem is not None and mem > problem.memory_budget:
        return dict(row, status="over budget",
                    reason=f"needs about {mem / 2**20:.1f} MiB, over the memory budget of "
                           f"{problem.memory_budget / 2**20:.1f} MiB"), None
    kept = {}

    def try_lr(rate, step_cap):
        try:
            run = problem.prepare(batch_size, dataclasses.replace(optimizer, lr=rate))
        except MemoryError as exc:
            raise _OutOfMemory(str(exc)) from exc
        max_steps = problem.max_epochs * run.steps_per_epoch
        traj = train_to_target(run, problem.target, max_steps,
                               problem.evaluate(run, target_on), step_cap)
        if progress is not None:
            progress(batch_size, rate, traj)
        best = kept.get("traj")
        if traj.status == "ok" and (best is None or best.status != "ok"
                                    or traj.steps < best.steps):
            kept.update(run=run, traj=traj, lr=rate)
        elif best is None or (best.status != "ok" and traj.best_loss < best.best_loss):
            kept.update(run=run, traj=traj, lr=rate)
        return traj

    try:
        if lr == "tune":
            guess = (optimizer.lr if previous is None else tuning.scaled_guess(
                previous[1], previous[0], batch_size, optimizer.kernel))
            best_lr, attempts, _ = tuning.search(guess, previous is None, try_lr)
        else:
            rate = _lr_for(lr, batch_size)
            traj = try_lr(rate, None)
            best_lr, attempts = (rate if traj.status == "ok" else None), [
                dict(lr=rate, status=traj.status, steps=traj.steps, best_loss=traj.best_loss)]
    except _OutOfMemory as exc:
        return dict(row, status="out of memory", reason=str(exc)), None
    row["lrs_tried"] = attempts
    traj, run = kept.get("traj"), kept.get("run")
    row["lr"] = kept.get("lr")
    row["best_loss"] = None if traj is None else traj.best_loss
    if best_lr is None:
        statuses = {a["status"] for a in attempts}
        row["status"] = "diverged" if statuses == {"diverged"} else "not reached"
        row["reason"] = (f"no learning rate tried ({_rates(attempts)}) reached loss "
                         f"{problem.target:g} within {problem.max_epochs} epochs; the lowest "
                         f"loss reached was {row['best_loss']:.4g}" if row["status"] ==
                         "not reached" else f"every learning rate tried diverged "
                         f"({_rates(attempts)})")
        if traj is not None:
            row["step_s"] = traj.step_s
        return row, None
    if traj.steps == 0:
        raise ValueError(f"the initial parameters already have loss {traj.loss:.4g} <= "
                         f"target_loss={problem.target:g}: lower the target")
    row.update(steps_to_target=traj.steps, examples_to_target=_examples(traj.steps, batch_size,
                                                                        problem.n),
               seconds_to_target=traj.seconds, step_s=traj.step_s, loss_at_target=traj.loss,
               curve=traj.curve)
    dev = run.engine.memory()
    if dev is not None:
        row["peak_memory_bytes"] = dev
    row.update(_measure_at_target(problem, run, traj, sharpness_rows))
    return row, (batch_size, best_lr)


class _OutOfMemory(Exception):
    pass


def _rates(attempts) -> str:
    return ", ".join(f"{a['lr']:.3g}" for a in attempts)


def _examples(steps: int, batch_size: int, n: int) -> int:
    """Examples seen in ``steps`` steps: whole epochs of ``n``, then full batches (an
    epoch's partial batch is its last step)."""
    full, rest = divmod(steps, math.ceil(n / batch_size))
    return full * n + rest * batch_size


def _noise_curve(problem, optimizer, batch_size, lr, steps) -> list[dict]:
    """The exact noise scale along the recommended configuration's run (a replay outside
    any timing) at ``NOISE_POINTS`` geometric checkpoints up to the target."""
    run = problem.prepare(batch_size, dataclasses.replace(optimizer, lr=lr))
    runner = Runner(run, run.engine.train_loss)
    marks = sorted({max(1, round(steps ** (i / (NOISE_POINTS - 1))))
                    for i in range(NOISE_POINTS)}) if steps > 0 else []
    out = []
    for mark in [0, *marks]:
        runner.advance_to(mark)
        noise = exact_from_engine(run.engine, problem.X, problem.Y)
        out.append(dict(step=mark, train_loss=run.engine.train_loss(),
                        b_simple=noise.b_simple, trace_cov=noise.trace_cov,
                        grad_norm_sq=noise.grad_norm_sq))
    return out


def batch_size_study(model, X, y, target_loss=0.3, batch_sizes=None, lr="tune",
                     optimizer=None, momentum=None, backend="numba-cpu", max_epochs=50,
                     X_val=None, y_val=None, memory_budget=None, seed=0, dtype="float32",
                     target_on="train", sharpness_rows=SHARPNESS_ROWS, progress=None):
    """Which batch size reaches ``target_loss`` fastest on this machine, and why.

    For each batch size (default: powers of two from 1 to ``n``, those that fit
    ``memory_budget`` bytes), ``lr="tune"`` searches a handful of log-spaced learning rates
    around a scaling guess and keeps the one reaching the target in the fewest steps (a
    float, or a callable ``lr(batch_size)``, is used as given). Steps to target are found
    at checkpoints of the exact loss (training loss, or validation loss with
    ``target_on="val"``) outside the timed region, to within 4% of the crossing the
    checkpoints bracket (the first one unless the loss dipped below the target and back
    between two checkpoints);
    seconds to target are the measured steady-state training time until then (compile
    excluded). At the target: the exact gradient noise scale, train and validation
    accuracy/loss and their gap, and the sharpness (``fg.sharpness`` on up to
    ``sharpness_rows`` rows; 0 skips it). ``optimizer``: a ``fastgd`` optimizer spec (its
    ``lr`` centres the first search; default ``fg.SGD()``); ``momentum``: SGD's (None: the
    optimizer's own), or a tuple to run the study once per value (a :class:`StudyGroup`).

    Returns a :class:`BatchSizeStudy`: ``rows`` (one dict per batch size, with ``status``
    and a ``reason`` when it did not reach the target), ``critical`` (the fitted ``s_min``,
    ``e_min``, ``b_crit``, ``r2`` and ``b_simple``), ``recommended_batch_size``,
    ``explanation``, and ``to_markdown()``, ``to_json(path)``, ``plot(path)``.
    ``progress(batch_size, lr, trajectory)`` is called after every training run.
    """
    if target_on not in ("train", "val"):
        raise ValueError(f"target_on must be 'train' or 'val'; got {target_on!r}")
    if target_on == "val" and X_val is None:
        raise ValueError("target_on='val' needs X_val and y_val")
    if not (lr == "tune" or callable(lr) or isinstance(lr, numbers.Real)):
        raise ValueError(f"lr must be 'tune', a number or a callable lr(batch_size); got "
                         f"{lr!r}")
    problem = _Problem(model, X, y, X_val, y_val, target_loss, backend, dtype, max_epochs,
                       seed, memory_budget)
    sizes = _check_batch_sizes(batch_sizes, problem.n)
    sharpness_rows = check_int("sharpness_rows", sharpness_rows, 0)
    studies = []
    for m, opt in _optimizers(optimizer, momentum):
        _check_budget(problem, sizes, opt)
        rows, previous = [], None
        for b in sizes:
            row, best = _row(problem, b, opt, lr, previous, target_on, sharpness_rows,
                             progress)
            rows.append(row)
            previous = best or previous
        studies.append(_summarise(problem, rows, opt, m, target_on, backend))
    return studies[0] if len(studies) == 1 else StudyGroup(studies)


def _check_batch_sizes(batch_sizes, n: int) -> tuple[int, ...]:
    if batch_sizes is None:
        return default_batch_sizes(n)
    if isinstance(batch_sizes, numbers.Integral):
        batch_sizes = (batch_sizes,)
    sizes = tuple(check_int("batch_sizes[i]", b, 1) for b in batch_sizes)
    if not sizes:
        raise ValueError("batch_sizes must name at least one batch size")
    too_big = [b for b in sizes if b > n]
    if too_big:
        raise ValueError(f"batch sizes {too_big} exceed the {n} training rows")
    return tuple(sorted(set(sizes)))


def _check_budget(problem, sizes, optimizer) -> None:
    """A budget below what the smallest batch size needs is an error (nothing could run)."""
    if problem.memory_budget is None:
        return
    need = problem.memory(min(sizes), optimizer)
    if need is not None and need > problem.memory_budget:
        raise ValueError(f"memory_budget={problem.memory_budget} bytes is below what the "
                         f"smallest batch size ({min(sizes)}) needs, about {need} bytes "
                         "(parameters, optimizer state and workspace): raise the budget")


def _summarise(problem, rows, optimizer, momentum, target_on, backend) -> BatchSizeStudy:
    reached = [r for r in rows if r["status"] == "ok"]
    noise = [r["b_simple"] for r in reached if np.isfinite(r.get("b_simple", np.nan))]
    critical = fit_critical_batch([r["batch_size"] for r in reached],
                                  [r["steps_to_target"] for r in reached],
                                  statistics.median(noise) if noise else None)
    for r in rows:
        r["regime"] = critical.regime(r["batch_size"])
        s_fit = critical.steps(r["batch_size"])
        r["predicted_seconds"] = (s_fit * r["step_s"] if s_fit is not None and r.get("step_s")
                                  else None)
    best = min(reached, key=lambda r: r["seconds_to_target"], default=None)
    curve = []
    if best is not None:
        curve = _noise_curve(problem, optimizer, best["batch_size"], best["lr"],
                             best["steps_to_target"])
    return BatchSizeStudy(
        rows=rows, critical=critical,
        recommended_batch_size=None if best is None else best["batch_size"],
        target_loss=problem.target, target_on=target_on, momentum=momentum,
        optimizer=optimizer.to_dict(), backend=backend, model=list(problem.model.sizes),
        loss=problem.model.loss, n=problem.n, noise_curve=curve)
