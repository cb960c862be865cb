"""The ``fastgd`` command: measure gradient descent from the shell.

Commands (``fastgd`` alone runs ``compare``):

- ``compare``: backends x modes x batch sizes on one data set, or with no ``--model`` /
  ``--data`` the built-in study (a linear regression and an MLP on digits); prints Markdown
  tables and writes ``<study>.md/.json/.csv/.png`` into an output folder. ``demo`` is an
  alias, kept for old instructions.
- ``sweep``: MBGD at batch sizes 1, 2, 4, ... on one backend, up to ``--max-batch`` or what
  ``--memory-budget`` allows.
- ``fit``: one training run, one line per epoch and a summary (or ``--json``).
- ``backends``: every backend, available or why not.

User mistakes (bad options, data specs, files) print one ``fastgd: error: ...`` line and
exit with status 2; a diverged ``fit`` exits 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .compare import MODES, Progress, json_default

COMMANDS = ("compare", "sweep", "fit", "backends", "demo")
DEFAULT_OUT = "fastgd-results"
DEFAULT_DATA = "regression:20000x32"
DEFAULT_LR = 0.01  # for data and models given on the command line
DEFAULT_EPOCHS = 3
DEFAULT_REPEATS = {"compare": 2, "sweep": 1}
FALLBACK_NOTE = ("scikit-learn is not installed, so the MLP study uses synthetic "
                 "classification:2000x64x10 instead of digits")

_ACTIVATIONS = ("relu", "tanh", "sigmoid")
_LOSSES = ("mse", "logistic", "softmax")
_MODEL_HELP = ("use linear, logistic, softmax or mlp[:SIZES][:ACTIVATION][:LOSS], e.g. "
               "mlp:64-128-10:tanh (SIZES from the number of features to the outputs)")


# --------------------------------------------------------------------------- studies


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


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` string: ``kind`` (``linear``/``logistic``/``softmax``/``mlp``),
    MLP ``sizes`` (or None: inputs-64-outputs), ``activation`` and ``loss`` (None: from the
    data)."""

    kind: str
    sizes: tuple[int, ...] | None = None
    activation: str | None = None
    loss: str | None = None


def parse_model(text: str | None) -> ModelSpec | None:
    """Parse a ``--model`` string (syntax only; sizes are checked against the data later).

    ``linear`` (MSE), ``logistic``, ``softmax`` (linear models with that loss; a trailing
    ``:LOSS`` may override it), or ``mlp[:SIZES][:ACTIVATION][:LOSS]`` with ``SIZES`` like
    ``64-128-10`` (inputs, hidden..., outputs), ``ACTIVATION`` one of relu/tanh/sigmoid and
    ``LOSS`` one of mse/logistic/softmax in any order. ``None`` gives ``None`` (a linear
    model with the data's suggested loss). Raises ``ValueError`` on anything else.
    """
    if text is None:
        return None
    parts = [p.strip().lower() for p in str(text).split(":")]
    kind, rest = parts[0], parts[1:]
    if kind not in ("linear", "logistic", "softmax", "mlp"):
        raise ValueError(f"unknown model {text!r}; {_MODEL_HELP}")
    sizes = activation = None
    loss_given = False
    loss = {"linear": "mse", "logistic": "logistic", "softmax": "softmax"}.get(kind)
    for part in rest:
        if kind == "mlp" and sizes is None and re.fullmatch(r"\d+(-\d+)+", part):
            sizes = tuple(int(s) for s in part.split("-"))
            if min(sizes) < 1:
                raise ValueError(f"model {text!r}: layer sizes must be positive; {_MODEL_HELP}")
        elif kind == "mlp" and activation is None and part in _ACTIVATIONS:
            activation = part
        elif part in _LOSSES and not loss_given:
            loss, loss_given = part, True
        else:
            raise ValueError(f"model {text!r}: cannot read {part!r}; {_MODEL_HELP}")
    return ModelSpec(kind, sizes, activation, loss)


