"""Training one epoch at a time, over in-memory arrays or chunked data (data larger than
memory, ``partial_fit``): the engine is prepared once and each call streams data through it.

An epoch over chunks visits the chunks (in a new keyed order each epoch when shuffling and
the source can be read in any order: :meth:`fastgd.chunks.Chunks.visit`) and cuts batches
from the stream of their rows: each chunk's rows, after the rows a previous chunk left
over, run as one call into the compiled epoch (a whole number of batches; the rest waits
for the next chunk, and the epoch's last rows make its last, partial, batch). With
``shuffle=False`` the steps are therefore exactly those of an in-memory fit on the
concatenated chunks (the same bits). With shuffling, the engine's own keyed shuffle permutes
the rows inside each call (``"blocks"``: its block shuffle), keyed by the epoch and the
call's place in it.

What the chunked shuffle means: every row is still visited once per epoch, and each epoch
draws a new order, but a batch only mixes rows of one chunk (and the few carried over from
the one before): the epoch's order is a random order of random orders of the chunks, not a
uniform permutation of all rows. On data whose storage order carries no structure this is
the same distribution of batches; on data sorted by label or time, batches stay correlated
within a chunk, so make chunks large (many batches each) or shuffle on disk once.
``bench/report_streaming.py`` measures the loss against a full row shuffle. With
``track_noise``, each call's online estimates take its rows as the population (the finite
correction of ``kernels/noise.py``), the same as in memory when the data is one chunk.
"""

from __future__ import annotations

import pickle
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import backends
from .chunks import Chunks, as_chunks
from .fit import DivergenceError, EpochRecord, FitResult
from .kernels.reference import flatten, unflatten
from .noise import NoiseScale
from .plan import Plan
from .settings import check_run_settings
from .validate import (
    MODES,
    check_dtype,
    check_features,
    check_int,
    check_targets,
    with_sample_weight,
)

#: A call of the compiled epoch on chunk data is keyed ``epoch + (call << CALL_SHIFT)``: the
#: first call of an epoch uses the epoch's own key (an in-memory array: ``fit``'s shuffle).
CALL_SHIFT = 32
DEFAULT_BATCH = 32


