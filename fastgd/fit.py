"""The one training loop: validate once, build a Plan, run whole epochs on a backend."""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import backends
from .chunks import as_chunks
from .kernels.permutation import permutation
from .kernels.reference import flatten, unflatten
from .noise import NoiseScale, exact_from_engine
from .plan import Plan
from .settings import check_run_settings
from .validate import (
    check_dtype,
    check_features,
    check_int,
    check_mode,
    check_targets,
    with_sample_weight,
)


@dataclass
class EpochRecord:
    """One row of the history; ``lr`` is the learning rate of the epoch's first step.

    ``train_loss`` is the mean of the epoch's batch losses, each at the parameters before
    its step and weighted by its rows, computed by the kernels from the forward pass the
    gradients need (free; the convention of Keras, Lightning and scikit-learn's
    ``loss_curve_``): it lags the parameters by up to an epoch. ``full_train_loss`` is the
    exact mean loss over the whole training set after the epoch, computed only when
    ``fit(eval_every=k)`` asks (after every k-th epoch and the last), else None.
    ``val_loss`` is the exact loss over the validation set after every epoch.

    With ``fit(track_noise=True)``, ``noise`` is the epoch's gradient noise scale
    (:class:`fastgd.noise.NoiseScale`): online, from the per-example gradient norms of the
    epoch's own batches (each step's unbiased estimates of ``tr(Sigma)`` and ``|G|^2``,
    averaged over the steps, then divided); when no step had two rows (batch size 1) it is
    the exact noise scale at the epoch's end instead (``source="exact"``)."""

    epoch: int
    train_loss: float
    val_loss: float | None
    seconds: float
    samples: int
    lr: float
    elapsed_s: float
    noise: NoiseScale | None = None
    full_train_loss: float | None = None


@dataclass
class FitResult:
    """What ``fit`` returns: parameters, history and timings.

    ``samples_per_s`` is steady-state training throughput: samples over the seconds spent
    inside ``run_epoch`` (JIT compilation, loss evaluation and Python bookkeeping excluded).
    ``compile_s`` is the first-call (compile or cache-load) time, measured apart.
    ``stopped`` is ``None`` for a full run, else ``"diverged"`` or ``"interrupted"``.
    ``optimizer`` is the optimizer's name and settings; ``optimizer_state_bytes`` the bytes
    of its state (``n_state x n_params`` values: SGD without momentum none, with momentum
    one buffer, Adam two, amsgrad three).
    """

    params: list[np.ndarray]
    history: list[EpochRecord] = field(default_factory=list)
    samples_per_s: float = 0.0
    compile_s: float = 0.0
    train_s: float = 0.0
    steps: int = 0
    backend: str = ""
    stopped: str | None = None
    optimizer: dict = field(default_factory=dict)
    optimizer_state_bytes: int = 0
    #: Streamed data (``fastgd.chunks``): seconds spent waiting for chunks to be read,
    #: outside ``train_s`` (0 for in-memory data).
    read_s: float = 0.0
    #: Data-parallel runs (``comm``): seconds of ``train_s`` this rank spent exchanging step
    #: gradients with the others (the transfer and any wait for a slower rank).
    exchange_s: float = 0.0

    def to_dict(self) -> dict:
        """Plain-Python summary (parameters omitted)."""
        d = {k: v for k, v in asdict(self).items() if k != "params"}
        d["history"] = [asdict(r) for r in self.history]
        return d


class DivergenceError(FloatingPointError):
    """The training loss became NaN or inf. ``.result`` holds the history up to that epoch
    and the last parameters; lower the learning rate or standardise the features."""

    def __init__(self, message: str, result: FitResult):
        super().__init__(message)
        self.result = result


