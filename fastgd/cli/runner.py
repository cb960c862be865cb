"""The study runner shared by ``compare`` and ``sweep``: each study's data and model, the
measurements with a progress bar, then the reports."""

from __future__ import annotations

import shlex

import numpy as np

from ..datasets import standardize
from ..optim import SGD
from .backend_choice import check_backends, require_available
from .defaults import DEFAULT_EPOCHS, DEFAULT_REPEATS
from .modelspec import parse_model
from .progress import ProgressBar
from .reports import have_matplotlib, note, out_dir, print_results, print_study, write_study
from .studies import load_study_data, select_studies
from .training import build_optimizer, describe_optimizer, fit_kwargs, training_set


def _measure(args, command: str, backends, model, X, y, st, **kw):
    """The Table of one study: ``compare`` over ``backends`` (a list) or ``sweep_batch_size``
    on one backend (a name); ``kw``: epochs, target_loss, lr_rule, repeats, progress and
    the fit options."""
    from ..compare import compare, sweep_batch_size

    common = dict(seed=args.seed, dtype=args.dtype, **kw)
    with np.errstate(all="ignore"):
        if command == "compare":
            return compare(model, X, y, modes=st.modes, batch_sizes=st.batch_sizes,
                           backends=backends, **common)
        return sweep_batch_size(model, X, y, backend=backends, max_batch=args.max_batch,
                                memory_budget=args.memory_budget, **common)


def _study_inputs(st, args, fit_kw: dict):
    """``(data, fallback note, model, X, y, kw)`` of one study: its training rows (the
    held-out part of ``--val-split`` or the study's own, standardized when the study says
    so) and ``kw`` for :func:`_measure` (the fit options, the validation rows, optimizer,
    lr_rule, epochs, target_loss; options override the study's settings)."""
    data, fallback, X, y, loss = load_study_data(st, args)
    model, X, y, kw = training_set(parse_model(st.model), X, y, loss, args, fit_kw,
                                   val_split=args.val_split or st.val_split)
    if st.standardize:  # with the training rows' statistics, validation rows too
        X, X_val = standardize(X, kw.get("X_val"))
        if X_val is not None:
            kw["X_val"] = X_val
    kw["optimizer"] = build_optimizer(args, st.lr)
    # the rule's base rates are SGD's: another optimizer keeps one rate for all
    kw["lr_rule"] = st.lr_rule() if isinstance(kw["optimizer"], SGD) else None
    kw["epochs"] = args.epochs or st.epochs or DEFAULT_EPOCHS
    kw["target_loss"] = args.target_loss if args.target_loss is not None else st.target_loss
    return data, fallback, model, X, y, kw


def run_studies(args, command: str, interrupted) -> int:
    """Run the studies of ``command`` (``compare`` or ``sweep``) and report them; returns
    exit status 0. ``interrupted``: a callable, true once Ctrl-C was hit."""
    from ..plot import PLOT_HINT

    studies = select_studies(args, command)
    fit_kw = fit_kwargs(args)
    repeats = args.repeats or DEFAULT_REPEATS[command]
    if command == "compare":
        from .. import backends

        chosen = (check_backends(args.backends) if args.backends is not None
                  else backends.available())
    else:
        chosen = require_available(args.backend)
    plot = not args.no_plot
    if plot and not have_matplotlib():
        note(args, f"note: no PNG: matplotlib is not installed ({PLOT_HINT})", always=True)
        plot = False
    out = out_dir(args.out)
    argv_text = shlex.join(["fastgd", *args.argv])
    bar = ProgressBar(enabled=None if not args.quiet else False, repeats=repeats,
                      interrupted=interrupted)
    results = {}
    for i, st in enumerate(studies):
        data, fallback, model, X, y, kw = _study_inputs(st, args, fit_kw)
        opt_text = describe_optimizer(kw["optimizer"], kw["lr_rule"])
        note(args, f"study {i + 1}/{len(studies)} {st.name}: {' x '.join(map(str, X.shape))} "
                   f"{data}, {opt_text}")
        try:
            table = _measure(args, command, chosen, model, X, y, st, repeats=repeats,
                             progress=bar, **kw)
        finally:
            bar.close()
        table.meta.update(data=data, command=argv_text, name=st.name,
                          val_split=args.val_split or st.val_split,
                          standardized=st.standardize, conclusion=table.conclusion())
        if fallback:
            table.meta["note"] = fallback
        write_study(table, out, st.name, plot)
        results[st.name] = table
        if not args.json:
            print_study(table, st.name, opt_text)
    print_results(args, results, out, plot)
    return 0