def _n_outputs(y, loss: str) -> int:
    y = np.asarray(y)
    if loss == "softmax":
        if y.size == 0 or y.dtype.kind not in "biuf" or not np.all(np.isfinite(y)):
            return 2  # let fit's validation explain what is wrong with the targets
        return max(2, int(np.max(y)) + 1)
    return int(y.shape[1]) if y.ndim == 2 else 1


def build_model(spec: ModelSpec | None, X, y, suggested_loss: str):
    """The :class:`fastgd.Model` for ``spec`` on data ``(X, y)``; the number of features and
    outputs come from the data, a missing loss from ``suggested_loss``."""
    from .models import MLP, Linear

    d = int(X.shape[1])
    if spec is None:
        spec = ModelSpec("linear", loss=suggested_loss)
    loss = spec.loss or suggested_loss
    k = _n_outputs(y, loss)
    if spec.kind != "mlp":
        return Linear(d, k, loss)
    sizes = spec.sizes or (d, 64, k)
    if sizes[0] != d:
        raise ValueError(f"model mlp:{'-'.join(map(str, sizes))}: the first size must be the "
                         f"number of features of the data, {d}")
    return MLP(sizes, activation=spec.activation or "relu", loss=loss)


def _model_kind(spec: ModelSpec | None) -> str:
    return "linear" if spec is None or spec.kind != "mlp" else "mlp"


# --------------------------------------------------------------------------- data


def load_data(spec: str, target=None, seed: int = 0, dtype: str = "float32"):
    """``(X, y, suggested_loss)`` for a ``--data`` spec (see ``fastgd.datasets.from_spec``);
    ``target`` picks the target column (name or index) or ``.npy`` file of a data file."""
    from . import datasets

    if target is None:
        return datasets.from_spec(spec, seed=seed, dtype=dtype)
    if Path(spec).suffix.lower() not in (".npy", ".npz", ".csv") and not Path(spec).exists():
        raise ValueError(f"--target applies to data files (.npy/.npz/.csv); got --data {spec!r}")
    X, y = datasets.load(spec, target=target)
    return X, y, datasets.guess_loss(y)


def _target_arg(text: str):
    """A ``--target`` value: an integer column index, else a column name or a path."""
    try:
        return int(text)
    except ValueError:
        return text


def _split_validation(X, y, fraction: float, seed: int):
    """Hold out a seeded random ``fraction`` of the rows: ``(X, y, X_val, y_val)``."""
    if not fraction:
        return X, y, None, None
    n = len(X)
    n_val = int(round(n * fraction))
    if not 1 <= n_val < n:
        raise ValueError(f"--val-split {fraction} leaves no rows for training or validation "
                         f"with {n} rows")
    perm = np.random.default_rng(seed).permutation(n)
    tr, va = np.sort(perm[n_val:]), np.sort(perm[:n_val])
    y = np.asarray(y)
    return X[tr], y[tr], X[va], y[va]


def _slug(text: str) -> str:
    stem = Path(text).stem if Path(text).suffix else text
    return re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-").lower() or "data"


# --------------------------------------------------------------------------- progress