@dataclass
class PreparedRun:
    """A validated, compiled training run, ready to go: what ``fit`` does before its first
    epoch. ``compile_s`` is the first-call (JIT compile or cache load) time.

    ``run_epoch(epoch)`` runs one epoch on the backend (what a benchmark times), its
    learning rates from the schedule (:meth:`rates`); ``train()`` runs the whole schedule
    and returns the ``FitResult``. ``X``/``Y`` are the validated training data (``Y`` in
    the kernels' target layout). ``eval_every``: the exact training loss after every
    ``eval_every``-th epoch and the last (0: never).
    """

    engine: backends.Backend
    plan: Plan
    X: np.ndarray
    Y: np.ndarray
    val: tuple | None
    epochs: int
    schedule: object
    backend: str
    compile_s: float
    eval_every: int = 0
    #: Data-parallel runs: the MPI communicator (the epoch's losses are reduced over it).
    comm: object = None

    def evaluates(self, epoch: int) -> bool:
        """Whether the history records the exact training loss after ``epoch`` (0-based)."""
        return bool(self.eval_every) and ((epoch + 1) % self.eval_every == 0
                                          or epoch == self.epochs - 1)

    @property
    def lr(self) -> float:
        """The optimizer's base learning rate (what schedules scale)."""
        return self.plan.optimizer.lr

    @property
    def samples_per_epoch(self) -> int:
        """Samples one epoch trains on."""
        return self.plan.samples_per_epoch(len(self.X))

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""
        return self.plan.steps_per_epoch(len(self.X))

    def rates(self, epoch: int) -> np.ndarray:
        """The per-step learning rates of ``epoch`` (checked finite and > 0), continuing
        from the backend's step counter."""
        lrs = self.schedule.rates(self.lr, epoch, self.epochs, self.engine.steps_done,
                                  self.steps_per_epoch)
        lrs = np.asarray(lrs, dtype=np.float64)
        if lrs.shape != (self.steps_per_epoch,):
            raise ValueError(f"lr_schedule gave {lrs.shape} learning rates for epoch {epoch}; "
                             f"it must give one per step ({self.steps_per_epoch})")
        bad = ~(np.isfinite(lrs) & (lrs > 0))
        if bad.any():
            where = int(np.argmax(bad))
            raise ValueError(f"lr_schedule gave lr={lrs[where]} at epoch {epoch} (step "
                             f"{self.engine.steps_done + where}); it must be finite and > 0")
        return lrs

    def run_epoch(self, epoch: int) -> None:
        """One epoch on the backend (all its steps in compiled code), nothing else."""
        self.engine.run_epoch(epoch, self.rates(epoch))

    def epoch_noise(self) -> NoiseScale | None:
        """The noise scale of the epochs run since the last call (see :class:`EpochRecord`),
        or None when the run does not track noise."""
        if not self.plan.track_noise:
            return None
        trace, grad_sq, steps = self.engine.epoch_noise()
        if steps == 0:
            return exact_from_engine(self.engine, self.X, self.Y)
        return NoiseScale.from_sums(trace / steps, grad_sq / steps, len(self.X), "online")

    def train(self, on_epoch=None) -> FitResult:
        """Run every epoch; see :func:`fit`. ``on_epoch(record)`` is called after each
        epoch with its :class:`EpochRecord` (progress bars; never inside the timing)."""
        opt = self.plan.optimizer
        result = FitResult(params=[], compile_s=self.compile_s, backend=self.backend,
                           optimizer=opt.to_dict(),
                           optimizer_state_bytes=opt.state_bytes(self.plan.n_params,
                                                                 self.plan.dtype))
        return _train(self, result, on_epoch)


