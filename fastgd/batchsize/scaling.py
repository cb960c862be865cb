"""McCandlish et al.'s steps-examples trade-off, fitted to measured steps to target.

``S(B) = S_min (1 + B_crit / B)`` (equivalently ``(S/S_min - 1)(E/E_min - 1) = 1`` with
``E = B S`` and ``B_crit = E_min / S_min``): ``S_min`` is the fewest steps any batch size
can take, ``E_min`` the fewest examples. It is linear in ``1/B`` (``S = S_min + E_min / B``);
the fit minimises squared errors of ``log S`` (each batch size weighs the same, whether it
took ten steps or ten thousand), with ``S_min, E_min > 0``.

Regimes (Shallue et al. 2019): well below ``B_crit`` doubling the batch nearly halves the
steps (perfect scaling), well above it more examples per step buy almost no fewer steps
(maximal data parallelism), in between diminishing returns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: Below ``B_crit / REGIME_FACTOR``: perfect scaling; above ``B_crit * REGIME_FACTOR``: maximal
#: data parallelism (S within 1/REGIME_FACTOR of S_min); in between: diminishing returns.
REGIME_FACTOR = 4.0


@dataclass(frozen=True)
class CriticalBatch:
    """The fitted trade-off. ``r2``: coefficient of determination of ``log S`` against the
    fit; ``points``: batch sizes it was fitted on. ``b_simple``: the exact noise scale at
    the target (the median over the batch sizes that reached it), the prediction of
    ``b_crit`` from the gradient's statistics alone."""

    s_min: float | None
    e_min: float | None
    b_crit: float | None
    r2: float | None
    points: int
    b_simple: float | None = None
    reason: str | None = None

    def steps(self, batch_size) -> float | None:
        """Fitted steps to target at ``batch_size``."""
        if self.s_min is None:
            return None
        return self.s_min + self.e_min / float(batch_size)

    def regime(self, batch_size) -> str | None:
        """``"perfect scaling"``, ``"diminishing returns"`` or ``"maximal data
        parallelism"`` of ``batch_size`` against the fitted ``b_crit``."""
        if self.b_crit is None:
            return None
        if batch_size <= self.b_crit / REGIME_FACTOR:
            return "perfect scaling"
        if batch_size >= self.b_crit * REGIME_FACTOR:
            return "maximal data parallelism"
        return "diminishing returns"

    def to_dict(self) -> dict:
        """Plain-Python fields."""
        return asdict(self)


def _log_residuals(params, inv_b, log_s):
    s_min, e_min = np.exp(params)
    return np.log(s_min + e_min * inv_b) - log_s


def fit_critical_batch(batch_sizes, steps, b_simple=None) -> CriticalBatch:
    """Fit ``S(B) = S_min + E_min / B`` to measured ``steps`` (at least 3 batch sizes with
    at least one step each; fewer give a result with ``reason`` and no fit)."""
    from scipy.optimize import least_squares

    pts = [(float(b), float(s)) for b, s in zip(batch_sizes, steps, strict=True)
           if s is not None and s >= 1]
    if len(pts) < 3:
        return CriticalBatch(None, None, None, None, len(pts), b_simple,
                             f"{len(pts)} batch size(s) reached the target; the fit needs 3")
    b, s = np.array(pts).T
    inv_b, log_s = 1.0 / b, np.log(s)
    # start from the least-squares line S = S_min + E_min / B, kept positive
    slope, intercept = np.polyfit(inv_b, s, 1)
    start = np.log([max(intercept, 0.5 * s.min()), max(slope, s.max() * b.min() * 0.1)])
    fit = least_squares(_log_residuals, start, args=(inv_b, log_s), method="lm")
    s_min, e_min = (float(v) for v in np.exp(fit.x))
    total = float(((log_s - log_s.mean()) ** 2).sum())
    r2 = 1.0 - float((fit.fun ** 2).sum()) / total if total > 0 else 1.0
    return CriticalBatch(s_min, e_min, e_min / s_min, r2, len(pts), b_simple)


def flat_step_time_limit(batch_sizes, step_s, tolerance: float = 1.3) -> int | None:
    """The largest batch size up to which the measured step time stays within
    ``tolerance`` of the smallest batch size's (bigger batches are then almost free in
    time per step), or None without two measurements."""
    pts = sorted((b, t) for b, t in zip(batch_sizes, step_s, strict=True) if t)
    if len(pts) < 2:
        return None
    base, limit = pts[0][1], pts[0][0]
    for b, t in pts[1:]:
        if t > tolerance * base:
            break
        limit = b
    return limit