class ProgressBar(Progress):
    """A one-line progress bar on ``stream`` (stderr): configuration ``i/N`` with its label,
    the overall fraction done, and the repeat, epoch and loss of the running configuration.

    Draws with ``\\r`` only when ``enabled`` (default: ``stream`` is a terminal). Whether it
    draws or not, it also checks ``interrupted`` (a callable) at every report and raises
    ``KeyboardInterrupt`` when it is true, so that Ctrl-C stops a whole study even though a
    training loop catches the interrupt to return the epochs done so far.
    """

    def __init__(self, stream=None, enabled: bool | None = None, repeats: int = 1,
                 interrupted=None):
        """``repeats``: training runs per configuration (for the bar's fraction)."""
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.repeats = max(1, int(repeats))
        self.interrupted = interrupted or (lambda: False)
        self.index, self.total, self.label, self.epochs = 0, 1, "", 1
        self.run = self.epochs_done = self.epoch_no = 0
        self.loss = None
        self._drawn = False

    def _check(self) -> None:
        if self.interrupted():
            raise KeyboardInterrupt

    def start(self, index: int, total: int, label: str, epochs: int) -> None:
        """Configuration ``index`` (0-based) of ``total`` starts."""
        self._check()
        self.index, self.total, self.label, self.epochs = index, max(1, total), label, epochs
        self.run = self.epochs_done = self.epoch_no = 0
        self.loss = None
        self._draw()

    def epoch(self, record) -> None:
        """An epoch ended (``record``: a :class:`fastgd.EpochRecord`)."""
        if record.epoch == 0:
            self.run += 1
        self.epochs_done += 1
        self.epoch_no = record.epoch + 1
        self.loss = record.train_loss
        self._draw()
        self._check()

    def end(self, row: dict) -> None:
        """The running configuration ended with ``row``."""
        self.epochs_done = self.epochs * self.repeats
        self._draw()
        self._check()

    def close(self) -> None:
        """Erase the bar (before printing anything else to the terminal)."""
        if self._drawn:
            self.stream.write("\r" + " " * (self._width() - 1) + "\r")
            self.stream.flush()
            self._drawn = False

    @staticmethod
    def _width() -> int:
        return max(20, shutil.get_terminal_size((80, 24)).columns)

    def _text(self) -> str:
        per = max(1, self.epochs * self.repeats)
        frac = min(1.0, (self.index + min(self.epochs_done, per) / per) / self.total)
        filled = int(round(20 * frac))
        parts = [f"[{'#' * filled}{'.' * (20 - filled)}]",
                 f"{self.index + 1}/{self.total}", self.label]
        if self.run:
            if self.repeats > 1:
                parts.append(f"run {min(self.run, self.repeats)}/{self.repeats}")
            parts.append(f"epoch {self.epoch_no}/{self.epochs}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        return " ".join(parts)

    def _draw(self) -> None:
        if not self.enabled:
            return
        width = self._width()
        line = self._text()[: width - 1]
        self.stream.write("\r" + line.ljust(width - 1))
        self.stream.flush()
        self._drawn = True


class StudyInterrupted(BaseException):
    """Ctrl-C during a study. Not a ``KeyboardInterrupt``: the training loop catches those
    to return the epochs done so far, and a study must stop at once instead."""


class _Interrupt:
    """The SIGINT handler of the command: remembers the interrupt, then raises
    ``StudyInterrupted`` when ``hard`` (studies stop at once) or ``KeyboardInterrupt``
    (``fit`` returns the epochs done so far)."""

    def __init__(self):
        self.hit = False
        self.hard = False
        self._old = None

    def __call__(self) -> bool:
        return self.hit

    def _handle(self, signum, frame):
        self.hit = True
        raise StudyInterrupted if self.hard else KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


# --------------------------------------------------------------------------- argparse


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one ``fastgd: error: ...`` line (exit status 2)."""

    def error(self, message):
        """Print one error line naming the command's ``--help``; exit with status 2."""
        self.exit(2, f"fastgd: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _nonnegative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def _float(text: str, lo: float, inclusive: bool, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v < lo or (v == lo and not inclusive):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    return _float(text, 0.0, False, "a number > 0")


def _nonnegative_float(text: str) -> float:
    return _float(text, 0.0, True, "a number >= 0")


def _fraction(text: str) -> float:
    v = _float(text, 0.0, True, "a fraction in [0, 1)")
    if v >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return v


def _finite_float(text: str) -> float:
    return _float(text, -math.inf, True, "a finite number")


def _int_list(text: str) -> tuple[int, ...]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got "
                                         f"{text!r}")
    return tuple(dict.fromkeys(_positive_int(t) for t in items))


def _modes(text: str) -> tuple[str, ...]:
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [m for m in items if m not in MODES]
    if not items or bad:
        raise argparse.ArgumentTypeError(f"modes are a comma-separated subset of "
                                         f"{','.join(MODES)}; got {text!r}")
    return tuple(dict.fromkeys(items))


def _names(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return items


_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """A memory size: ``512M``, ``2G``, ``1.5GiB``, ``64k``, ``1000000`` (K/M/G/T are powers
    of 1024; a trailing ``B`` or ``iB`` is optional). Raises ``ValueError``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.I)
    if not m:
        raise ValueError(f"expected a memory size like 512M or 2G, got {text!r}")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise ValueError(f"expected a memory size > 0, got {text!r}")
    return value


def _bytes_arg(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_data_options(p, command: str) -> None:
    default = "the built-in study" if command == "compare" else DEFAULT_DATA
    g = p.add_argument_group("data and model")
    g.add_argument("--data", metavar="SPEC",
                   help="digits, diabetes, regression:NxD[xOUTPUTS], "
                        "classification:NxD[xCLASSES] or a .npy/.npz/.csv file "
                        f"(default: {default})")
    g.add_argument("--target", type=_target_arg, metavar="COL",
                   help="target column (index or header name) of a data file, or a .npy of "
                        "targets (default: the last column, or array 'y' of a .npz)")
    g.add_argument("--model", metavar="SPEC",
                   help="linear, logistic, softmax or mlp[:SIZES][:ACTIVATION][:LOSS], e.g. "
                        "mlp:64-128-10:tanh (default: a linear model with the loss the data "
                        "suggests)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="compute dtype (default: float32)")
    g.add_argument("--seed", type=_nonnegative_int, default=0,
                   help="seed of the synthetic data, the initial parameters and the shuffle "
                        "(default: 0)")
    g.add_argument("--val-split", type=_fraction, default=0.0, metavar="FRACTION",
                   help="hold out this fraction of the rows (seeded) for a validation loss")


def _add_train_options(p, epochs_default=DEFAULT_EPOCHS) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=_positive_int, default=None,
                   help=f"epochs per run (default: {epochs_default})")
    g.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: 0.02 for the built-in linear study and "
                        f"for the default data, 0.05 for the MLP study (0.02 on its synthetic "
                        f"fallback), else {DEFAULT_LR})")
    g.add_argument("--momentum", type=_nonnegative_float, default=0.0,
                   help="SGD momentum as in torch.optim.SGD (default: 0)")
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum (needs "
                   "--momentum > 0)")
    g.add_argument("--weight-decay", type=_nonnegative_float, default=0.0,
                   help="L2 weight decay (default: 0)")
    g.add_argument("--lr-schedule", choices=("constant", "step", "invscaling", "cosine"),
                   default=None, help="learning-rate schedule over epochs (default: constant)")


def _add_study_options(p, command: str) -> None:
    g = p.add_argument_group("measurement and output")
    g.add_argument("--repeats", type=_positive_int, default=None,
                   help=f"timed runs per configuration, medians reported (default: "
                        f"{DEFAULT_REPEATS[command]})")
    g.add_argument("--target-loss", type=_finite_float, default=None, metavar="LOSS",
                   help="report time and epochs until the training loss reaches LOSS")
    g.add_argument("--out", metavar="DIR",
                   help=f"output folder (default: {DEFAULT_OUT}/<YYYYmmdd-HHMMSS>/)")
    g.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    g.add_argument("--json", action="store_true",
                   help="print the results as JSON on stdout and nothing else there: the "
                        "table ({\"meta\", \"rows\"}), or for the built-in pair "
                        "{\"studies\": {NAME: table}}")
    g.add_argument("--quiet", action="store_true", help="no progress bars or notes on stderr")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastgd`` command (all subcommands)."""
    from . import __version__

    parser = _Parser(
        prog="fastgd",
        description="Measure batch, stochastic and mini-batch gradient descent across "
                    "backends. With no command, runs 'compare' (the built-in study).",
        epilog="Run 'fastgd COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"fastgd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "compare", aliases=["demo"], help="backends x modes x batch sizes (the default)",
        description="Measure every backend x mode x batch size on the same data and initial "
                    "parameters: throughput, compile time, peak memory, loss per epoch. "
                    "Without --model/--data: the built-in study (linear regression on "
                    f"{DEFAULT_DATA}; an MLP 64-64-10 on digits), epochs 3, repeats 2. "
                    "'demo' is an alias.")
    _add_data_options(p, "compare")
    g = p.add_argument_group("configurations")
    g.add_argument("--modes", type=_modes, default=None,
                   help="comma-separated subset of bgd,sgd,mbgd (default: all; the MLP "
                        "study: sgd,mbgd)")
    g.add_argument("--batch-sizes", type=_int_list, default=None, metavar="B,B,...",
                   help="MBGD batch sizes (default: 32,256,4096; the MLP study: 32,256)")
    g.add_argument("--backends", type=_names, default=None, metavar="NAME,...",
                   help="comma-separated backends (default: every available one)")
    _add_train_options(p)
    _add_study_options(p, "compare")
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # old `demo --quick`
    p.set_defaults(handler=cmd_compare, command="compare")

    p = sub.add_parser(
        "sweep", help="MBGD at batch sizes 1, 2, 4, ... on one backend",
        description="The batch-size study: MBGD at batch sizes 1, 2, 4, ... up to n, "
                    "--max-batch, or the largest batch whose estimated memory fits "
                    f"--memory-budget. Default data: {DEFAULT_DATA}.")
    _add_data_options(p, "sweep")
    g = p.add_argument_group("configurations")
    g.add_argument("--backend", default=None,
                   help="backend to sweep (default: numba-cpu when available, else numpy)")
    g.add_argument("--max-batch", type=_positive_int, default=None, metavar="B",
                   help="largest batch size (default: n)")
    g.add_argument("--memory-budget", type=_bytes_arg, default=None, metavar="SIZE",
                   help="stop at the largest batch whose estimated memory fits, e.g. 512M, "
                        "2G (K/M/G are powers of 1024)")
    _add_train_options(p)
    _add_study_options(p, "sweep")
    p.set_defaults(handler=cmd_sweep)

    p = sub.add_parser(
        "fit", help="one training run: loss per epoch and throughput",
        description="Train once and print one line per epoch (train loss, validation loss, "
                    f"seconds) and a summary. Default data: {DEFAULT_DATA}.")
    _add_data_options(p, "fit")
    g = p.add_argument_group("run")
    g.add_argument("--mode", choices=MODES, default="mbgd", help="default: mbgd")
    g.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                   help="MBGD batch size (default: 32)")
    g.add_argument("--backend", default=None,
                   help="backend (default: numba-cpu when available, else numpy)")
    _add_train_options(p)
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true",
                   help="print FitResult.to_dict() as JSON and nothing else on stdout")
    g.add_argument("--quiet", action="store_true", help="print the summary only")
    p.set_defaults(handler=cmd_fit)

    p = sub.add_parser("backends", help="list backends and why any is unavailable",
                       description="List every backend: available, or why not.")
    p.set_defaults(handler=cmd_backends)
    return parser