def prepare(model, X, y, mode="mbgd", batch_size=None, epochs=3, lr=None, momentum=None,
            nesterov=None, weight_decay=None, lr_schedule=None, shuffle=True, seed=0,
            backend="numba-cpu", dtype="float32", params=None, X_val=None, y_val=None,
            drop_last=False, optimizer=None, track_noise=False, eval_every=None,
            sample_weight=None, comm=None, sync_every=None) -> PreparedRun:
    """Validate every argument, place the data on the backend and compile its kernels.

    Takes the arguments of :func:`fit` and returns a :class:`PreparedRun`, so that a caller
    (a benchmark, ``compare``) can time epochs without validation or compilation inside.
    """
    args = (model, X, y, mode, batch_size, epochs, lr, momentum, nesterov, weight_decay,
            lr_schedule, shuffle, seed, backend, dtype, params, X_val, y_val, drop_last,
            optimizer, track_noise, eval_every, sample_weight)
    if sync_every is not None:
        if comm is None:
            raise ValueError("sync_every (local SGD) averages the ranks' parameters: give "
                             "comm too")
        sync_every = check_int("sync_every", sync_every, 1)
    if comm is None or comm.Get_size() == 1:
        Xc, Yc, val, plan, epochs, schedule, init, eval_every = _checked(*args)
    else:
        from . import distributed

        def check():
            distributed.check_comm(comm, backend)
            out = _checked(*args)
            if out[3].track_noise:
                raise ValueError("track_noise is not available in a data-parallel fit yet")
            return out

        Xc, Yc, val, plan, epochs, schedule, init, eval_every = distributed.together(comm,
                                                                                    check)
        plan = replace(plan, sync_every=sync_every or 0)
        distributed.agree(comm, distributed.fingerprint(plan, backend, epochs, schedule,
                                                        init, eval_every, model.n_features))
        plan, rows = distributed.shard_plan(comm, plan, len(Xc))
        Xc, Yc = Xc[:rows], Yc[:rows]
    if plan.shuffle_once:
        # a private, permuted copy: the caller's arrays are never reordered
        order = permutation(plan.seed, 0, len(Xc))
        Xc, Yc = Xc[order], Yc[order]
        del order
    engine = backends.create(backend)
    engine.prepare(plan, Xc, Yc, flatten(init))
    t0 = time.perf_counter()
    engine.warmup()
    return PreparedRun(engine, plan, Xc, Yc, val, epochs, schedule, backend,
                       time.perf_counter() - t0, eval_every,
                       comm if plan.ranks > 1 else None)


def _checked(model, X, y, mode, batch_size, epochs, lr, momentum, nesterov, weight_decay,
             lr_schedule, shuffle, seed, backend, dtype, params, X_val, y_val, drop_last,
             optimizer, track_noise, eval_every, sample_weight):
    """Every argument of :func:`prepare` checked: ``(X, Y, val, plan, epochs, schedule,
    initial parameters, eval_every)``, nothing placed yet."""
    dt = check_dtype(dtype)
    Xc = check_features(X, model.n_features, dt, "X")
    Yc = check_targets(y, model, len(Xc), dt, "y")
    if sample_weight is not None:
        Yc = with_sample_weight(Yc, sample_weight, dt)
    if (X_val is None) != (y_val is None):
        raise ValueError("give both X_val and y_val, or neither")
    val = None
    if X_val is not None:
        Xv = check_features(X_val, model.n_features, dt, "X_val")
        val = (Xv, check_targets(y_val, model, len(Xv), dt, "y_val"))
    bs = check_mode(mode, batch_size, len(Xc))
    run = check_run_settings(model, dt, epochs, lr, momentum, nesterov, weight_decay,
                             lr_schedule, shuffle, seed, params, optimizer, track_noise)
    epochs, seed, schedule, init = run.epochs, run.seed, run.schedule, run.init
    eval_every = 0 if eval_every is None else check_int("eval_every", eval_every, 1)
    plan = Plan.for_model(model, dt, mode, bs, drop_last=drop_last, shuffle=run.shuffle,
                          seed=seed, optimizer=run.optimizer, track_noise=run.track_noise,
                          full_train_loss=bool(eval_every))
    return Xc, Yc, val, plan, epochs, schedule, init, eval_every


