"""``fastgd batch-size``: which batch size reaches a target loss fastest here, and why.

Without ``--data``/``--model``: the built-in pair, an MLP on MNIST-5k (standardised, 80/20
train/validation split) and a synthetic logistic problem, sized to finish well inside three
minutes on two cores with a warm Numba cache (about 20 s measured). Prints each study's
table and one recommendation line, and writes ``<study>.md``, ``.json`` and ``.png`` under
``--out``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from ..datasets import standardize
from .modelspec import build_model, parse_model
from .reports import have_matplotlib, note, out_dir
from .training import load_data, split_validation


@dataclass(frozen=True)
class BuiltinStudy:
    """One study of the built-in pair: data, model, target and batch sizes, chosen so that
    every batch size reaches the target within the epochs on two cores."""

    name: str
    data: str
    model: str
    target: float
    batch_sizes: tuple[int, ...]
    max_epochs: int
    fallback_data: str | None = None


BUILTIN = (
    BuiltinStudy("mlp-mnist5k", "mnist5k", "mlp:784-64-10:relu:softmax", 0.2,
                 (2, 8, 32, 128, 512, 2048), 30, fallback_data="digits"),
    # Gaussian classes with a shared covariance: the first gradient step from a small
    # start already points near the best direction, so the target sits close to the
    # optimum (about 0.07) for the steps to mean something
    BuiltinStudy("logistic-synthetic", "classification:20000x32x2", "logistic", 0.085,
                 (1, 8, 64, 512, 4096), 20),
)


def _studies(args):
    """The studies to run: the built-in pair, or the one ``--data``/``--model`` describe."""
    if args.data is None and args.model is None:
        return list(BUILTIN)
    data = args.data or "classification:20000x32x2"
    return [BuiltinStudy("study", data, args.model, args.target_loss or 0.3,
                         tuple(args.batch_sizes) if args.batch_sizes else (), args.max_epochs
                         or 50)]


def _load(args, study: BuiltinStudy):
    try:
        X, y, loss = load_data(study.data, args.target, seed=args.seed)
    except ImportError as exc:
        if study.fallback_data is None:
            raise
        note(args, f"{exc}; the study uses {study.fallback_data} instead")
        X, y, loss = load_data(study.fallback_data, seed=args.seed)
        study = BuiltinStudy(study.name, study.fallback_data, f"mlp:{X.shape[1]}-64-10:relu",
                             study.target, tuple(b for b in study.batch_sizes if b < len(X)),
                             study.max_epochs)
    X, y, Xv, yv = split_validation(X, y, 0.2 if args.val_split is None else args.val_split,
                                    args.seed)
    X, Xv = standardize(X, Xv)
    return study, X, y, Xv, yv, loss


def _lr(text):
    if text in (None, "tune"):
        return "tune"
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--lr must be 'tune' or a number; got {text!r}") from None


def _progress(args, name):
    if args.quiet:
        return None

    def report(batch_size, lr, traj):
        steps = "" if traj.steps is None else f" in {traj.steps} steps"
        print(f"fastgd: [{name}] batch {batch_size}, lr {lr:.3g}: {traj.status}{steps}",
              file=sys.stderr, flush=True)

    return report


def cmd_batch_size(args, interrupted=lambda: False) -> int:
    """``fastgd batch-size``: run the studies, print tables and recommendations, write
    md/json/png."""
    from ..batchsize import batch_size_study
    from ..optim import OPTIMIZERS

    out = out_dir(args.out)
    plot = not args.no_plot and have_matplotlib()
    results = {}
    for study in _studies(args):
        study, X, y, Xv, yv, loss = _load(args, study)
        model = build_model(parse_model(study.model), X, y, loss)
        sizes = tuple(args.batch_sizes) if args.batch_sizes else (study.batch_sizes or None)
        values = tuple(args.momentum or (None,))
        result = batch_size_study(
            model, X, y, target_loss=args.target_loss or study.target, batch_sizes=sizes,
            lr=_lr(args.lr),
            optimizer=OPTIMIZERS[args.optimizer[0]](**args.optimizer[1]) if args.optimizer
            else None,
            momentum=values if len(values) > 1 else values[0],
            backend=args.backend or "numba-cpu",
            max_epochs=args.max_epochs or study.max_epochs, X_val=Xv, y_val=yv,
            memory_budget=args.memory_budget, seed=args.seed, dtype=args.dtype,
            target_on=args.target_on, sharpness_rows=args.sharpness_rows,
            progress=_progress(args, study.name))
        results[study.name] = result
        base = out / study.name
        header = (f"# fastgd batch-size: {study.name}\n\nData {study.data} (standardised, "
                  f"{len(X)} train / {len(Xv)} validation rows), model {study.model}.\n\n")
        base.with_suffix(".md").write_text(header + result.to_markdown() + "\n")
        result.to_json(base.with_suffix(".json"))
        if plot:
            result.plot(base.with_suffix(".png"))
        if not args.json:
            print(f"\n## {study.name}\n\n{result.to_markdown()}\n")
            for one in getattr(result, "studies", [result]):
                print(f"Recommendation ({study.name}, {one.label}): {one.explanation[0]}")
    if args.json:
        print(json.dumps({name: r.to_dict() for name, r in results.items()},
                         default=str))
    note(args, f"wrote {out}/")
    return 0
