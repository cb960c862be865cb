"""The analytic memory model: the predicted peak host bytes of a CPU ``fastgd.fit``.

:func:`estimate_memory` adds up what the backend states it allocates for the plan
(``Backend.workspace``: every buffer, and each phase's temporaries), what ``fit`` itself
holds (:func:`fit_arrays`: parameter copies while preparing and returning, the per-epoch
learning-rate array) and the data ``fit`` converts. Held arrays count in every phase; the
predicted peak is the phase with the most bytes (:data:`PHASES`). To update the model
when a backend's allocations change, edit that backend's ``workspace``.

Agreement, measured on this project's 2-core Linux machine (Python 3.11, NumPy 2.4) and
enforced in ``tests/test_measure.py``: the tracemalloc peak of a NumPy or Numba CPU run
(after a warm-up that compiles) is within ``TOLERANCE * total + SLACK_BYTES`` (2 % of the
estimate plus 128 KiB) of the estimate (:func:`within_tolerance`). Over 240 runs of two
epochs (linear mse, logistic and softmax models and MLPs with relu/tanh/sigmoid;
float32/float64; sgd/bgd/mbgd at batch sizes 32 to 4096; shuffled or not; SGD, momentum,
Nesterov with weight decay, Adam, amsgrad, AdamW, centered RMSprop with momentum, Adagrad;
validation sets; data copied or not; 5 000 to 200 000 rows; estimates from 5 KB to 650 MB) the
measured peak was between 11 KB below and 9 KB above the estimate (``numpy`` 11 KB below
to 8 KB above, ``numba-cpu`` 7 to 9 KB above): at most 0.06 % off for the 86 totals above
10 MB, 0.6 % for the 71 of 1-10 MB; for the smallest (a few KB: ``numba-cpu`` on data it
does not copy) the fixed slack is what matters. No run used more than 7 % of the
tolerance. The slack covers Python objects (history, results, small arrays) and
allocator details. Where the model takes a bound it errs high: the held arrays also
count in ``prepare``, before some exist; the optimizer's temporaries ignore NumPy's
in-place reuse; the ``rates`` phase assumes more than one epoch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import backends
from ..backends.gpu_launch import peak_bytes
from ..plan import Plan

__all__ = ["PHASES", "SLACK_BYTES", "TOLERANCE", "MemoryEstimate", "estimate_memory",
           "fit_arrays", "largest_batch_that_fits", "within_tolerance"]

#: Relative tolerance between the traced peak of a CPU ``fit`` and the estimate's total.
TOLERANCE = 0.02
#: Fixed slack added to the tolerance (Python objects, small arrays, allocator details).
SLACK_BYTES = 128 * 1024

#: The phases of a run, in order: ``order`` (``shuffle="once"`` permuting the data),
#: ``prepare`` and ``warmup`` (of the backend), ``rates``
#: (an epoch's learning rates, computed while the previous epoch's are held), ``shuffle``
#: (the epoch's order), ``step`` (a step's gradient), ``update`` (applying it), ``loss``
#: (the loss passes after each epoch) and ``end`` (the parameters returned).
PHASES = ("order", "prepare", "warmup", "rates", "shuffle", "step", "update", "loss", "end")

# Which MemoryEstimate field an array counts in, by its name (the rest is workspace).
_FIELDS = {"theta": "params", "opt_state": "optimizer_state", "grads": "grads",
           "partial": "grads", "act": "activations", "activations": "activations"}


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak host bytes of a ``fit`` (CPU backends), split by what holds them at
    the peak.

    ``params``: the backend's flat parameters (``theta``); ``grads``: gradient buffers (the
    per-group partial gradients, or a step's gradient arrays and update temporaries);
    ``optimizer_state``: the ``(n_state, n_params)`` state (none for SGD without momentum);
    ``activations``: activation buffers (``numba-cpu``: one tile per row group; ``numpy``:
    the batch's, or the whole data set's in a loss pass); ``data``: X and Y (and the
    validation set) converted to the compute dtype when ``fit`` copies them, else 0;
    ``workspace``: everything else alive at the peak (the epoch's order, parameter copies,
    learning rates, small buffers). ``total`` is their sum, the predicted peak;
    ``peak_phase`` is the phase of :data:`PHASES` where it happens; ``arrays`` lists the
    bytes alive then by name (``"<phase>.<name>"`` for a phase's temporaries,
    ``"<phase>.fit.<name>"`` for ``fit``'s own; the data not included).

    For a GPU backend the host figures are ``fit``'s arrays and the few host arrays the
    backend makes (its parameters, state and buffers live on the device), and
    ``device_total`` is the predicted peak of its own device bytes (what its ``memory()``
    reports), ``device_arrays`` those bytes by buffer (``fastgd.backends.gpu_launch``); 0
    and empty for CPU backends.
    """

    params: int
    grads: int
    optimizer_state: int
    activations: int
    data: int
    workspace: int
    total: int = field(init=False)
    backend: str = ""
    peak_phase: str = ""
    arrays: dict = field(default_factory=dict)
    device_total: int = 0
    device_arrays: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "total", self.params + self.grads + self.optimizer_state
                           + self.activations + self.data + self.workspace)

    def to_dict(self) -> dict:
        """Plain-Python dict of every field."""
        return asdict(self)


