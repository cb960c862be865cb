"""Input checks, done once before training starts (never inside the epoch loop).

Conversions (documented in the README): integer and boolean inputs are converted to the
compute dtype; float16 inputs are converted up to the compute dtype (float16 is refused as
the compute dtype itself); non-contiguous or Fortran-ordered arrays are copied once to
C order. The caller's arrays are never modified.
"""

from __future__ import annotations

import numbers

import numpy as np

COMPUTE_DTYPES = ("float32", "float64")
MODES = ("bgd", "sgd", "mbgd")


def check_dtype(dtype) -> np.dtype:
    """The compute dtype: float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be 'float32' or 'float64'; got {dtype!r}") from exc
    if dt.name not in COMPUTE_DTYPES:
        hint = " (float16 is not supported for training: use float32)" if dt == np.float16 else ""
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dt.name!r}{hint}")
    return dt


def _as_numeric(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (float, int or bool); got dtype {arr.dtype}"
        )
    return arr


#: Arrays of at least this many elements are checked (and converted) by the parallel pass
#: of ``kernels/cpu/checks.py``; smaller ones by NumPy (a parallel region costs more).
PARALLEL_ELEMENTS = 1 << 18
_NEVER = 1 << 62  # parallel_from for checks that must stay serial


def _parallel_kernels():
    """``kernels/cpu/checks.py``, or None where numba is not installed (the NumPy path)."""
    try:
        from .kernels.cpu import checks
    except ImportError:
        return None
    return checks


def _compiled_dtype(dt: np.dtype) -> bool:
    """Whether the parallel pass compiles for ``dt``: native-order float32/float64 or
    integers (Numba refuses float16, long double and byte-swapped arrays)."""
    return dt.isnative and (dt in (np.float32, np.float64) or dt.kind in "iu")


def _as_2d(a: np.ndarray) -> np.ndarray | None:
    """A 2-D view of a 1-D or 2-D array (None for other ranks)."""
    return a.reshape(-1, 1) if a.ndim == 1 and a.flags.c_contiguous else (
        a if a.ndim == 2 else None)


def all_finite(a: np.ndarray, parallel_from: int = PARALLEL_ELEMENTS) -> bool:
    """True when ``a`` holds no NaN/inf: a large array (``parallel_from`` elements or
    more) in one parallel compiled pass, a small one by one fast reduction (exact check
    only on suspicion)."""
    if a.dtype.kind != "f":
        return True
    wide = _as_2d(a)
    if (a.size >= parallel_from and wide is not None and wide.flags.c_contiguous
            and a.dtype in (np.float32, np.float64) and a.dtype.isnative
            and _parallel_kernels() is not None):
        return _parallel_kernels().all_finite_2d(wide)
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(a, axis=None)):
            return True
    # the sum overflowed or a NaN/inf is present: decide exactly, chunk by chunk
    flat = a.reshape(-1)
    step = 1 << 20
    return all(np.isfinite(flat[i : i + step]).all() for i in range(0, flat.size, step))


def check_features(X, n_features: int, dtype: np.dtype, name: str = "X",
                   serial: bool = False) -> np.ndarray:
    """``X`` as a finite C-contiguous (n, n_features) array of ``dtype``. ``serial``: NumPy
    only, never the parallel compiled pass (a thread that checks streamed chunks while the
    main thread trains must not start a second parallel region)."""
    parallel_from = _NEVER if serial else PARALLEL_ELEMENTS
    arr = _as_numeric(X, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples")
    if arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features but the model expects n_features={n_features}"
        )
    arr, finite = _converted(arr, dtype, parallel_from)
    if finite is False or (finite is None and not all_finite(arr, parallel_from)):
        raise ValueError(f"{name} contains NaN or inf; clean or impute the data first")
    return arr


def _converted(arr: np.ndarray, dtype: np.dtype, parallel_from: int = PARALLEL_ELEMENTS
               ) -> tuple[np.ndarray, bool | None]:
    """``arr`` as a C-contiguous array of ``dtype`` (itself when it is one) and whether it
    is finite: a large copy is made and checked in the same parallel pass
    (``kernels/cpu/checks.py``); None when not checked yet."""
    if arr.dtype == dtype and arr.flags.c_contiguous:
        return arr, None
    checks = _parallel_kernels()
    if (arr.size < parallel_from or arr.ndim != 2 or not _compiled_dtype(arr.dtype)
            or checks is None):
        return np.ascontiguousarray(arr, dtype=dtype), None
    out = np.empty(arr.shape, dtype)
    return out, checks.convert_2d(arr, out)


def warm_up_checks(X, y, dtype) -> None:
    """Load (or compile) the parallel checks that ``X`` and ``y`` take on their way to
    ``dtype``, on two rows of each, so a measured run that follows compiles nothing
    (``fastgd.measure``'s warm-up fits on too few rows to take them)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return  # fit itself says what is wrong with it
    if dt.name not in COMPUTE_DTYPES:
        return
    if _parallel_kernels() is None:
        return
    for a in (np.asarray(X), np.asarray(y)):
        if a.size < PARALLEL_ELEMENTS or not _compiled_dtype(a.dtype) or a.ndim not in (1, 2):
            continue
        small = a[:2]
        if a.ndim == 2 and a.flags.f_contiguous and not a.flags.c_contiguous:
            small = np.asfortranarray(small)  # the same compiled signature as ``a``
        if a.ndim == 2:
            small, _ = _converted(small, dt, parallel_from=0)
        all_finite(np.ascontiguousarray(small), parallel_from=0)


def check_targets(y, model, n: int, dtype: np.dtype, name: str = "y",
                  serial: bool = False) -> np.ndarray:
    """Targets in the kernels' format: (n, n_outputs) floats, or (n, 1) class ids for
    softmax. ``serial``: as :func:`check_features`."""
    parallel_from = _NEVER if serial else PARALLEL_ELEMENTS
    arr = _as_numeric(y, name)
    k = model.n_outputs
    if arr.shape[:1] != (n,):
        raise ValueError(f"{name} has {arr.shape[0] if arr.ndim else 0} rows but X has {n}")
    if model.loss == "softmax":
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise ValueError(
                f"{name} must be 1-D class ids for loss='softmax'; got shape {arr.shape}"
            )
        if not all_finite(arr, parallel_from):
            raise ValueError(f"{name} must hold integer class ids; found NaN or inf")
        if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must hold integer class ids for loss='softmax'")
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= k:
            raise ValueError(
                f"{name} has class ids in [{int(lo)}, {int(hi)}] but the model has n_outputs={k}"
                f" classes (ids must be in [0, {k - 1}])"
            )
        return np.ascontiguousarray(arr.reshape(n, 1), dtype=dtype)
    if arr.ndim == 1 and k == 1:
        arr = arr.reshape(n, 1)
    if arr.ndim != 2 or arr.shape[1] != k:
        raise ValueError(
            f"{name} must have shape ({n},) or ({n}, {k}) for n_outputs={k}; got {arr.shape}"
        )
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not all_finite(arr, parallel_from):
        raise ValueError(f"{name} contains NaN or inf")
    if model.loss == "logistic" and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{name} must be in [0, 1] for loss='logistic' (binary targets)")
    return arr


def with_sample_weight(Y: np.ndarray, sample_weight, dtype: np.dtype,
                       name: str = "sample_weight") -> np.ndarray:
    """Targets in the kernels' layout with the rows' weights as one more last column (what
    the CPU kernels and the reference read as sample weights): ``sample_weight`` 1-D, one
    finite value >= 0 per row, not all 0. A weighted batch loss is the mean of ``w_i *
    loss_i``, PyTorch's ``(criterion(reduction="none") * w).mean()``."""
    w = _as_numeric(sample_weight, name)
    if w.ndim != 1 or len(w) != len(Y):
        raise ValueError(f"{name} must be 1-D with one weight per row ({len(Y)}); got shape "
                         f"{w.shape}")
    w = np.asarray(w, dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name} must be finite and >= 0")
    if not w.any():
        raise ValueError(f"{name} is all zeros: no row would count")
    return np.ascontiguousarray(np.column_stack([Y, w.astype(dtype)]), dtype=dtype)


def check_params(model, params, dtype: np.dtype) -> list[np.ndarray]:
    """Parameters ``[W1, b1, ...]`` with the model's shapes, finite, converted to ``dtype``."""
    expected = []
    for n_in, n_out in zip(model.sizes[:-1], model.sizes[1:], strict=False):
        expected += [(n_in, n_out), (n_out,)]
    if not isinstance(params, (list, tuple)) or len(params) != len(expected):
        raise ValueError(
            f"params must be a list of {len(expected)} arrays [W1, b1, ...] with shapes "
            f"{expected}"
        )
    out = []
    for i, (p, shape) in enumerate(zip(params, expected, strict=False)):
        arr = _as_numeric(p, f"params[{i}]")
        if arr.shape != shape:
            raise ValueError(f"params[{i}] has shape {arr.shape}; expected {shape}")
        arr = np.array(arr, dtype=dtype)  # always a copy: training never touches the caller's
        if not all_finite(arr):
            raise ValueError(f"params[{i}] contains NaN or inf")
        out.append(arr)
    return out


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """An integer in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {bound}; got {value}")
    return int(value)


def check_float(name: str, value, lo: float, lo_inclusive: bool) -> float:
    """A finite real number above ``lo``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise TypeError(f"{name} must be a finite number; got {value!r}")
    if value < lo or (value == lo and not lo_inclusive):
        raise ValueError(f"{name} must be {'>=' if lo_inclusive else '>'} {lo}; got {value}")
    return float(value)


#: The sample orders ``shuffle`` accepts: ``True``/``"rows"`` a new permutation of all rows
#: every epoch, ``"blocks"`` a new permutation of blocks of contiguous rows (and of the rows
#: in each) every epoch, ``"once"`` one permutation (of a private copy) before the first
#: epoch, ``False`` the rows in order.
SHUFFLES = (True, False, "rows", "blocks", "once")


def check_shuffle(shuffle) -> bool | str:
    """``shuffle`` as ``True`` (``"rows"`` too), ``False``, ``"blocks"`` or ``"once"``;
    anything else is a ``ValueError`` listing what is accepted."""
    if isinstance(shuffle, (bool, np.bool_)):
        return bool(shuffle)
    if isinstance(shuffle, str) and shuffle in ("rows", "blocks", "once"):
        return True if shuffle == "rows" else shuffle
    raise ValueError("shuffle must be True or 'rows' (a new permutation of all rows each "
                     "epoch), 'blocks' (a new permutation of blocks of contiguous rows and "
                     "of the rows inside them), 'once' (one permutation before the first "
                     f"epoch) or False (in order); got {shuffle!r}")


def check_mode(mode: str, batch_size, n: int) -> int:
    """The batch size a mode implies: bgd -> n, sgd -> 1, mbgd -> batch_size (default
    ``min(32, n)``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    if mode == "bgd":
        if batch_size is not None and batch_size != n:
            raise ValueError(f"mode='bgd' uses all {n} samples per step; drop batch_size")
        return n
    if mode == "sgd":
        if batch_size is not None and batch_size != 1:
            raise ValueError("mode='sgd' uses batch_size=1; use mode='mbgd' for larger batches")
        return 1
    return check_int("batch_size", min(32, n) if batch_size is None else batch_size, 1, n)