# --------------------------------------------------------------------------- helpers


def _note(args, text: str, always: bool = False) -> None:
    """A line on stderr (skipped with --quiet unless ``always``)."""
    if always or not getattr(args, "quiet", False):
        print(f"fastgd: {text}", file=sys.stderr, flush=True)


def _check_backends(names) -> list[str]:
    from . import backends

    status = backends.describe()
    unknown = [b for b in names if b not in status]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; known: {', '.join(status)}")
    return list(names)


def _default_backend() -> str:
    from . import backends

    avail = backends.available()
    return "numba-cpu" if "numba-cpu" in avail else (avail[0] if avail else "numpy")


def _require_available(name: str) -> str:
    from . import backends

    _check_backends([name])
    reason = backends.describe()[name]
    if reason is not None:
        raise ValueError(f"backend {name!r} is unavailable: {reason}")
    return name


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _out_dir(path) -> Path:
    """The output folder, created now (so that an unwritable one fails before the study)."""
    if path:
        out = Path(path)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(DEFAULT_OUT) / stamp
        i = 2
        while out.exists():
            out = Path(DEFAULT_OUT) / f"{stamp}-{i}"
            i += 1
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _fit_kwargs(args) -> dict:
    if args.nesterov and args.momentum == 0:
        raise ValueError("--nesterov needs --momentum > 0 (as in torch.optim.SGD)")
    kw = dict(momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay)
    if args.lr_schedule is not None:
        kw["lr_schedule"] = args.lr_schedule
    return kw