def fit(model, X, y=None, mode="mbgd", batch_size=None, epochs=3, lr=None, momentum=None,
        nesterov=None, weight_decay=None, lr_schedule=None, shuffle=True, seed=0,
        backend="numba-cpu", dtype="float32", params=None, X_val=None, y_val=None,
        drop_last=False, optimizer=None, track_noise=False, eval_every=None,
        sample_weight=None, comm=None, sync_every=None) -> FitResult:
    """Train ``model`` on ``(X, y)`` with batch, stochastic or mini-batch gradient descent.

    Semantics are PyTorch's: the loss is the mean over each batch (``MSELoss``,
    ``BCEWithLogitsLoss``, ``CrossEntropyLoss``) and the update is ``torch.optim``'s:
    ``optimizer`` is ``fg.SGD``, ``fg.Adam``, ``fg.AdamW``, ``fg.RMSprop`` or ``fg.Adagrad``
    (or its name, with defaults); without it, ``lr`` (default 0.01), ``momentum``,
    ``nesterov`` and ``weight_decay`` are shorthand for ``fg.SGD(...)``, and giving both is
    a ``ValueError``. ``lr_schedule`` scales the optimizer's ``lr`` per epoch or per step
    (``fg.Warmup``, ``fg.PerStep``). ``mode``: ``"bgd"`` one step per epoch over all
    samples, ``"sgd"`` batch size 1, ``"mbgd"`` ``batch_size`` (default 32; the last partial
    batch is a step of its own unless ``drop_last``). ``shuffle``: ``True``/``"rows"``
    draws a new permutation each epoch from ``seed`` (the same on every backend; ``"bgd"``
    never needs one), ``"once"`` permutes a private copy of the data once before the first
    epoch (every epoch then visits that order: sequential reads, at the price of a copy of
    ``X`` and ``y``), ``False`` keeps the given order.
    ``params`` default to ``model.init_params(seed, dtype)``. ``track_noise`` adds the
    epoch's gradient noise scale to each history record (``EpochRecord.noise``), computed in
    the kernels from per-example gradient norms; it costs nothing when off.

    The history (``FitResult.history``, one :class:`EpochRecord` an epoch) holds the mean of
    each epoch's batch losses (``train_loss``, computed in the kernels, free), the exact
    validation loss when ``X_val``/``y_val`` are given, and the exact training loss
    (``full_train_loss``, one more pass over the data) after every ``eval_every``-th epoch
    and the last when ``eval_every`` is set (default: never).

    Raises ``DivergenceError`` (carrying the history) when the loss becomes NaN/inf;
    Ctrl-C stops after the current epoch and returns what was done (``stopped``).

    ``sample_weight`` (one value >= 0 per row; ``numpy`` and ``numba-cpu`` backends) makes
    each batch loss the mean of ``w_i * loss_i``, PyTorch's ``(criterion(reduction="none")
    * w).mean()``: a row's gradient is scaled by its weight (batch 1: scikit-learn's SGD).

    Data-parallel training: with ``comm=MPI.COMM_WORLD`` (mpi4py; run under ``mpiexec``),
    each rank passes its own shard and ``batch_size`` is the per-rank batch; every step
    averages the ranks' gradients (:mod:`fastgd.distributed`), so every rank ends with the
    same parameters and history. ``sync_every=K`` trains local SGD instead: each rank steps
    on its own gradient and the ranks average parameters and optimizer state every ``K``
    steps and at each epoch's end (``K`` times fewer exchanges, of the parameters and
    state rather than the gradient).

    Data larger than memory: ``X`` may be chunked (``y=None`` and ``X`` a list or iterable
    of ``(X_chunk, y_chunk)`` pairs, a :mod:`fastgd.chunks` source such as
    ``fg.chunks.from_npy(path, y_path)``, or a Dask array with Dask or NumPy ``y``); each
    chunk's steps run in compiled code while the next chunk is read, and the shuffle
    permutes the chunks' order and the rows inside each (:mod:`fastgd.session` says what
    that means). ``mode="bgd"``, ``shuffle="once"`` and ``eval_every`` need in-memory data;
    a memory-mapped array (``np.load(path, mmap_mode="r")``) is in-memory data that trains
    in place.
    """
    if as_chunks(X, y) is not None:
        if comm is not None:
            raise ValueError("comm (data-parallel training) takes in-memory shards")
        if sample_weight is not None:
            raise ValueError("sample_weight goes with in-memory data; chunked data carries "
                             "no weights")
        if eval_every is not None:
            raise ValueError("eval_every needs another pass over the training data; with "
                             "chunked data evaluate on X_val/y_val instead")
        from .session import Session  # session builds on this module

        return Session(model, mode=mode, batch_size=batch_size, epochs=epochs, lr=lr,
                       momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                       lr_schedule=lr_schedule, shuffle=shuffle, seed=seed, backend=backend,
                       dtype=dtype, params=params, drop_last=drop_last, optimizer=optimizer,
                       track_noise=track_noise).train(X, y, X_val, y_val)
    return prepare(model, X, y, mode=mode, batch_size=batch_size, epochs=epochs, lr=lr,
                   momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                   lr_schedule=lr_schedule, shuffle=shuffle, seed=seed, backend=backend,
                   dtype=dtype, params=params, X_val=X_val, y_val=y_val,
                   drop_last=drop_last, optimizer=optimizer, track_noise=track_noise,
                   eval_every=eval_every, sample_weight=sample_weight, comm=comm,
                   sync_every=sync_every).train()


