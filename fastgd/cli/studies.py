"""The studies of ``compare`` and ``sweep``: the built-in pair, the one study that
``--model``/``--data`` describe, and loading a study's data."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..compare import MODES
from .defaults import DEFAULT_DATA, DEFAULT_LR
from .modelspec import model_kind, parse_model
from .reports import note
from .training import load_data

FALLBACK_NOTE = ("scikit-learn is not installed, so the MLP study uses synthetic "
                 "classification:2000x64x10 instead of digits")


@dataclass(frozen=True)
class Study:
    """One study the ``compare``/``sweep`` commands run: a data spec, a model spec, the
    configurations and the learning rate (tuned for the built-in studies)."""

    name: str
    data: str
    model: str | None
    modes: tuple[str, ...] = MODES
    batch_sizes: tuple[int, ...] = (32, 256, 4096)
    lr: float = DEFAULT_LR
    fallback_data: str | None = None  # when ``data`` needs a missing package
    fallback_lr: float | None = None


# The built-in study of ``fastgd compare``, with learning rates tried on it: every
# configuration's loss falls over its 3 epochs. Linear: SGD at batch 1 is stable below about
# 0.03 (|x|^2 = d = 32); 0.02 brings SGD and MBGD 32/256 to the noise floor (0.01) while BGD
# and MBGD 4096 (3 and 15 steps) show how few steps they take. MLP: 0.05, not 0.1: at 0.1,
# float32 SGD on digits is chaotic enough that NumPy and Numba rounding end 0.14 vs 0.23
# apart; at 0.05 the backends agree to 4 digits (0.257). The synthetic fallback is noisier
# under SGD (0.05 ends NumPy 0.85 vs Numba 0.97 in float32); 0.02 agrees (0.184).
BUILTIN = (
    Study("linear-regression", DEFAULT_DATA, "linear", ("bgd", "sgd", "mbgd"), (32, 256, 4096),
          lr=0.02),
    Study("mlp-digits", "digits", "mlp:64-64-10:relu:softmax", ("sgd", "mbgd"), (32, 256),
          lr=0.05, fallback_data="classification:2000x64x10", fallback_lr=0.02),
)


def default_lr(args) -> float:
    """``--lr``, else the built-in linear study's rate on the default data, else
    ``DEFAULT_LR``."""
    return args.lr or (BUILTIN[0].lr if args.data is None else DEFAULT_LR)


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
        if args.lr:
            st = replace(st, lr=args.lr, fallback_lr=args.lr)
        if command == "compare":
            st = replace(st, modes=args.modes or st.modes,
                         batch_sizes=args.batch_sizes or st.batch_sizes)
        out.append(st)
    return out


def load_study_data(st: Study, args):
    """``(study, data, note, X, y, suggested_loss)``: the study's data, or its fallback data
    (with the study's fallback learning rate and a note, printed now) when the data needs a
    package that is missing."""
    try:
        return (st, st.data, None, *load_data(st.data, args.target, args.seed, args.dtype))
    except ImportError:
        if st.fallback_data is None:
            raise
    st = replace(st, lr=st.fallback_lr or st.lr)
    note(args, f"note: {FALLBACK_NOTE}", always=True)
    return (st, st.fallback_data, FALLBACK_NOTE,
            *load_data(st.fallback_data, None, args.seed, args.dtype))