def _markdown_report(name: str, table, png: str | None) -> str:
    m = table.meta
    extras = ", ".join(f"{k} {m[k]}" for k in ("momentum", "nesterov", "weight_decay",
                                                "lr_schedule", "target_loss")
                       if m.get(k) not in (None, 0, 0.0, False))
    lines = [f"# {name}", ""]
    if m.get("command"):
        lines += [f"`{m['command']}`", ""]
    lines += [f"- study: {m.get('study')}; model: {m.get('model')}",
              f"- data: {m.get('data')} (n = {m.get('n')}, d = {m.get('d')}), {m.get('dtype')}",
              f"- epochs {m.get('epochs')}, lr {m.get('lr')}, repeats {m.get('repeats')}, "
              f"seed {m.get('seed')}" + (f", {extras}" if extras else ""),
              f"- machine: {m.get('machine')}; date: {m.get('date')}"]
    if m.get("note"):
        lines.append(f"- note: {m['note']}")
    lines += ["", table.to_markdown(), ""]
    if png:
        lines += [f"![{name}]({png})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


def _studies(args, command: str) -> list[Study]:
    """The studies to run: the built-in pair (compare without --model/--data) or one."""
    spec = parse_model(args.model)  # syntax errors before any data is made
    if command == "compare" and args.model is None and args.data is None:
        studies = list(BUILTIN)
        if args.target is not None:
            raise ValueError("--target needs --data FILE")
    else:
        data = args.data or DEFAULT_DATA
        name = f"{_slug(data)}-{_model_kind(spec)}"
        lr = BUILTIN[0].lr if args.data is None else DEFAULT_LR
        studies = [Study(name if command == "compare" else f"sweep-{name}", data, args.model,
                         lr=lr)]
    out = []
    for st in studies:
        if args.lr:
            st = replace(st, lr=args.lr, fallback_lr=args.lr)
        if command == "compare":
            st = replace(st, modes=args.modes or st.modes,
                         batch_sizes=args.batch_sizes or st.batch_sizes)
        out.append(st)
    return out


def _run_studies(args, command: str, interrupted) -> int:
    from .compare import compare, sweep_batch_size
    from .plot import PLOT_HINT, plot_table

    if getattr(args, "quick", False) and args.repeats is None:
        args.repeats = 1
    studies = _studies(args, command)
    fit_kw = _fit_kwargs(args)
    epochs = args.epochs or DEFAULT_EPOCHS
    repeats = args.repeats or DEFAULT_REPEATS[command]
    if command == "compare":
        from . import backends

        names = (_check_backends(args.backends) if args.backends is not None
                 else backends.available())
    else:
        backend = _require_available(args.backend or _default_backend())
    plot = not args.no_plot
    if plot and not _have_matplotlib():
        _note(args, f"note: no PNG: matplotlib is not installed ({PLOT_HINT})", always=True)
        plot = False
    out = _out_dir(args.out)
    argv_text = shlex.join(["fastgd", *args.argv])
    bar = ProgressBar(enabled=None if not args.quiet else False, repeats=repeats,
                      interrupted=interrupted)
    results = {}
    for i, st in enumerate(studies):
        note, data = None, st.data
        try:
            X, y, loss = load_data(data, args.target, args.seed, args.dtype)
        except ImportError:
            if st.fallback_data is None:
                raise
            note, data = FALLBACK_NOTE, st.fallback_data
            st = replace(st, lr=st.fallback_lr or st.lr)
            _note(args, f"note: {note}", always=True)
            X, y, loss = load_data(data, None, args.seed, args.dtype)
        model = build_model(parse_model(st.model), X, y, loss)
        X, y, X_val, y_val = _split_validation(X, y, args.val_split, args.seed)
        kw = dict(fit_kw)
        if X_val is not None:
            kw.update(X_val=X_val, y_val=y_val)
        label = f"{st.name}: {' x '.join(map(str, X.shape))} {data}, lr {st.lr}"
        _note(args, f"study {i + 1}/{len(studies)} {label}")
        try:
            with np.errstate(all="ignore"):
                if command == "compare":
                    table = compare(model, X, y, modes=st.modes, batch_sizes=st.batch_sizes,
                                    backends=names, epochs=epochs, lr=st.lr,
                                    target_loss=args.target_loss, repeats=repeats,
                                    seed=args.seed, dtype=args.dtype, progress=bar, **kw)
                else:
                    table = sweep_batch_size(model, X, y, backend=backend,
                                             max_batch=args.max_batch,
                                             memory_budget=args.memory_budget, epochs=epochs,
                                             lr=st.lr, target_loss=args.target_loss,
                                             repeats=repeats, seed=args.seed, dtype=args.dtype,
                                             progress=bar, **kw)
        finally:
            bar.close()
        table.meta.update(data=data, command=argv_text, name=st.name)
        if note:
            table.meta["note"] = note
        png = None
        if plot:
            png = f"{st.name}.png"
            plot_table(table, out / png)
        table.to_json(out / f"{st.name}.json")
        table.to_csv(out / f"{st.name}.csv")
        (out / f"{st.name}.md").write_text(_markdown_report(st.name, table, png))
        results[st.name] = table
        if not args.json:
            print(f"## {st.name}: {table.meta.get('model')} on {data} "
                  f"(n={table.meta.get('n')}, d={table.meta.get('d')}, lr {st.lr})")
            if note:
                print(f"note: {note}")
            print()
            print(table.to_markdown())
            print(flush=True)
    if args.json:
        if len(results) == 1:
            text = next(iter(results.values())).to_json()
        else:
            text = json.dumps({"studies": {k: t.to_dict() for k, t in results.items()}},
                              indent=1, default=json_default)
        print(text)
        _note(args, f"results in {out}/")
    else:
        print(f"results: {out}/ ({', '.join(results)}: .md .json .csv"
              f"{' .png' if plot else ''})")
    return 0


def cmd_compare(args, interrupted=lambda: False) -> int:
    """``fastgd compare``: the built-in study or one study of ``--model``/``--data``."""
    return _run_studies(args, "compare", interrupted)


def cmd_sweep(args, interrupted=lambda: False) -> int:
    """``fastgd sweep``: the batch-size study on one backend."""
    return _run_studies(args, "sweep", interrupted)


def cmd_fit(args, interrupted=lambda: False) -> int:
    """``fastgd fit``: one run; a line per epoch and a summary, or ``--json``."""
    from .fit import DivergenceError, prepare

    spec = parse_model(args.model)
    backend = _require_available(args.backend or _default_backend())
    fit_kw = _fit_kwargs(args)
    data = args.data or DEFAULT_DATA
    lr = args.lr or (BUILTIN[0].lr if args.data is None else DEFAULT_LR)
    X, y, loss = load_data(data, args.target, args.seed, args.dtype)
    model = build_model(spec, X, y, loss)
    X, y, X_val, y_val = _split_validation(X, y, args.val_split, args.seed)
    talk = not (args.json or args.quiet)
    epochs = args.epochs or DEFAULT_EPOCHS

    def on_epoch(rec):
        if talk:
            val = "-" if rec.val_loss is None else f"{rec.val_loss:.6g}"
            print(f"epoch {rec.epoch + 1:>{len(str(epochs))}}/{epochs}  train loss "
                  f"{rec.train_loss:.6g}  val loss {val}  {rec.seconds:.4f} s  lr {rec.lr:.4g}",
                  flush=True)

    with np.errstate(all="ignore"):
        prep = prepare(model, X, y, mode=args.mode, batch_size=args.batch_size, epochs=epochs,
                       lr=lr, seed=args.seed, backend=backend, dtype=args.dtype,
                       X_val=X_val, y_val=y_val, **fit_kw)
        if talk:
            kind = "linear" if len(model.sizes) == 2 else f"mlp({model.activation})"
            print(f"fit {kind} {'-'.join(map(str, model.sizes))} {model.loss} on {data} "
                  f"({len(X)} x {X.shape[1]}), {backend} {args.mode} batch "
                  f"{prep.plan.batch_size}, lr {lr}, {args.dtype}; compile "
                  f"{prep.compile_s:.2f} s", flush=True)
        try:
            result = prep.train(on_epoch)
        except DivergenceError as exc:
            if args.json:
                print(json.dumps(exc.result.to_dict(), default=json_default))
            rec = exc.result.history[-1]
            print(f"fastgd: error: training diverged in epoch {rec.epoch + 1}: train loss "
                  f"{rec.train_loss} with lr {rec.lr:g}; lower --lr (or standardise the "
                  "features)", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, default=json_default))
    else:
        last = result.history[-1] if result.history else None
        final = f"; final train loss {last.train_loss:.6g}" if last else ""
        print(f"{result.samples_per_s:,.0f} samples/s, {result.steps:,} steps in "
              f"{result.train_s:.4f} s of training, compile {result.compile_s:.2f} s{final}")
    if result.stopped == "interrupted" or interrupted():
        raise KeyboardInterrupt  # reported by main: one line, status 130
    return 0


