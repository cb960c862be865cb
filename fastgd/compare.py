"""Compare configurations: backends x modes x batch sizes, each measured the same way.

:func:`measure` runs one configuration ``repeats`` times and returns one flat record (a
dict): time (steady-state seconds per epoch and per step, samples/s, steps/s as medians with
min/max; compile time apart), memory (traced and resident-set peaks, device peak, the
analytic estimate) and convergence (loss per epoch against training seconds and samples
seen, time and epochs to reach ``target_loss``). :func:`compare` and
:func:`sweep_batch_size` collect records into a :class:`Table`.

Every configuration of a study starts from the same initial parameters and the same data.
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
import platform
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from . import backends as _backends
from .fit import DivergenceError, prepare
from .measure import HostPeak, device_peak, estimate_memory
from .optim import make_optimizer
from .plan import Plan
from .validate import check_dtype, check_features, check_float, check_int, check_targets

MODES = ("bgd", "sgd", "mbgd")
#: The SGD learning rate of a study when neither ``lr`` nor ``optimizer`` is given.
STUDY_LR = 0.05

# Columns of the Markdown table (the JSON/CSV keep every field).
SUMMARY_COLUMNS = (
    "backend", "mode", "batch_size", "status", "samples_per_s", "steps_per_s", "epoch_s",
    "compile_s", "peak_traced_bytes", "estimate_bytes", "final_train_loss", "time_to_target_s",
)


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
    """(seconds, epochs) of training until the train loss first reached ``target_loss``."""
    if target_loss is None:
        return None, None
    for rec in history:
        if rec.train_loss <= target_loss:
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
    ``status="diverged"`` and the history so far.
    """
    repeats = check_int("repeats", repeats, 1)
    kw = dict(fit_kw, backend=backend, mode=mode, batch_size=batch_size, epochs=epochs, lr=lr)
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
    row.update(
        final_train_loss=history[-1].train_loss if history else None,
        final_val_loss=history[-1].val_loss if history else None,
        train_loss=[r.train_loss for r in history],
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


def _study(model, X, y, configs, backends, epochs, optimizer, repeats, target_loss, seed,
           dtype, trace_memory, progress, meta, fit_kw) -> Table:
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
            try:
                row = measure(model, Xc, y, backend=backend, mode=mode, batch_size=bs,
                              epochs=epochs, optimizer=optimizer, repeats=repeats,
                              target_loss=target_loss,
                              trace_memory=trace_memory, progress=progress, params=params,
                              seed=seed, dtype=dt.name, **fit_kw)
            except MemoryError as exc:  # host or device (cupy's OutOfMemoryError included)
                row = _failure_row(base, "out of memory", f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - a study records, never aborts
                row = _failure_row(base, "failed", f"{type(exc).__name__}: {exc}")
        rows.append(row)
        progress.end(row)
    meta = dict(meta, model=_model_name(model), n=len(Xc), d=Xc.shape[1], dtype=dt.name,
                epochs=epochs, lr=optimizer.lr, optimizer=optimizer.to_dict(), repeats=repeats,
                seed=seed, target_loss=target_loss,
                machine=f"{platform.machine()}, {platform.processor() or 'cpu'}",
                date=time.strftime("%Y-%m-%d %H:%M"), **{k: v for k, v in fit_kw.items()
                                                         if np.isscalar(v)})
    return Table(rows=rows, meta=meta)


def _model_name(model) -> str:
    kind = "linear" if len(model.sizes) == 2 else f"mlp({model.activation})"
    return f"{kind} {'-'.join(map(str, model.sizes))} {model.loss}"


def compare(model, X, y, modes=MODES, batch_sizes=(32, 256, 4096), backends=("numpy",
            "numba-cpu"), epochs=3, lr=None, target_loss=None, repeats=3, seed=0,
            dtype="float32", trace_memory=True, progress=None, **fit_kw) -> Table:
    """Measure every (backend, mode, batch size) on the same data and initial parameters.

    ``modes``: any of ``"bgd"`` (batch n), ``"sgd"`` (batch 1), ``"mbgd"`` (one row per
    entry of ``batch_sizes``). ``backends=None`` means every backend fastgd knows (missing
    ones appear as ``unavailable`` rows). ``fit_kw``: further :func:`fastgd.fit` arguments
    (optimizer, momentum, nesterov, weight_decay, shuffle, lr_schedule, X_val, y_val,
    drop_last); ``lr`` is the SGD shorthand's (default :data:`STUDY_LR`) or overrides
    nothing when ``optimizer`` is given (giving both is an error, as in ``fit``).
    Returns a :class:`Table`: one row per configuration, medians over ``repeats``.
    """
    fit_kw = dict(fit_kw)
    optimizer = study_optimizer(lr, fit_kw)
    configs = _configurations(modes, batch_sizes, len(X))
    return _study(model, X, y, configs, backends, epochs, optimizer, repeats, target_loss,
                  seed, dtype, trace_memory, progress, {"study": "compare"}, fit_kw)


def sweep_batch_size(model, X, y, backend="numba-cpu", max_batch=None, memory_budget=None,
                     epochs=3, lr=None, target_loss=None, repeats=1, seed=0, dtype="float32",
                     trace_memory=True, progress=None, **fit_kw) -> Table:
    """The batch-size study: MBGD at batch sizes 1, 2, 4, ... up to ``n`` or ``max_batch``.

    With ``memory_budget`` (bytes), a batch size whose estimated peak
    (:func:`fastgd.measure.estimate_memory`; the study converts the data once before any
    run, so runs copy nothing and the copy is not counted) exceeds the budget is
    listed as skipped with its estimate instead of run, and the sweep stops at the first
    such batch after one that fitted (memory only grows from there; below it, a
    Python-per-step backend can need *more* memory for tiny batches, for its per-step
    bookkeeping)."""
    dt = check_dtype(dtype)
    n = len(X)
    top = n if max_batch is None else min(n, check_int("max_batch", max_batch, 1))
    budget = None if memory_budget is None else int(memory_budget)
    fit_kw = dict(fit_kw)
    optimizer = study_optimizer(lr, fit_kw)
    plan = Plan.for_model(model, dt, shuffle=fit_kw.get("shuffle", True), optimizer=optimizer)
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
                  {"study": "sweep_batch_size", "memory_budget": memory_budget}, fit_kw)


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

    def to_markdown(self, columns=SUMMARY_COLUMNS) -> str:
        """A Markdown table of the main measurements (failed rows show their reason)."""
        head = "| " + " | ".join(columns) + " |"
        lines = [head, "|" + "---|" * len(columns)]
        for r in self.rows:
            cells = [_fmt(c, r.get(c)) for c in columns]
            if r.get("status") not in ("ok", None) and r.get("reason"):
                cells[columns.index("status")] += f": {r['reason']}" if "status" in columns else ""
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

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


def _fmt(column: str, v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    if column.endswith("_bytes"):
        return f"{v / 2**20:.1f} MiB"
    if column in ("samples_per_s", "steps_per_s"):
        return f"{v:,.0f}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