def fit_arrays(plan: Plan, n: int) -> dict[str, int]:
    """The arrays ``fastgd.fit`` itself holds beside the backend's, named like
    ``Backend.workspace``'s (``"<phase>.fit.<name>"``): while the backend prepares, the
    initial parameters and their flat copy (``p`` bytes each), while it warms up the
    initial ones; the epoch's learning rates (8 bytes a step) from the first epoch on, with,
    while the next epoch's are computed, the previous ones and three bool checks (more than
    one epoch); at the end the backend's ``params()`` copy and ``result.params``. With
    ``shuffle="once"``: the permuted copy of the training data, held (``data_copy``), and
    while it is made the permutation (``order.fit.permutation``)."""
    p = plan.n_params * plan.dtype.itemsize
    steps = plan.steps_per_epoch(n)
    lrs = 8 * steps
    arrays = {"prepare.fit.init": p, "prepare.fit.theta0": p, "warmup.fit.init": p,
              "rates.fit.previous_lrs": lrs, "rates.fit.checks": 3 * steps,
              "end.fit.params": 2 * p}
    arrays.update({f"{phase}.fit.lrs": lrs for phase in PHASES[PHASES.index("rates"):]})
    if plan.shuffle_once:
        from ..kernels.permutation import order_peak

        k_y = 1 if plan.loss == "softmax" else plan.sizes[-1]
        copy = n * (plan.sizes[0] + k_y) * plan.dtype.itemsize
        arrays["data_copy"] = copy
        # computing the permutation (before the copy exists), then the int64 order beside
        # the copy being made: the phase's peak is the larger, with the copy held
        arrays["order.fit.permutation"] = max(order_peak(n) - copy, 8 * n)
    return arrays


def _backend_class(backend) -> type:
    """The class of ``backend`` (a name, an instance or a class), a backend that states
    its workspace (and, on a device, its device buffers); ``ValueError`` for one that does
    not, or an unknown or unavailable name."""
    if isinstance(backend, str):
        try:
            backend = backends.create(backend)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"no memory model for backend {backend!r}: {exc}") from exc
    cls = backend if isinstance(backend, type) else type(backend)
    if not issubclass(cls, backends.BaseBackend):
        raise ValueError(f"no memory model for {cls.__name__}: not a fastgd backend (one "
                         "subclasses fastgd.backends.BaseBackend and states its workspace())")
    if cls.on_device and not hasattr(cls, "device_buffers"):
        raise ValueError(f"no memory model for backend {cls.name!r}: it runs on a device "
                         "and does not state its device_buffers()")
    return cls


def _copy_flags(copies_data) -> tuple[bool, bool, bool, bool]:
    if isinstance(copies_data, (bool, np.bool_)):
        return (bool(copies_data),) * 4
    flags = tuple(bool(c) for c in copies_data)
    if len(flags) == 2:
        return flags + flags
    if len(flags) == 4:
        return flags
    raise ValueError("copies_data must be a bool or 2 or 4 bools (X, Y[, X_val, Y_val]); "
                     f"got {copies_data!r}")


def _phase_of(name: str) -> str | None:
    """The phase of an array name, None for one held through the run."""
    phase, dot, _ = name.partition(".")
    if not dot:
        return None
    if phase not in PHASES:
        raise ValueError(f"array {name!r}: unknown phase {phase!r} (phases: {PHASES})")
    return phase


