"""The studies of ``compare`` and ``sweep``: the built-in pair, the one study that
``--model``/``--data`` describe, and loading a study's data."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..compare import MODES, LinearScaling
from .defaults import DEFAULT_DATA, DEFAULT_DATA_LR, DEFAULT_LR
from .modelspec import model_kind, parse_model
from .reports import note
from .training import load_data

FALLBACK_NOTE = ("scikit-learn is not installed, so the MLP study uses synthetic "
                 "classification:2000x64x10 instead of digits")


@dataclass(frozen=True)
class Study:
    """One study the ``compare``/``sweep`` commands run: a data spec, a model spec, the
    configurations and how they train.

    ``lr`` is SGD's rate; with ``max_lr`` it is the base rate of the linear-scaling rule
    (:class:`fastgd.compare.LinearScaling`: ``lr * B / ref_batch``, at most ``max_lr``,
    warmed up when scaled up). ``epochs``/``target_loss``: the study's defaults of
    ``--epochs``/``--target-loss`` (None: ``DEFAULT_EPOCHS``, no target). ``val_split``: the
    held-out fraction when ``--val-split`` is not given; ``standardize``: scale the features
    to mean 0 and variance 1 with the training rows' statistics.
    """

    name: str
    data: str
    model: str | None
    modes: tuple[str, ...] = MODES
    batch_sizes: tuple[int, ...] = (32, 256, 4096)
    lr: float = DEFAULT_LR
    max_lr: float | None = None
    ref_batch: int = 32
    epochs: int | None = None
    target_loss: float | None = None
    val_split: float = 0.0
    standardize: bool = False
    fallback_data: str | None = None  # when ``data`` needs a missing package

    def lr_rule(self) -> LinearScaling | None:
        """The study's linear-scaling rule, or None for one rate for every batch size."""
        if self.max_lr is None:
            return None
        return LinearScaling(base_lr=self.lr, max_lr=self.max_lr, ref_batch=self.ref_batch)


# The built-in studies of ``fastgd compare``: standardized features, 20% held out (seeded),
# and the linear-scaling rule lr(B) = base * B / 32, capped, with a warm-up over the first
# 5% of the steps of a configuration whose rate is scaled up. The rates were tried on the
# data (float32, numba-cpu and numpy; every configuration's training loss falls):
#
# - linear-regression (MSE, so the Hessian is about 2I on standardized Gaussian features and
#   full-batch GD is stable below lr 1, fastest at 0.5): with 16000 rows and 32 features
#   every mini-batch configuration is at the noise floor (0.01) after one epoch at any
#   stable rate, and a larger rate only leaves more gradient noise above it: base 0.02 at
#   batch 32 ends SGD (0.02/32) and MBGD within 3% of the floor, 0.1 within 15%, 0.2 25-40%
#   over it. Cap 0.5 (MBGD 256 is stable below about 0.9), so MBGD 4096 and BGD run at 0.5.
#   5 epochs: BGD, one step per epoch, is at the floor from the 3rd. Target 0.015, 1.5x
#   the floor: every mini-batch configuration reaches it in epoch 1, BGD in epoch 2. (From
#   epoch 1 on, the losses move by the gradient noise, about 2%, not by learning.)
# - mlp-digits (64-64-10 ReLU, cross-entropy): base 0.2 at batch 32 (0.1 trains half as
#   fast per epoch, 0.3 overfits: validation loss 0.06-0.07 against 0.05); SGD at 0.2/32 and
#   MBGD 32 follow the same loss curve, as the rule predicts. Cap 2.0: full-batch GD
#   oscillates from 2.5 (its loss rises in epochs 4-6) and diverges at 4. 20 epochs: the
#   validation loss flattens (about 0.05, 98% accuracy) for SGD and MBGD; BGD, 20 steps,
#   is still falling, the point of the comparison. Target 0.1: SGD/MBGD reach it in epoch
#   4, BGD in epoch 15. The synthetic fallback trains with the same rule (SGD and MBGD 32
#   reach 0.1 in epoch 9, BGD not in 20; it overfits, 1600 rows of 64 features).
BUILTIN = (
    Study("linear-regression", DEFAULT_DATA, "linear", ("bgd", "sgd", "mbgd"), (32, 256, 4096),
          lr=0.02, max_lr=0.5, epochs=5, target_loss=0.015, val_split=0.2, standardize=True),
    Study("mlp-digits", "digits", "mlp:64-64-10:relu:softmax", ("bgd", "sgd", "mbgd"),
          (32, 256), lr=0.2, max_lr=2.0, epochs=20, target_loss=0.1, val_split=0.2,
          standardize=True, fallback_data="classification:2000x64x10"),
)


def default_lr(args) -> float:
    """``--lr``, else ``DEFAULT_DATA_LR`` on the default data, else ``DEFAULT_LR`` (one rate
    for every configuration: studies of ``--model``/``--data`` and ``sweep``)."""
    return args.lr or (DEFAULT_DATA_LR if args.data is None else DEFAULT_LR)


def _slug(text: str) -> str:
    stem = Path(text).stem if Path(text).suffix else text
    return re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-").lower() or "data"


def select_studies(args, command: str) -> list[Study]:
    """The studies to run: the built-in pair (compare without --model/--data) or one."""
    spec = parse_model(args.model)  # syntax errors before any data is made
    if command == "compare" and args.model is None and args.data is None:
        studies = list(BUILTIN)
        if args.target is not None:
            raise ValueError("--target needs --data FILE")
    else:
        data = args.data or DEFAULT_DATA
        name = f"{_slug(data)}-{model_kind(spec)}"
        studies = [Study(name if command == "compare" else f"sweep-{name}", data, args.model,
                         lr=default_lr(args))]
    out = []
    for st in studies:
        if args.lr:  # the base rate of a rule, whose cap is never below it
            st = replace(st, lr=args.lr,
                         max_lr=None if st.max_lr is None else max(st.max_lr, args.lr))
        if command == "compare":
            st = replace(st, modes=args.modes or st.modes,
                         batch_sizes=args.batch_sizes or st.batch_sizes)
        out.append(st)
    return out


def load_study_data(st: Study, args):
    """``(data, note, X, y, suggested_loss)``: the study's data, or its fallback data (with a
    note, printed now) when the data needs a package that is missing."""
    try:
        return (st.data, None, *load_data(st.data, args.target, args.seed, args.dtype))
    except ImportError:
        if st.fallback_data is None:
            raise
    note(args, f"note: {FALLBACK_NOTE}", always=True)
    return (st.fallback_data, FALLBACK_NOTE,
            *load_data(st.fallback_data, None, args.seed, args.dtype))
