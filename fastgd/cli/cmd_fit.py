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
    model, X, y, kw = training_set(spec, X, y, loss, args, fit_kw)
    talk = not (args.json or args.quiet)
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
            print(f"fit {kind} {'-'.join(map(str, model.sizes))} {model.loss} on {data} "
                  f"({len(X)} x {X.shape[1]}), {backend} {args.mode} batch "
                  f"{prep.plan.batch_size}, {describe_optimizer(optimizer)}, {args.dtype}; "
                  "compile "
                  f"{prep.compile_s:.2f} s", flush=True)
        try:
            result = prep.train(on_epoch)
        except DivergenceError as exc:
            if args.json:
                print(json.dumps(exc.result.to_dict(), default=json_default))
            rec = exc.result.history[-1]
            print(f"fastgd: error: training diverged in epoch {rec.epoch + 1}: batch loss "
                  f"{rec.train_loss} with lr {rec.lr:g}; lower --lr (or standardise the "
                  "features)", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, default=json_default))
    else:
        print(_summary_line(result))
    if result.stopped == "interrupted" or interrupted():
        raise KeyboardInterrupt  # reported by main: one line, status 130
    return 0