def _train(run: PreparedRun, result: FitResult, on_epoch=None) -> FitResult:
    engine, plan, val = run.engine, run.plan, run.val
    n = len(run.X)
    per_epoch = plan.samples_per_epoch(n)
    samples = 0
    try:
        for epoch in range(run.epochs):
            lrs = run.rates(epoch)
            t = time.perf_counter()
            engine.run_epoch(epoch, lrs)
            # device backends queue work asynchronously: stop the clock when it is done
            engine.synchronize()
            seconds = time.perf_counter() - t
            result.train_s += seconds
            result.steps += len(lrs)
            samples += per_epoch
            train_loss = engine.epoch_loss()
            full = engine.train_loss() if run.evaluates(epoch) else None
            val_loss = engine.loss(*val) if val is not None else None
            if run.comm is not None:  # the same history on every rank
                from .distributed import mean_over_ranks

                train_loss = mean_over_ranks(run.comm, train_loss)
                full = mean_over_ranks(run.comm, full, n)
                val_loss = mean_over_ranks(run.comm, val_loss, len(val[0]) if val else 0)
            result.history.append(EpochRecord(epoch, train_loss, val_loss, seconds, samples,
                                              float(lrs[0]), result.train_s,
                                              run.epoch_noise(), full))
            if on_epoch is not None:
                on_epoch(result.history[-1])
            if not (np.isfinite(train_loss) and (full is None or np.isfinite(full))):
                result.stopped = "diverged"
                break
    except BaseException as exc:
        if run.comm is not None:  # the other ranks wait in a collective: end them all
            from .distributed import abort

            abort(run.comm, exc)
        if not isinstance(exc, KeyboardInterrupt):
            raise
        result.stopped = "interrupted"
        warnings.warn(f"training interrupted after {len(result.history)} epoch(s); returning "
                      "the history so far", RuntimeWarning, stacklevel=3)
    theta = engine.params()
    result.exchange_s = engine.exchange_seconds()
    result.params = [p.copy() for p in unflatten(theta, plan.sizes)]
    result.samples_per_s = samples / result.train_s if result.train_s > 0 else 0.0
    if result.stopped is None and result.history and not np.isfinite(theta).all():
        # each batch loss precedes its step: the last steps' overflow shows in the params
        result.stopped = "diverged"
    if result.stopped == "diverged":
        rec = result.history[-1]
        bad = next((v for v in (rec.train_loss, rec.full_train_loss)
                    if v is not None and not np.isfinite(v)), None)
        what = f"loss is {bad}" if bad is not None else "the parameters are NaN/inf"
        raise DivergenceError(
            f"training diverged at epoch {rec.epoch}: {what} with lr={rec.lr};"
            " lower lr (or standardise X); the history so far is in .result", result)
    return result