class Session:
    """A training run fed one epoch at a time: ``epoch(X, y)`` trains one pass over arrays or
    a chunk source (:mod:`fastgd.chunks`), continuing the parameters, optimizer state, step
    counter and history. Takes :func:`fastgd.fit`'s settings (``epochs`` is what per-epoch
    schedules count to); ``mode="bgd"`` needs the data in one chunk (its one step is the
    whole data set's gradient). Picklable: the engine is left behind and rebuilt, from the
    parameters and optimizer state, at the next epoch."""

    def __init__(self, model, mode="mbgd", batch_size=None, epochs=1, lr=None, momentum=None,
                 nesterov=None, weight_decay=None, lr_schedule=None, shuffle=True, seed=0,
                 backend="numba-cpu", dtype="float32", params=None, drop_last=False,
                 optimizer=None, track_noise=False):
        self.model, self.dtype, self.mode = model, check_dtype(dtype), mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
        if mode == "sgd" and batch_size not in (None, 1):
            raise ValueError("mode='sgd' uses batch_size=1; use mode='mbgd' for larger batches")
        if mode == "bgd" and batch_size is not None:
            raise ValueError("mode='bgd' uses all samples per step; drop batch_size")
        self.batch_size = (1 if mode == "sgd" else None if mode == "bgd" else
                           check_int("batch_size", DEFAULT_BATCH if batch_size is None
                                     else batch_size, 1))
        self.settings = check_run_settings(model, self.dtype, epochs, lr, momentum, nesterov,
                                           weight_decay, lr_schedule, shuffle, seed, params,
                                           optimizer, track_noise)
        if self.settings.shuffle == "once":
            raise ValueError("shuffle='once' permutes a copy of the whole data set; a session "
                             "(chunked data, partial_fit) shuffles the chunks' order and the "
                             "rows inside each: use shuffle=True, 'blocks' or False")
        self.drop_last = bool(drop_last)
        self.backend = backend
        self.engine = backends.create(backend)
        self.plan: Plan | None = None
        self.checkpoint = (flatten(self.settings.init), None, 0)  # theta, state, steps
        self.epochs_done, self.history = 0, []
        self.compile_s = self.train_s = self.read_s = 0.0
        self.samples = self.steps = 0
        self._first_dtype = None

    # ------------------------------------------------------------------ the engine
    def _plan(self, n: int) -> Plan:
        s = self.settings
        return Plan.for_model(self.model, self.dtype, self.mode, self.batch_size or n,
                              drop_last=self.drop_last, shuffle=s.shuffle, seed=s.seed,
                              optimizer=s.optimizer, track_noise=s.track_noise,
                              full_train_loss=False)

    def _place(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Put ``(X, Y)`` into the engine: prepared (and compiled) the first time, with the
        parameters carried over when the plan changes (BGD's batch is the data's length),
        else ``set_data``."""
        plan = self._plan(len(X))
        if self.plan is None or plan != self.plan:
            theta, state, steps = self.state_now()
            self.engine.prepare(plan, X, Y, theta)
            if self.plan is None:
                t = time.perf_counter()
                self.engine.warmup()
                self.compile_s += time.perf_counter() - t
            if state is not None:
                self.engine.load(theta, state, steps)
            self.plan = plan
        else:
            self.engine.set_data(X, Y)

    def state_now(self) -> tuple[np.ndarray, np.ndarray | None, int]:
        """``(flat parameters, optimizer state or None before any step, steps done)``."""
        if self.plan is None:
            return self.checkpoint
        return self.engine.params(), self.engine.state(), self.engine.steps_done

    def restore(self, saved) -> None:
        """Go back to a :meth:`state_now` (an epoch that failed half-way is undone)."""
        theta, state, steps = saved
        if self.plan is None:
            self.checkpoint = saved
        elif state is None:
            self.engine.load(theta, self.plan.optimizer.init_state(self.plan.n_params,
                                                                   self.plan.dtype), steps)
        else:
            self.engine.load(theta, state, steps)

    def params(self) -> list[np.ndarray]:
        """The current parameters ``[W1, b1, ...]`` (copies)."""
        theta = self.state_now()[0]
        return [p.copy() for p in unflatten(theta, self.model.sizes)]

    def __reduce__(self):
        """Pickled as one self-contained blob of the standard pickler (the engine left
        behind, the parameters and optimizer state kept): joblib's pickler, which
        scikit-learn's memmap checks use, once restored a session with a wrong memo entry
        (its backend name read as a module path) in a long test run; a nested plain pickle
        leaves it nothing of ours to walk."""
        self.checkpoint = self.state_now()
        d = self.__dict__.copy()
        d["plan"] = d["engine"] = None
        return _restore_session, (pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL),)

    # ------------------------------------------------------------------ data
    def _check(self, X, y, what: str, serial: bool = False) -> tuple[np.ndarray, np.ndarray]:
        raw = getattr(X, "dtype", None)
        if raw is not None:
            if self._first_dtype is None:
                self._first_dtype = np.dtype(raw)
            elif np.dtype(raw) != self._first_dtype:
                raise ValueError(f"{what} has dtype {raw} but the first chunk had "
                                 f"{self._first_dtype}; give every chunk the same dtype")
        Xc = check_features(X, self.model.n_features, self.dtype, f"{what} X", serial)
        return Xc, check_targets(y, self.model, len(Xc), self.dtype, f"{what} y", serial)

    def check_arrays(self, X, y, sample_weight=None) -> tuple[np.ndarray, np.ndarray]:
        """In-memory ``(X, y)`` checked and converted once (the kernels' dtype and target
        layout, ``sample_weight`` as the targets' last column: ``fit``'s), for a caller that
        runs many epochs on them: pass the result to :meth:`epoch` with ``checked=True``."""
        self._first_dtype = None
        Xc, Yc = self._check(X, y, "the data's")
        if sample_weight is not None:
            Yc = with_sample_weight(Yc, sample_weight, self.dtype)
        return Xc, Yc

    def _segments(self, source: Chunks | None, X, y, epoch: int, checked: bool = False,
                  sample_weight=None):
        """The calls of one epoch: ``(X, Y)`` arrays, each a whole number of batches except
        the epoch's last."""
        if source is None:
            X, y = (X, y) if checked else self.check_arrays(X, y, sample_weight)
            yield X, y
            return
        if sample_weight is not None:
            raise ValueError("sample_weight goes with in-memory data; chunked data carries "
                             "no weights")
        if self.mode == "bgd" and source.n_chunks != 1:
            raise ValueError("mode='bgd' takes one step on the whole data set's gradient, "
                             "which needs the data in one chunk; stream with mode='mbgd' or "
                             "'sgd', or give a memory-mapped array (it trains in place)")
        self._first_dtype = None
        known = source.n_chunks
        carry, any_rows = None, False

        def read(item):  # in the read-ahead thread: NumPy-only checks (see _read_ahead)
            i, (Xc, yc) = item
            return (i, None, None) if len(Xc) == 0 else \
                (i, *self._check(Xc, yc, f"chunk {i}'s", serial=True))

        visits = source.visit(self.settings.seed, epoch, bool(self.settings.shuffle))
        for k, (_, Xc, Yc) in enumerate(_read_ahead(visits, self, read)):
            if Xc is None:
                continue
            any_rows = True
            if self.mode == "bgd" and k > 0:
                raise ValueError("mode='bgd' needs the data in one chunk")
            if carry is not None:
                Xc, Yc = np.concatenate([carry[0], Xc]), np.concatenate([carry[1], Yc])
            last = known is not None and k == known - 1
            cut = len(Xc) if last or self.mode == "bgd" else \
                len(Xc) - len(Xc) % self.batch_size
            if cut:
                yield Xc[:cut], Yc[:cut]
            carry = (Xc[cut:], Yc[cut:]) if cut < len(Xc) else None
        if carry is not None:
            yield carry
        elif not any_rows:
            raise ValueError("the chunked data gave no rows (an empty iterable, or only "
                             "empty chunks)")

    # ------------------------------------------------------------------ epochs
    def epoch(self, X, y=None, X_val=None, y_val=None, checked: bool = False,
              sample_weight=None) -> EpochRecord:
        """Train one epoch over ``(X, y)`` (arrays) or ``X`` a chunk source (``y`` None, or
        a Dask array with Dask or NumPy ``y``) and return its history record (also appended
        to ``history``). An error in a chunk (its width, dtype, values) undoes the epoch and
        raises; Ctrl-C keeps the steps done and raises ``KeyboardInterrupt``. ``checked``:
        ``X, y`` come from :meth:`check_arrays` (not checked again). ``sample_weight``:
        as ``fit``'s (in-memory data only)."""
        source = as_chunks(X, y)
        if source is None and y is None:
            raise ValueError("y is required with in-memory X (or pass chunks as X, y=None)")
        val = None
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        if X_val is not None:
            Xv = check_features(X_val, self.model.n_features, self.dtype, "X_val")
            val = (Xv, check_targets(y_val, self.model, len(Xv), self.dtype, "y_val"))
        saved = self.state_now()
        epoch = self.epochs_done
        s = self.settings
        loss_sum = rows = seconds = 0.0
        steps = 0
        noise = np.zeros(3)
        lr0 = None
        try:
            for call, (Xs, Ys) in enumerate(self._segments(source, X, y, epoch, checked,
                                                           sample_weight)):
                self._place(Xs, Ys)
                n_steps = self.plan.steps_per_epoch(len(Xs))
                if n_steps == 0:
                    continue
                lrs = self._rates(epoch, n_steps)
                lr0 = lrs[0] if lr0 is None else lr0
                t = time.perf_counter()
                self.engine.run_epoch(epoch + (call << CALL_SHIFT), lrs)
                self.engine.synchronize()
                seconds += time.perf_counter() - t
                r = self.plan.samples_per_epoch(len(Xs))
                loss_sum += self.engine.epoch_loss() * r
                rows += r
                steps += n_steps
                if s.track_noise:
                    noise += self.engine.epoch_noise()
        except KeyboardInterrupt:
            raise
        except BaseException:
            self.restore(saved)
            raise
        if steps == 0:
            raise ValueError("the epoch had no step: fewer rows than batch_size with "
                             "drop_last=True")
        self.epochs_done += 1
        self.train_s += seconds
        self.samples += int(rows)
        self.steps += steps
        train_loss = loss_sum / rows
        val_loss = self.engine.loss(*val) if val is not None else None
        est = None
        if s.track_noise and noise[2] > 0:
            est = NoiseScale.from_sums(noise[0] / noise[2], noise[1] / noise[2], int(rows),
                                       "online")
        rec = EpochRecord(epoch, float(train_loss), val_loss, seconds, self.samples,
                          float(lr0), self.train_s, est, None)
        self.history.append(rec)
        return rec

    def _rates(self, epoch: int, n_steps: int) -> np.ndarray:
        s = self.settings
        lrs = np.asarray(s.schedule.rates(s.optimizer.lr, epoch, s.epochs,
                                          self.engine.steps_done, n_steps), np.float64)
        if lrs.shape != (n_steps,) or not (np.isfinite(lrs) & (lrs > 0)).all():
            raise ValueError(f"lr_schedule gave {lrs} for epoch {epoch}; it must give one "
                             "finite rate > 0 per step")
        return lrs

    def result(self, stopped: str | None = None) -> FitResult:
        """The run so far as ``fit`` returns it."""
        opt = self.settings.optimizer
        return FitResult(params=self.params(), history=list(self.history),
                         samples_per_s=self.samples / self.train_s if self.train_s else 0.0,
                         compile_s=self.compile_s, train_s=self.train_s, steps=self.steps,
                         backend=self.backend, stopped=stopped, optimizer=opt.to_dict(),
                         optimizer_state_bytes=opt.state_bytes(self.model.n_params,
                                                               self.dtype),
                         read_s=self.read_s)

    def train(self, X, y=None, X_val=None, y_val=None, on_epoch=None) -> FitResult:
        """Every epoch of the settings over ``(X, y)`` (see :meth:`epoch`), as ``fit`` does:
        ``DivergenceError`` with the history when the loss becomes NaN/inf, Ctrl-C returns
        what was done."""
        source = as_chunks(X, y)
        if source is not None and not source.reiterable and self.settings.epochs > 1:
            raise ValueError(f"a one-shot iterator of chunks (a generator) can be read once, "
                             f"but epochs={self.settings.epochs}: pass a list or an object "
                             "whose __iter__ starts again, or epochs=1")
        stopped = None
        try:
            for _ in range(self.settings.epochs):
                rec = self.epoch(source if source is not None else X,
                                 None if source is not None else y, X_val, y_val)
                if on_epoch is not None:
                    on_epoch(rec)
                if not np.isfinite(rec.train_loss):
                    stopped = "diverged"
                    break
        except KeyboardInterrupt:
            stopped = "interrupted"
            warnings.warn(f"training interrupted after {len(self.history)} epoch(s); "
                          "returning the history so far", RuntimeWarning, stacklevel=2)
        res = self.result(stopped)
        if stopped is None and not all(np.isfinite(p).all() for p in res.params):
            res.stopped = stopped = "diverged"
        if stopped == "diverged":
            rec = self.history[-1]
            raise DivergenceError(f"training diverged at epoch {rec.epoch}: loss "
                                  f"{rec.train_loss} with lr={rec.lr}; lower lr (or "
                                  "standardise X); the history so far is in .result", res)
        return res


def _restore_session(blob: bytes) -> Session:
    """A :class:`Session` from :meth:`Session.__reduce__`'s blob; its engine is created
    empty and prepared, from the checkpoint, at the next epoch."""
    sess = Session.__new__(Session)
    sess.__dict__.update(pickle.loads(blob))
    sess.engine = backends.create(sess.backend)
    return sess


_END = object()


def _read_ahead(pairs, session: Session, prepare):
    """``prepare(pair)`` for each of ``pairs``, the next one read and prepared (a file read,
    a Dask compute, the chunk's checks) in a thread while the caller trains on the current
    one; waiting time is added to ``session.read_s``. ``prepare`` must not run parallel
    compiled code (Numba's workqueue threading layer aborts on two parallel regions at
    once): the checks it makes are NumPy's."""
    it = iter(pairs)

    def produce():
        item = next(it, _END)
        return item if item is _END else prepare(item)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(produce)
        while True:
            t = time.perf_counter()
            item = pending.result()
            session.read_s += time.perf_counter() - t
            if item is _END:
                return
            pending = pool.submit(produce)
            yield item
