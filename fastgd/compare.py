"""Compare configurations: backends x modes x batch sizes, each measured the same way.

:func:`measure` runs one configuration ``repeats`` times and returns one flat record (a
dict): time (steady-state seconds per epoch and per step, samples/s, steps/s as medians with
min/max; compile time apart), memory (traced and resident-set peaks, device peak, the
analytic estimate) and convergence (loss per epoch against training seconds and samples
seen, time and epochs to reach ``target_loss``). :func:`compare` and
:func:`sweep_batch_size` collect records into a :class:`Table`.

Every configuration of a study starts from the same initial parameters and the same data.
With ``lr_rule`` (a :class:`LinearScaling`), each batch size gets its own learning rate and
warm-up instead of one rate for all: one untuned rate is too small for large batches or
too large for small ones, so a study would compare learning rates, not batching modes.
A configuration that cannot run (backend missing, out of memory, diverged, batch larger than
the data) becomes a row with ``status`` and ``reason`` instead of stopping the study.

Timing repeats run without tracemalloc (it slows Python-per-step backends up to 2x); the
traced host peak comes from one extra one-epoch run after them (the peak of one epoch is the
peak of any number of them, and compilation is then done, so it is not traced).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import platform
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from . import backends as _backends
from .fit import DivergenceError, prepare
from .measure import HostPeak, device_peak, estimate_memory
from .metrics import accuracy
from .optim import Warmup, make_optimizer
from .plan import Plan
from .validate import (
    check_dtype,
    check_features,
    check_float,
    check_int,
    check_shuffle,
    check_targets,
)

MODES = ("bgd", "sgd", "mbgd")
#: The SGD learning rate of a study when neither ``lr`` nor ``optimizer`` is given.
STUDY_LR = 0.05

# Columns of the Markdown table (the JSON/CSV keep every field). Those in OPTIONAL_COLUMNS
# appear only when a row has a value for them (or, for the target columns, when the study
# has a target loss); of the two accuracies, only the validation one when there is one.
SUMMARY_COLUMNS = (
    "backend", "mode", "batch_size", "status", "lr", "samples_per_s", "steps_per_s",
    "epoch_s", "compile_s", "peak_traced_bytes", "estimate_bytes", "final_train_loss",
    "final_val_loss", "train_accuracy", "val_accuracy", "time_to_target_s",
    "epochs_to_target",
)
OPTIONAL_COLUMNS = ("final_val_loss", "train_accuracy", "val_accuracy", "time_to_target_s",
                    "epochs_to_target")
#: Compile (or cache-load) times below this are shown as "cached": nothing was compiled.
CACHED_BELOW_S = 1e-3


@dataclass(frozen=True)
class LinearScaling:
    """The linear-scaling rule with warm-up (Goyal et al. 2017, "Accurate, Large Minibatch
    SGD"): a batch of ``B`` rows trains with ``lr(B) = base_lr * B / ref_batch``, capped at
    ``max_lr``.

    Why: in the small-batch regime one epoch of SGD moves the parameters by about
    ``lr / B`` times the summed per-sample gradients, so keeping ``lr / B`` fixed gives every
    batch size the same progress (and the same gradient noise) per epoch; the comparison is
    then about batching, not about a rate that suits one batch size only. The rate of a
    large batch is capped at ``max_lr``, the largest rate tried stable on the data for full
    batches (the curvature, not the noise, limits those), so BGD and large MBGD batches run
    at ``max_lr``. A configuration whose rate is scaled above ``base_lr`` warms up
    (:class:`fastgd.Warmup`) from ``base_lr`` to ``lr(B)`` linearly over the first
    ``warmup_fraction`` of its steps (at least one), as the early steps from a random start
    are the least stable.
    """

    base_lr: float
    max_lr: float
    ref_batch: int = 32
    warmup_fraction: float = 0.05

    def __post_init__(self):
        check_float("base_lr", self.base_lr, 0.0, lo_inclusive=False)
        check_float("max_lr", self.max_lr, self.base_lr, lo_inclusive=True)
        check_int("ref_batch", self.ref_batch, 1)
        if not 0.0 <= check_float("warmup_fraction", self.warmup_fraction, 0.0, True) <= 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1]; got {self.warmup_fraction}")

    def lr(self, batch_size: int) -> float:
        """The learning rate of a batch of ``batch_size`` rows."""
        return min(self.base_lr * batch_size / self.ref_batch, self.max_lr)

    def warmup_steps(self, total_steps: int) -> int:
        """The length of the warm-up of a run of ``total_steps`` optimizer steps."""
        return max(1, math.ceil(self.warmup_fraction * total_steps))

    def schedule(self, batch_size: int, total_steps: int, then=None):
        """The ``lr_schedule`` of a batch of ``batch_size`` rows over ``total_steps`` steps:
        ``then`` (the study's own schedule, or None) after a warm-up from ``base_lr`` when
        the rate is scaled above it."""
        lr = self.lr(batch_size)
        if lr <= self.base_lr or self.warmup_fraction == 0:
            return then
        return Warmup(steps=self.warmup_steps(total_steps), start_factor=self.base_lr / lr,
                      then=then)

    def to_dict(self) -> dict:
        """The rule's settings, named."""
        return dict(rule="linear scaling", **dataclasses.asdict(self))


class Progress:
    """What a study reports while it runs; the default does nothing (the CLI draws bars)."""

    def start(self, index: int, total: int, label: str, epochs: int) -> None:
        """Configuration ``index`` of ``total`` starts."""

    def epoch(self, record) -> None:
        """An epoch of the running configuration ended (``record``: an EpochRecord)."""

    def end(self, row: dict) -> None:
        """The running configuration ended with ``row``."""


def _median_min_max(values) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _to_target(history, target_loss):
    """(seconds, epochs) of training until the exact training loss first reached
    ``target_loss``."""
    if target_loss is None:
        return None, None
    for rec in history:
        if rec.full_train_loss is not None and rec.full_train_loss <= target_loss:
            return rec.elapsed_s, rec.epoch + 1
    return None, None


def _failure_row(base: dict, status: str, reason: str) -> dict:
    return dict(base, status=status, reason=reason)


def _run_once(model, X, y, fit_kw, on_epoch=None, trace=False):
    """prepare + train once, inside HostPeak (the data copy and buffers are the run's;
    compilation is not traced when it is already done or cached); returns (prepared run,
    FitResult, HostPeak, stopped reason)."""
    stopped = None
    with HostPeak(trace=trace) as peak:
        prep = prepare(model, X, y, **fit_kw)
        try:
            result = prep.train(on_epoch)
        except DivergenceError as exc:
            result, stopped = exc.result, str(exc).split(";")[0]  # "training diverged at ..."
    return prep, result, peak, stopped


def measure(model, X, y, *, backend="numba-cpu", mode="mbgd", batch_size=None, epochs=3,
            lr=None, repeats=3, target_loss=None, trace_memory=True, progress=None,
            **fit_kw) -> dict:
    """Measure one configuration (``repeats`` runs of ``fastgd.fit``); returns its record.

    ``fit_kw`` are further arguments of :func:`fastgd.fit` (optimizer, momentum, dtype,
    params, seed, X_val, ...); ``lr`` as in ``fit``. Raises what ``fit`` raises for bad
    arguments, ``DivergenceError`` excepted: a diverged run gives a record with
    ``status="diverged"`` and the history so far. The record's ``train_loss`` curve and
    time to target use the exact training loss after every epoch (``eval_every=1``, outside
    the timing, unless ``fit_kw`` says otherwise); ``batch_loss`` is the history's mean of
    the epochs' batch losses.
    """
    repeats = check_int("repeats", repeats, 1)
    kw = dict(fit_kw, backend=backend, mode=mode, batch_size=batch_size, epochs=epochs, lr=lr)
    kw.setdefault("eval_every", 1)
    on_epoch = progress.epoch if progress is not None else None
    runs = [_run_once(model, X, y, kw, on_epoch) for _ in range(repeats)]
    prep = runs[0][0]
    plan, n = prep.plan, len(prep.X)
    steps, samples = plan.steps_per_epoch(n), plan.samples_per_epoch(n)
    # per repeat: mean steady-state seconds of an epoch (loss evaluation excluded)
    epoch_s = [r.train_s / len(r.history) for _, r, _, _ in runs if r.history]
    order = sorted(range(len(runs)),
                   key=lambda i: runs[i][1].train_s / max(1, len(runs[i][1].history)))
    _, median_run, median_peak, stopped = runs[order[len(order) // 2]]
    history = median_run.history

    row = dict(
        backend=backend, mode=plan.mode, batch_size=plan.batch_size,
        status="diverged" if stopped else "ok", reason=stopped or "",
        dtype=str(plan.dtype), epochs=len(history), repeats=repeats,
        optimizer=plan.optimizer.name, lr=plan.optimizer.lr,
        optimizer_state_bytes=median_run.optimizer_state_bytes,
        steps_per_epoch=steps, samples_per_epoch=samples,
        compile_s=min(p.compile_s for p, _, _, _ in runs),
    )
    if epoch_s:
        med, lo, hi = _median_min_max(epoch_s)
        row.update(epoch_s=med, epoch_s_min=lo, epoch_s_max=hi, step_s=med / steps,
                   samples_per_s=samples / med, samples_per_s_min=samples / hi,
                   samples_per_s_max=samples / lo, steps_per_s=steps / med,
                   steps_per_s_min=steps / hi, steps_per_s_max=steps / lo)

    # memory: one traced one-epoch run (tracemalloc would distort the timed repeats)
    traced = None
    if trace_memory:
        _, _, peak, _ = _run_once(model, X, y, dict(kw, epochs=1), trace=True)
        traced = peak.traced_peak_bytes
    n_val = 0 if prep.val is None else len(prep.val[0])
    copies = not (isinstance(X, np.ndarray) and np.shares_memory(prep.X, X))
    try:
        est = estimate_memory(plan, n, n_val, backend=prep.engine, copies_data=copies)
    except ValueError:  # a backend without a memory model yet: measured figures only
        est = None
    row.update(peak_traced_bytes=traced, peak_rss_bytes=median_peak.rss_peak_bytes,
               rss_method=median_peak.rss_method, peak_device_bytes=device_peak(prep.engine),
               estimate_bytes=None if est is None else est.total,
               estimate=None if est is None else est.to_dict())

    t_target, e_target = _to_target(history, target_loss)
    params = median_run.params
    row.update(
        final_train_loss=history[-1].full_train_loss if history else None,
        final_val_loss=history[-1].val_loss if history else None,
        train_accuracy=accuracy(model, params, prep.X, prep.Y),
        val_accuracy=None if prep.val is None else accuracy(model, params, *prep.val),
        train_loss=[r.full_train_loss for r in history],
        batch_loss=[r.train_loss for r in history],
        val_loss=[r.val_loss for r in history],
        elapsed_s=[r.elapsed_s for r in history],
        samples_seen=[r.samples for r in history],
        target_loss=target_loss, time_to_target_s=t_target, epochs_to_target=e_target,
    )
    return row


def _configurations(modes, batch_sizes, n):
    """(mode, batch size, skip reason) in study order; BGD and SGD once each."""
    out = []
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"modes must be among {MODES}; got {mode!r}")
        if mode == "bgd":
            out.append((mode, n, None))
        elif mode == "sgd":
            out.append((mode, 1, None))
        else:
            for b in batch_sizes:
                b = check_int("batch_sizes", b, 1)
                out.append((mode, b, f"batch_size {b} > n = {n}" if b > n else None))
    return out


def study_optimizer(lr, fit_kw: dict):
    """The optimizer every configuration of a study uses, taken out of ``fit_kw``: its
    ``optimizer``, or SGD from the shorthand keywords with ``lr`` (default
    :data:`STUDY_LR`). Conflicting settings raise ``ValueError`` here, before any run."""
    shorthand = {k: fit_kw.pop(k) for k in ("momentum", "nesterov", "weight_decay")
                 if k in fit_kw}
    optimizer = fit_kw.pop("optimizer", None)
    if optimizer is None and lr is None:
        lr = STUDY_LR
    if lr is not None:
        check_float("lr", lr, 0.0, lo_inclusive=False)
    return make_optimizer(optimizer, lr=lr, **shorthand)


def _steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest and not drop_last else 0)


def configured_optimizer(optimizer, lr_rule, batch_size: int, n: int, epochs: int,
                         fit_kw: dict):
    """``(optimizer, fit_kw)`` of one configuration: unchanged without ``lr_rule``; with
    it, the optimizer at the rule's rate for ``batch_size`` and ``fit_kw`` with the rule's
    warm-up in front of the study's ``lr_schedule``."""
    if lr_rule is None:
        return optimizer, fit_kw
    total = epochs * max(1, _steps_per_epoch(n, batch_size, fit_kw.get("drop_last", False)))
    schedule = lr_rule.schedule(batch_size, total, then=fit_kw.get("lr_schedule"))
    return (dataclasses.replace(optimizer, lr=lr_rule.lr(batch_size)),
            dict(fit_kw, lr_schedule=schedule))


def _study(model, X, y, configs, backends, epochs, optimizer, repeats, target_loss, seed,
           dtype, trace_memory, progress, meta, fit_kw, lr_rule=None) -> Table:
    """Run every (backend, mode, batch size) configuration; failures become rows."""
    dt = check_dtype(dtype)
    # bad data or arguments are the caller's mistake: raise once, before any configuration
    Xc = check_features(X, model.n_features, dt, "X")
    check_targets(y, model, len(Xc), dt, "y")
    check_int("epochs", epochs, 1)
    check_int("repeats", repeats, 1)
    status = _backends.describe()
    backends = list(status) if backends is None else list(backends)
    for b in backends:
        if b not in status:
            raise ValueError(f"unknown backend {b!r}; known: {', '.join(status)}")
    params = model.init_params(seed, dt)  # the same start for every configuration
    progress = progress or Progress()
    todo = [(b, m, bs, skip) for b in backends for m, bs, skip in configs]
    rows = []
    for i, (backend, mode, bs, skip) in enumerate(todo):
        base = dict(backend=backend, mode=mode, batch_size=bs, dtype=str(dt))
        progress.start(i, len(todo), f"{backend} {mode} b={bs}", epochs)
        if status[backend] is not None:
            row = _failure_row(base, "unavailable", status[backend])
        elif skip:
            row = _failure_row(base, "skipped", skip)
        else:
            opt, kw = configured_optimizer(optimizer, lr_rule, bs, len(Xc), epochs, fit_kw)
            try:
                row = measure(model, Xc, y, backend=backend, mode=mode, batch_size=bs,
                              epochs=epochs, optimizer=opt, repeats=repeats,
                              target_loss=target_loss,
                              trace_memory=trace_memory, progress=progress, params=params,
                              seed=seed, dtype=dt.name, **kw)
            except MemoryError as exc:  # host or device (cupy's OutOfMemoryError included)
                row = _failure_row(base, "out of memory", f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - a study records, never aborts
                row = _failure_row(base, "failed", f"{type(exc).__name__}: {exc}")
        rows.append(row)
        progress.end(row)
    meta = dict(meta, model=_model_name(model), n=len(Xc), d=Xc.shape[1], dtype=dt.name,
                epochs=epochs, lr=optimizer.lr, optimizer=optimizer.to_dict(), repeats=repeats,
                seed=seed, target_loss=target_loss,
                lr_rule=None if lr_rule is None else lr_rule.to_dict(),
                machine=f"{platform.machine()}, {platform.processor() or 'cpu'}",
                date=time.strftime("%Y-%m-%d %H:%M"), **{k: v for k, v in fit_kw.items()
                                                         if np.isscalar(v)})
    return Table(rows=rows, meta=meta)


def _model_name(model) -> str:
    kind = "linear" if len(model.sizes) == 2 else f"mlp({model.activation})"
    return f"{kind} {'-'.join(map(str, model.sizes))} {model.loss}"


def compare(model, X, y, modes=MODES, batch_sizes=(32, 256, 4096), backends=("numpy",
            "numba-cpu"), epochs=3, lr=None, target_loss=None, repeats=3, seed=0,
            dtype="float32", trace_memory=True, progress=None, lr_rule=None,
            **fit_kw) -> Table:
    """Measure every (backend, mode, batch size) on the same data and initial parameters.

    ``modes``: any of ``"bgd"`` (batch n), ``"sgd"`` (batch 1), ``"mbgd"`` (one row per
    entry of ``batch_sizes``). ``backends=None`` means every backend fastgd knows (missing
    ones appear as ``unavailable`` rows). ``fit_kw``: further :func:`fastgd.fit` arguments
    (optimizer, momentum, nesterov, weight_decay, shuffle, lr_schedule, X_val, y_val,
    drop_last); ``lr`` is the SGD shorthand's (default :data:`STUDY_LR`) or overrides
    nothing when ``optimizer`` is given (giving both is an error, as in ``fit``).
    ``lr_rule`` (a :class:`LinearScaling`): each batch size trains at the rule's rate (which
    replaces the optimizer's ``lr``), warmed up as the rule says, before ``lr_schedule``.
    ``target_loss``: ``time_to_target_s``/``epochs_to_target`` are when the training loss
    first reached it (at an epoch's end). Classifiers get ``train_accuracy`` (and
    ``val_accuracy`` with ``X_val``) of the final parameters.
    Returns a :class:`Table`: one row per configuration, medians over ``repeats``.
    """
    fit_kw = dict(fit_kw)
    optimizer = study_optimizer(lr, fit_kw)
    configs = _configurations(modes, batch_sizes, len(X))
    return _study(model, X, y, configs, backends, epochs, optimizer, repeats, target_loss,
                  seed, dtype, trace_memory, progress, {"study": "compare"}, fit_kw, lr_rule)


def sweep_batch_size(model, X, y, backend="numba-cpu", max_batch=None, memory_budget=None,
                     epochs=3, lr=None, target_loss=None, repeats=1, seed=0, dtype="float32",
                     trace_memory=True, progress=None, lr_rule=None, **fit_kw) -> Table:
    """The batch-size study: MBGD at batch sizes 1, 2, 4, ... up to ``n`` or ``max_batch``.

    With ``memory_budget`` (bytes), a batch size whose estimated peak
    (:func:`fastgd.measure.estimate_memory`; the study converts the data once before any
    run, so runs copy nothing and the copy is not counted) exceeds the budget is
    listed as skipped with its estimate instead of run, and the sweep stops at the first
    such batch after one that fitted (memory only grows from there; below it, a
    Python-per-step backend can need *more* memory for tiny batches, for its per-step
    bookkeeping). ``lr_rule`` as in :func:`compare`."""
    dt = check_dtype(dtype)
    n = len(X)
    top = n if max_batch is None else min(n, check_int("max_batch", max_batch, 1))
    budget = None if memory_budget is None else int(memory_budget)
    fit_kw = dict(fit_kw)
    optimizer = study_optimizer(lr, fit_kw)
    plan = Plan.for_model(model, dt, shuffle=check_shuffle(fit_kw.get("shuffle", True)),
                          optimizer=optimizer)
    configs, b, fitted = [], 1, False
    while b <= top:
        if budget is not None:
            est = estimate_memory(dataclasses.replace(plan, batch_size=b), n,
                                  backend=backend).total
            if est > budget:
                configs.append(("mbgd", b, f"estimated peak {est:,} bytes exceeds the budget "
                                           f"of {budget:,} bytes"))
                if fitted:
                    break
                b *= 2
                continue
        configs.append(("mbgd", b, None))
        fitted = True
        b *= 2
    return _study(model, X, y, configs, [backend], epochs, optimizer, repeats, target_loss,
                  seed, dtype, trace_memory, progress,
                  {"study": "sweep_batch_size", "memory_budget": memory_budget}, fit_kw,
                  lr_rule)


@dataclass
class Table:
    """The result of a study: ``rows`` (one dict per configuration) and ``meta`` (what was
    run, where, when). Convert with ``to_markdown``, ``to_csv``, ``to_json``; draw with
    ``plot``."""

    rows: list[dict]
    meta: dict = field(default_factory=dict)

    def ok_rows(self) -> list[dict]:
        """Rows of configurations that ran (status ``ok`` or ``diverged``)."""
        return [r for r in self.rows if r.get("status") in ("ok", "diverged")]

    def to_dict(self) -> dict:
        """Plain-Python dict: ``{"meta": ..., "rows": [...]}``."""
        return {"meta": self.meta, "rows": self.rows}

    def to_json(self, path=None) -> str:
        """The table as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1, default=json_default)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    def to_csv(self, path) -> None:
        """One line per row, every field (lists and dicts as JSON text)."""
        keys = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: json.dumps(v, default=json_default) if isinstance(v, (list, dict))
                            else v for k, v in r.items()})

    def summary_columns(self) -> tuple[str, ...]:
        """The columns :meth:`to_markdown` shows: :data:`SUMMARY_COLUMNS` less the optional
        ones without a value in any row (the target columns stay when the study has a
        target loss; the train accuracy gives way to the validation accuracy)."""
        present = {c for r in self.rows for c in OPTIONAL_COLUMNS if r.get(c) is not None}
        if self._target() is not None:
            present |= {"time_to_target_s", "epochs_to_target"}
        if "val_accuracy" in present:
            present.discard("train_accuracy")
        return tuple(c for c in SUMMARY_COLUMNS if c not in OPTIONAL_COLUMNS or c in present)

    def to_markdown(self, columns=None) -> str:
        """A Markdown table of the main measurements (``columns``, default
        :meth:`summary_columns`), in readable units (:func:`format_cell`); failed rows show
        their reason."""
        columns = list(self.summary_columns() if columns is None else columns)
        head = "| " + " | ".join(columns) + " |"
        lines = [head, "|" + "---|" * len(columns)]
        for r in self.rows:
            cells = [format_cell(c, r.get(c)) for c in columns]
            if r.get("status") not in ("ok", None) and r.get("reason") and "status" in columns:
                cells[columns.index("status")] += f": {r['reason']}"
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def _target(self):
        target = self.meta.get("target_loss")
        if target is None:
            target = next((r["target_loss"] for r in self.rows
                           if r.get("target_loss") is not None), None)
        return target

    def conclusion(self) -> str:
        """One line computed from the rows that ran to the end (status ``ok``): the fastest
        to the target loss (or, without one reached, the lowest loss), the highest
        throughput, and the best accuracy (classification) or validation loss."""
        ok = [r for r in self.rows if r.get("status") == "ok" and r.get("train_loss")]
        if not ok:
            return "no configuration ran to the end"
        parts = [self._target_clause(ok)]
        fast = max(ok, key=lambda r: r.get("samples_per_s") or 0.0)
        if fast.get("samples_per_s"):
            parts.append(f"highest throughput: {config_label(fast)}, "
                         f"{format_si(fast['samples_per_s'])} samples/s")
        parts.append(self._quality_clause(ok))
        return "; ".join(p for p in parts if p)

    def _target_clause(self, ok: list[dict]) -> str:
        target = self._target()
        reached = [r for r in ok if r.get("time_to_target_s") is not None]
        if target is not None and reached:
            best = min(reached, key=lambda r: (r["time_to_target_s"], r["epochs_to_target"]))
            epochs = best["epochs_to_target"]
            return (f"fastest to loss {format_cell('target_loss', target)}: "
                    f"{config_label(best)}, {format_seconds(best['time_to_target_s'])} s "
                    f"({epochs} epoch{'s' if epochs != 1 else ''}; reached by "
                    f"{len(reached)} of {len(ok)})")
        low = min(ok, key=lambda r: r["final_train_loss"])
        loss = format_cell("final_train_loss", low["final_train_loss"])
        if target is None:
            return f"lowest training loss: {loss}, {config_label(low)}"
        return (f"none reached loss {format_cell('target_loss', target)} in "
                f"{self.meta.get('epochs', len(low['train_loss']))} epochs (lowest: {loss}, "
                f"{config_label(low)})")

    @staticmethod
    def _quality_clause(ok: list[dict]) -> str:
        for key, what, best in (("val_accuracy", "best validation accuracy", max),
                                ("train_accuracy", "best training accuracy", max),
                                ("final_val_loss", "lowest validation loss", min)):
            rows = [r for r in ok if r.get(key) is not None]
            if rows:
                top = best(rows, key=lambda r: r[key])
                text = format_cell(key, top[key])
                # ties as shown (backends agree to rounding): count them, do not pick one
                others = sum(format_cell(key, r[key]) == text for r in rows) - 1
                tied = f" (tied with {others} other{'s' if others > 1 else ''})" if others else ""
                return f"{what}: {text}, {config_label(top)}{tied}"
        return ""

    def plot(self, path) -> str:
        """Write a PNG: loss vs seconds, loss vs epoch, samples/s vs batch size, peak memory
        vs batch size. Needs matplotlib (``pip install "fastgd[plot]"``)."""
        from .plot import plot_table

        return plot_table(self, path)

    def __str__(self) -> str:
        return self.to_markdown()


def json_default(v):
    """``json.dumps`` fallback for NumPy scalars and arrays (anything else: ``str``)."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def config_label(row: dict) -> str:
    """``mbgd b=32 on numba-cpu``, ``sgd on numpy``: a row's configuration in words."""
    mode = row.get("mode")
    size = f" b={row.get('batch_size')}" if mode == "mbgd" else ""
    return f"{mode}{size} on {row.get('backend')}"


def format_significant(v: float, digits: int = 3) -> str:
    """``v`` rounded to ``digits`` significant digits, written without an exponent
    (``0.00517``, ``12.3``, ``1,230``)."""
    v = float(f"{v:.{digits}g}")  # round first: 0.9996 is 1.00, not 1.000
    if v == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    return f"{v:,.{decimals}f}"


def format_seconds(v: float) -> str:
    """Seconds with 3 significant digits: ``0.00517``, ``1.23``, ``45.6``."""
    return format_significant(v, 3)


def format_si(v: float) -> str:
    """A rate with 3 significant digits and a k/M/G suffix: ``25.4k``, ``1.23M``, ``193``."""
    v = float(f"{v:.3g}")
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= factor:
            return format_significant(v / factor, 3) + suffix
    return format_significant(v, 3)


def format_compile(v: float) -> str:
    """A compile (or cache-load) time: ``cached`` below a millisecond (nothing was
    compiled: already in memory, or a backend without a compiler), else milliseconds or,
    from a second, seconds."""
    if v < CACHED_BELOW_S:
        return "cached"
    if v < 1.0:
        return f"{format_significant(v * 1e3, 3)} ms"
    return f"{format_seconds(v)} s"


def format_cell(column: str, v) -> str:
    """A table cell in readable units: bytes in MiB, rates like ``1.23M``, seconds and
    compile times with 3 significant digits, accuracies in percent, losses and learning
    rates with 4 significant digits, never in exponent notation."""
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
        return str(v)
    if not np.isfinite(v):
        return str(v)
    if column.endswith("_bytes"):
        return f"{v / 2**20:.1f} MiB"
    if column.startswith(("samples_per_s", "steps_per_s")):
        return format_si(v)
    if column == "compile_s":
        return format_compile(v)
    if column.endswith("_accuracy"):
        return f"{100 * v:.1f}%"
    if column.endswith("_s") or "_s_" in column:
        return format_seconds(v)
    if isinstance(v, (int, np.integer)):
        return str(v)
    if column in ("lr", "target_loss"):  # values someone chose: 0.1, not 0.1000
        text = format_significant(v, 4)
        return text.rstrip("0").rstrip(".") if "." in text else text
    return format_significant(v, 4)