def cmd_backends(args, interrupted=lambda: False) -> int:
    """``fastgd backends``: each backend, ``available`` or the reason it is not."""
    from . import backends

    for name, reason in backends.describe().items():
        print(f"{name:12} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


# --------------------------------------------------------------------------- entry point


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text += f": {exc.filename}"
    return text


def main(argv=None) -> int:
    """Entry point of the ``fastgd`` console script and ``python -m fastgd``; returns the
    exit status (0 ok, 1 diverged or out of memory, 2 usage or input error, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["compare", *argv]
    with _Interrupt() as interrupt, warnings.catch_warnings():
        # a Ctrl-C is reported once, here, not as the training loop's RuntimeWarning
        warnings.filterwarnings("ignore", message="training interrupted",
                                category=RuntimeWarning)
        try:
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exc:  # --help, --version, usage errors (already printed)
                return int(exc.code or 0) if not isinstance(exc.code, str) else 2
            args.argv = argv
            interrupt.hard = args.handler in (cmd_compare, cmd_sweep)
            return args.handler(args, interrupt)
        except (KeyboardInterrupt, StudyInterrupted):
            newline = "\n" if sys.stderr.isatty() else ""
            print(f"{newline}fastgd: interrupted", file=sys.stderr)
            return 130
        except MemoryError as exc:
            print(f"fastgd: error: out of memory: {_one_line(exc)}", file=sys.stderr)
            return 1
        except (ValueError, TypeError, OSError, ImportError) as exc:
            print(f"fastgd: error: {_one_line(exc)}", file=sys.stderr)
            return 2
