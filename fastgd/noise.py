"""The gradient noise scale (McCandlish et al. 2018): exact over a data set, on any backend.

``B_simple = tr(Sigma) / |G|^2`` predicts the critical batch size: batches much smaller than
it waste steps (each step's gradient is mostly noise, so a bigger batch buys an almost
proportionally better step), batches much larger waste examples. :func:`noise_scale`
computes it exactly at given parameters; ``fit(..., track_noise=True)`` estimates it online
from each epoch's batches (``kernels/noise.py`` has the definitions and estimators).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import backends
from .kernels.reference import flatten
from .plan import Plan
from .validate import check_dtype, check_features, check_params, check_targets


@dataclass(frozen=True)
class NoiseScale:
    """The gradient noise of a data set at some parameters.

    ``grad_norm_sq`` is ``|G|^2`` (``G`` the full-batch gradient), ``trace_cov`` is
    ``tr(Sigma) = mean_i |g_i - G|^2`` over the per-example gradients ``g_i``, ``b_simple``
    their ratio (inf when ``|G|^2`` is 0 or, online, estimated at or below 0; NaN when both
    are 0), ``n`` the examples it is over. ``source`` says how it
    was obtained: ``"exact"`` (every example at the same parameters) or ``"online"`` (the
    per-step estimates of an epoch's batches, numerators and denominators averaged over the
    steps, then divided).
    """

    b_simple: float
    trace_cov: float
    grad_norm_sq: float
    n: int
    source: str = "exact"

    @classmethod
    def from_sums(cls, trace: float, grad_sq: float, n: int, source: str) -> NoiseScale:
        """The noise scale of ``trace``/``grad_sq`` (sums or means: only the ratio and the
        means, given the same count, are kept)."""
        b = trace / grad_sq if grad_sq > 0 else (np.inf if trace > 0 else np.nan)
        return cls(float(b), float(trace), float(grad_sq), int(n), source)

    def to_dict(self) -> dict:
        """Plain-Python fields."""
        return asdict(self)


def exact_from_engine(engine, X, Y) -> NoiseScale:
    """The exact noise scale over ``(X, Y)`` at a prepared backend's current parameters."""
    mean_sq, grad_sq = engine.exact_noise(X, Y)
    # tr(Sigma) = S - |G|^2 is a difference of two sums of squares: clip rounding below 0
    return NoiseScale.from_sums(max(mean_sq - grad_sq, 0.0), grad_sq, len(X), "exact")


def noise_scale(model, params, X, y, backend: str = "numba-cpu",
                dtype: str | None = None) -> NoiseScale:
    """The exact gradient noise scale of ``(X, y)`` at ``params`` (``model``'s layout):
    ``g_i`` is the gradient of example ``i``'s own loss (a batch of one: ``MSELoss`` and
    ``BCEWithLogitsLoss`` average the example's outputs), ``G`` their mean, ``tr(Sigma) =
    mean |g_i - G|^2`` and ``B_simple = tr(Sigma) / |G|^2``; weight decay is not part of it.

    Computed on ``backend`` in one pass from per-example gradient norms (for a dense layer
    ``|a_i|^2 |delta_i|^2``, plus ``|delta_i|^2`` for its bias), in ``dtype`` (default: the
    parameters' dtype): the squared norms are summed in float64, the mean gradient within
    each row group in ``dtype`` and across groups in float64 (in float32, ``|G|^2`` near a
    minimum, where ``|G|`` is far below the ``|g_i|``, is the least accurate part).
    """
    if dtype is None:
        given = np.asarray(params[0]).dtype if len(params) else None
        dtype = given if given in (np.float32, np.float64) else np.float64
    dt = check_dtype(dtype)
    params = check_params(model, params, dt)
    Xc = check_features(X, model.n_features, dt, "X")
    Yc = check_targets(y, model, len(Xc), dt, "y")
    plan = Plan.for_model(model, dt, "bgd", len(Xc), shuffle=False)
    engine = backends.create(backend)
    engine.prepare(plan, Xc, Yc, flatten(params))
    return exact_from_engine(engine, Xc, Yc)
