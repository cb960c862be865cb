"""``fastgd fit``: one training run, a line per epoch and a summary (or ``--json``)."""

from __future__ import annotations

import json
import sys

import numpy as np

from ..compare import json_default
from .backend_choice import require_available
from .defaults import DEFAULT_DATA, DEFAULT_EPOCHS
from .modelspec import parse_model
from .studies import default_lr
from .training import build_optimizer, describe_optimizer, fit_kwargs, load_data, training_set


def _epoch_line(rec, epochs: int) -> str:
    val = "-" if rec.val_loss is None else f"{rec.val_loss:.6g}"
    full = "" if rec.full_train_loss is None else f"  train loss {rec.full_train_loss:.6g}"
    return (f"epoch {rec.epoch + 1:>{len(str(epochs))}}/{epochs}  batch loss "
            f"{rec.train_loss:.6g}{full}  val loss {val}  {rec.seconds:.4f} s  "
            f"lr {rec.lr:.4g}")


def _summary_line(result) -> str:
    last = result.history[-1] if result.history else None
    final = ""
    if last is not None and last.full_train_loss is not None:
        final = f"; final train loss {last.full_train_loss:.6g}"
    elif last is not None:
        final = f"; final batch loss {last.train_loss:.6g}"
    return (f"{result.samples_per_s:,.0f} samples/s, {result.steps:,} steps in "
            f"{result.train_s:.4f} s of training, compile {result.compile_s:.2f} s{final}")


def _shard(spec, X, y, loss, args, fit_kw):
    """``--distributed``: the model from the whole data's shape and labels, then this rank's
    contiguous share of the rows (views: a memory-mapped file is read only there), and
    ``--val-split`` held out of that share. Returns ``(model, X, y, kw, comm)``."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ValueError("--distributed needs mpi4py: pip install 'fastgd[mpi]', then run "
                         "mpiexec -n P fastgd fit --distributed ...") from exc
    from .modelspec import build_model
    from .training import split_validation

    comm = MPI.COMM_WORLD
    model = build_model(spec, X, y, loss)
    rank, size = comm.Get_rank(), comm.Get_size()
    lo, hi = rank * len(X) // size, (rank + 1) * len(X) // size
    X, y, X_val, y_val = split_validation(X[lo:hi], y[lo:hi], args.val_split, args.seed)
    kw = dict(fit_kw, comm=comm)
    if args.sync_every is not None:
        kw["sync_every"] = args.sync_every
    if X_val is not None:
        kw.update(X_val=X_val, y_val=y_val)
    return model, X, y, kw, comm


def cmd_fit(args, interrupted=lambda: False) -> int:
    """``fastgd fit``: one run; a line per epoch and a summary, or ``--json``. Returns 0, or
    1 when training diverged; raises ``KeyboardInterrupt`` after a Ctrl-C (status 130)."""
    from ..fit import DivergenceError, prepare

    spec = parse_model(args.model)
    backend = require_available(args.backend)
    fit_kw = fit_kwargs(args)
    data = args.data or DEFAULT_DATA
    optimizer = build_optimizer(args, default_lr(args))
    X, y, loss = load_data(data, args.target, args.seed, args.dtype)
    comm = None
    if getattr(args, "distributed", False):
        model, X, y, kw, comm = _shard(spec, X, y, loss, args, fit_kw)
    else:
        if getattr(args, "sync_every", None) is not None:
            raise ValueError("--sync-every goes with --distributed")
        model, X, y, kw = training_set(spec, X, y, loss, args, fit_kw)
    talk = not (args.json or args.quiet) and (comm is None or comm.Get_rank() == 0)
    report = comm is None or comm.Get_rank() == 0
    epochs = args.epochs or DEFAULT_EPOCHS

    def on_epoch(rec):
        """Print the epoch's line (not with --json or --quiet)."""
        if talk:
            print(_epoch_line(rec, epochs), flush=True)

    with np.errstate(all="ignore"):
        # the exact training loss after the last epoch only: the epochs' own line shows
        # the mean of their batch losses, free
        prep = prepare(model, X, y, mode=args.mode, batch_size=args.batch_size, epochs=epochs,
                       optimizer=optimizer, seed=args.seed, backend=backend,
                       dtype=args.dtype, eval_every=epochs, **kw)
        if talk:
            kind = "linear" if len(model.sizes) == 2 else f"mlp({model.activation})"
            ranks = "" if comm is None else \
                f" per rank, {comm.Get_size()} ranks"
            print(f"fit {kind} {'-'.join(map(str, model.sizes))} {model.loss} on {data} "
                  f"({len(X)} x {X.shape[1]}{ranks}), {backend} {args.mode} batch "
                  f"{prep.plan.batch_size}, {describe_optimizer(optimizer)}, {args.dtype}; "
                  "compile "
                  f"{prep.compile_s:.2f} s", flush=True)
        try:
            result = prep.train(on_epoch)
        except DivergenceError as exc:
            if not report:
                return 1
            if args.json:
                print(json.dumps(exc.result.to_dict(), default=json_default))
            rec = exc.result.history[-1]
            print(f"fastgd: error: training diverged in epoch {rec.epoch + 1}: batch loss "
                  f"{rec.train_loss} with lr {rec.lr:g}; lower --lr (or standardise the "
                  "features)", file=sys.stderr)
            return 1
    if not report:
        pass
    elif args.json:
        print(json.dumps(result.to_dict(), indent=1, default=json_default))
    else:
        print(_summary_line(result) + ("" if comm is None else
                                       f"; {comm.Get_size()} ranks (samples/s and steps "
                                       f"per rank), {result.exchange_s:.4f} s exchanging"))
    if result.stopped == "interrupted" or interrupted():
        raise KeyboardInterrupt  # reported by main: one line, status 130
    return 0