def estimate_memory(plan: Plan, n_samples: int, n_val: int = 0, backend="numba-cpu",
                    copies_data=False) -> MemoryEstimate:
    """Predicted peak host bytes of ``fastgd.fit`` with ``plan`` on ``n_samples`` rows
    (``n_val`` validation rows) on ``backend`` (a name, an engine, or a backend class).

    ``copies_data``: whether ``fit`` converts/copies the data (dtype differs from the
    compute dtype, or not C-contiguous): a bool for all arrays, or flags for
    ``(X, Y)`` / ``(X, Y, X_val, Y_val)``. The caller's own arrays are never counted.
    """
    cls = _backend_class(backend)
    n, n_val = int(n_samples), int(n_val)
    if n < 1 or n_val < 0:
        raise ValueError(f"n_samples must be >= 1 and n_val >= 0; got {n_samples}, {n_val}")
    isz = plan.dtype.itemsize
    d, k_y = plan.sizes[0], (1 if plan.loss == "softmax" else plan.sizes[-1])
    cx, cy, cxv, cyv = _copy_flags(copies_data)
    train = isz * (cx * n * d + cy * n * k_y)
    # shuffle="once" replaces a converted copy of the training data by its permuted copy
    # (fit_arrays' data_copy): the converted one lives only while that copy is made
    data = isz * (cxv * n_val * d + cyv * n_val * k_y) + (0 if plan.shuffle_once else train)

    held, by_phase = {}, {phase: {} for phase in PHASES}
    for name, nbytes in {**cls.workspace(plan, n, n_val), **fit_arrays(plan, n)}.items():
        phase = _phase_of(name)
        (held if phase is None else by_phase[phase])[name] = int(nbytes)
    if plan.shuffle_once and train:
        by_phase["order"]["order.fit.converted"] = train
    peak = max(PHASES, key=lambda phase: sum(by_phase[phase].values()))
    live = {**held, **by_phase[peak]}
    parts = dict.fromkeys(("params", "grads", "optimizer_state", "activations",
                           "workspace"), 0)
    for name, nbytes in live.items():
        parts[_FIELDS.get(name.rpartition(".")[2], "workspace")] += nbytes
    device, device_total = {}, 0
    if cls.on_device:
        device = dict(cls.device_buffers(plan, n, n_val))
        device_total = peak_bytes(device)
    return MemoryEstimate(data=data, backend=cls.name, peak_phase=peak, arrays=live,
                          device_total=device_total, device_arrays=device, **parts)


def largest_batch_that_fits(plan: Plan, n_samples: int, budget_bytes: int,
                            backend="numba-cpu", n_val: int = 0, copies_data=False) -> int:
    """The largest batch size in ``[1, n_samples]`` whose estimated total fits in
    ``budget_bytes``, or 0 when none does.

    The estimate is smallest at some batch size: below it the per-step learning rates
    grow, above it the batch-sized arrays (``numba-cpu`` has none, so its smallest is at
    ``n_samples``). That batch size is searched over the powers of two and
    ``n_samples``; above it, a bisection finds the last one that fits, so the answer
    never decreases as the budget grows and its estimate always fits. (The ``numpy``
    estimate can dip by a few hundred KiB where a temporary grows past NumPy's in-place
    reuse threshold, so near such a dip a slightly larger batch may also fit.)
    ``n_val``/``copies_data`` as in :func:`estimate_memory`."""
    cls = _backend_class(backend)
    n = int(n_samples)

    def total(b: int) -> int:
        return estimate_memory(dataclasses.replace(plan, batch_size=b), n, n_val, cls,
                               copies_data).total

    lo = min(sorted({min(1 << i, n) for i in range(n.bit_length() + 1)}), key=total)
    if total(lo) > budget_bytes:
        return 0
    hi = n                            # total(lo) fits; find the last b that fits
    if total(hi) <= budget_bytes:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if total(mid) <= budget_bytes else (lo, mid)
    return lo


def within_tolerance(measured: int, estimate: MemoryEstimate | int,
                     rel: float = TOLERANCE, slack: int = SLACK_BYTES) -> bool:
    """True when ``|measured - estimate| <= rel * estimate + slack`` (the stated agreement of
    a traced CPU peak with :func:`estimate_memory`)."""
    total = getattr(estimate, "total", estimate)
    return abs(int(measured) - int(total)) <= rel * total + slack
