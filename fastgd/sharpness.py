"""Sharpness: the largest-magnitude eigenvalue of the training-loss Hessian.

The Hessian is never formed. :func:`hessian_vector_product` computes ``H @ v`` exactly with
Pearlmutter's R-operator (forward-mode differentiation of the backward pass,
``R{f} = d/dr f(theta + r v) at r = 0``), in float64, at about the cost of two gradients;
:func:`sharpness` runs power iteration on it. Gradient descent with learning rate ``lr`` on
a quadratic is stable only while the sharpness stays below ``2 / lr``.

The loss is the one :func:`fastgd.fit` trains: the mean over the data (``MSELoss`` and
``BCEWithLogitsLoss`` over every element of the logits, ``CrossEntropyLoss`` over the rows),
as a function of the flat parameter vector in the layout of ``reference.flatten(params)``
(``W1, b1, W2, b2, ...``, each ``W`` shaped ``(n_in, n_out)`` and row-major).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .kernels import reference
from .models import Model
from .validate import (
    all_finite,
    check_features,
    check_float,
    check_int,
    check_params,
    check_targets,
)

__all__ = ["Sharpness", "hessian_vector_product", "sharpness"]

_F64 = np.dtype(np.float64)
# Row chunks hold at most this many float64 elements per (rows x total width) block (32 MiB).
_CHUNK_ELEMENTS = 1 << 22
# The per-row state of the plain forward/backward pass (it does not depend on v) is kept
# between products when it fits in this many bytes; otherwise it is recomputed per chunk.
_CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class Sharpness:
    """Result of :func:`sharpness`.

    Attributes:
        value: the estimate of the Hessian eigenvalue of largest magnitude, with its sign (the
            Rayleigh quotient ``q.Hq`` of the last unit iterate ``q``).
        iterations: Hessian-vector products computed.
        converged: whether the stopping rule (see :func:`sharpness`) was met within
            ``max_iter``; when False, ``value`` is the last estimate and a ``RuntimeWarning``
            was issued.
        rows: training rows the loss was averaged over (``max_rows`` when subsampled, else n).

    ``float(result)`` is ``result.value``.
    """

    value: float
    iterations: int
    converged: bool
    rows: int

    def __float__(self) -> float:
        return float(self.value)


# ----------------------------------------------------------------------------- validation
def _check_model(model) -> Model:
    if not isinstance(model, Model):
        raise TypeError(f"model must be a fastgd Model (fg.Linear, fg.MLP, fg.Model); got "
                        f"{type(model).__name__}")
    return model


def _input_dtype(X) -> np.dtype:
    """Keep float32/float64 features as they are (converted chunk by chunk), else float64."""
    dt = getattr(X, "dtype", None)
    return np.dtype(dt) if dt is not None and np.dtype(dt) in (np.float32, np.float64) else _F64


def _check_vector(v, n_params: int) -> np.ndarray:
    arr = np.asarray(v)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"v must hold real numbers; got dtype {arr.dtype}")
    if arr.shape != (n_params,):
        raise ValueError(f"v must be a flat vector of length n_params={n_params} (the layout of "
                         f"reference.flatten(params)); got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=_F64)
    if not all_finite(arr):
        raise ValueError("v contains NaN or inf")
    return arr


def _check_problem(model, params, X, y, y_name="y"):
    model = _check_model(model)
    Xc = check_features(X, model.n_features, _input_dtype(X), "X")
    Yc = check_targets(y, model, len(Xc), _F64, y_name)
    return model, check_params(model, params, _F64), Xc, Yc


# ----------------------------------------------------------------------------- the operator
def _activation_second(a: np.ndarray, activation: str):
    """``f''(z)`` written in terms of the output ``a = f(z)``; None where it is 0 (relu)."""
    if activation == "relu":
        return None
    if activation == "tanh":
        return -2.0 * a * (1.0 - a * a)
    if activation == "sigmoid":
        return a * (1.0 - a) * (1.0 - 2.0 * a)
    raise ValueError(f"unknown activation {activation!r}")


@dataclass
class _Primal:
    """The plain forward/backward pass of one row chunk: everything the R-pass reuses.

    With layers numbered ``l = 1..L`` (``z_l = a_{l-1} W_l + b_l``, ``a_0 = X``):
    ``acts[l] = a_l`` for ``l = 0..L-1``; ``dz[l] = dLoss/dz_l`` for ``l = 1..L`` (``dz[0]``
    unused); for hidden layers ``h = 1..L-1``, ``fprime[h] = f'(z_h)`` and
    ``curv[h] = da_h * f''(z_h)`` (None for relu), where ``da_h = dz_{h+1} W_{h+1}^T``;
    ``loss_curv`` is what the Hessian of the loss w.r.t. the logits needs (see ``_loss_hvp``).
    """

    acts: list
    dz: list
    fprime: list
    curv: list
    loss_curv: object


class _HessianOperator:
    """``v -> H v`` for one (model, params, X, Y), in float64, over row chunks.

    The loss is the mean over all ``n`` rows, a sum of per-row terms; each chunk adds its
    share with the normalization of the whole data set (``n`` rows, not the chunk's).
    """

    def __init__(self, model: Model, params, X: np.ndarray, Y: np.ndarray, chunk_rows=None):
        self.sizes = model.sizes
        self.activation = model.activation
        self.loss = model.loss
        self.n_layers = len(self.sizes) - 1
        self.params = params
        self.X, self.Y = X, Y
        self.n = len(X)
        self.n_params = model.n_params
        if chunk_rows is None:
            width = sum(self.sizes) + 2 * sum(self.sizes[1:])
            chunk_rows = max(1, _CHUNK_ELEMENTS // width)
        self.chunks = [(s, min(s + chunk_rows, self.n)) for s in range(0, self.n, chunk_rows)]
        hidden = sum(self.sizes[1:-1])
        state = self.n * (self.sizes[0] + 3 * hidden + 2 * sum(self.sizes[1:])) * 8
        self._cache = [self._primal(s, e) for s, e in self.chunks] if state <= _CACHE_BYTES \
            else None

    def _primal(self, start: int, stop: int) -> _Primal:
        params, L, act = self.params, self.n_layers, self.activation
        acts = reference.forward(params, np.asarray(self.X[start:stop], dtype=_F64), act)
        Z, Y = acts.pop(), self.Y[start:stop]  # acts = [a_0 .. a_{L-1}], Z = z_L
        n, k = self.n, self.sizes[-1]
        if self.loss == "mse":
            dzL = 2.0 * (Z - Y) / (n * k)
            loss_curv = 2.0 / (n * k)
        elif self.loss == "logistic":
            s = reference.sigmoid(Z)
            dzL = (s - Y) / (n * k)
            loss_curv = s * (1.0 - s) / (n * k)
        elif self.loss == "softmax":
            e = np.exp(Z - Z.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
            dzL = p.copy()
            dzL[np.arange(len(Z)), Y[:, 0].astype(np.int64)] -= 1.0
            dzL /= n
            loss_curv = p
        else:
            raise ValueError(f"unknown loss {self.loss!r}")
        dz = [None] * (L + 1)
        fprime = [None] * L
        curv = [None] * L
        dz[L] = dzL
        for h in range(L - 1, 0, -1):  # hidden layers, top down
            da = dz[h + 1] @ params[2 * h].T  # params[2h] is W_{h+1}
            fprime[h] = reference.activation_grad(acts[h], act)
            second = _activation_second(acts[h], act)
            curv[h] = None if second is None else da * second
            dz[h] = da * fprime[h]
        return _Primal(acts, dz, fprime, curv, loss_curv)

    def _loss_hvp(self, P: _Primal, Rz: np.ndarray) -> np.ndarray:
        """``R{dz_L}``: the Hessian of the mean loss w.r.t. the logits, times ``R{z_L}``."""
        if self.loss == "softmax":
            p = P.loss_curv  # per row: (diag(p) - p p^T) Rz / n
            pRz = p * Rz
            return (pRz - p * pRz.sum(axis=1, keepdims=True)) / self.n
        return P.loss_curv * Rz  # mse: 2/(n k); logistic: s (1 - s) / (n k)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        params, L = self.params, self.n_layers
        V = reference.unflatten(v, self.sizes)  # the direction, as [V_1, vb_1, V_2, vb_2, ...]
        out = np.zeros(self.n_params, dtype=_F64)
        G = reference.unflatten(out, self.sizes)  # views: R{gW_l}, R{gb_l} accumulate in out
        for c, (start, stop) in enumerate(self.chunks):
            P = self._cache[c] if self._cache is not None else self._primal(start, stop)
            # Forward R-pass. Ra[l] = R{a_l}, Rz[l] = R{z_l}; the inputs do not depend on
            # theta, so Ra[0] = 0 (stored as None and its products skipped).
            Ra = [None] * L
            Rz = [None] * (L + 1)
            for l in range(1, L + 1):
                W, Vw, vb = params[2 * l - 2], V[2 * l - 2], V[2 * l - 1]  # W_l, V_l, vb_l
                rz = P.acts[l - 1] @ Vw
                rz += vb
                if Ra[l - 1] is not None:
                    rz += Ra[l - 1] @ W
                Rz[l] = rz
                if l < L:
                    Ra[l] = P.fprime[l] * rz
            rdz = self._loss_hvp(P, Rz[L])  # R{dz_L}
            # Backward R-pass, l = L..1: rdz holds R{dz_l}.
            for l in range(L, 0, -1):
                W, Vw = params[2 * l - 2], V[2 * l - 2]
                G[2 * l - 2] += P.acts[l - 1].T @ rdz  # a_{l-1}^T R{dz_l}
                if Ra[l - 1] is not None:
                    G[2 * l - 2] += Ra[l - 1].T @ P.dz[l]  # R{a_{l-1}}^T dz_l
                G[2 * l - 1] += rdz.sum(axis=0)
                if l > 1:
                    # R{da_{l-1}} = R{dz_l} W_l^T + dz_l V_l^T, then through f at layer l-1:
                    # R{dz_{l-1}} = R{da_{l-1}} f'(z_{l-1}) + da_{l-1} f''(z_{l-1}) R{z_{l-1}}
                    rda = rdz @ W.T
                    rda += P.dz[l] @ Vw.T
                    rdz = rda * P.fprime[l - 1]
                    if P.curv[l - 1] is not None:
                        rdz += P.curv[l - 1] * Rz[l - 1]
        return out


# ----------------------------------------------------------------------------- public API
def hessian_vector_product(model, params, X, Y, v, *, chunk_rows=None) -> np.ndarray:
    """Exact Hessian-vector product ``H @ v`` of the mean training loss, in float64.

    ``H`` is the Hessian of the loss :func:`fastgd.fit` minimizes (mean over all rows of
    ``X``) with respect to the flat parameter vector, in the layout of
    ``reference.flatten(params)``; ``v`` is a flat vector of that length (``model.n_params``).
    Computed by Pearlmutter's R-operator with one forward and one backward pass of matrix
    products over all rows (no finite differences, no Hessian in memory).

    ``Y``: the targets, in the layout ``fit`` takes (``(n,)`` or ``(n, n_outputs)`` values,
    1-D class ids for softmax) or the kernels' ``(n, n_outputs)`` / ``(n, 1)`` layout.
    ``params``, ``X``, ``Y`` and ``v`` are checked like ``fit`` checks them and computed in
    float64 whatever their dtype. ``chunk_rows``: rows per block of work (default: blocks of
    about 32 MiB), which bounds the memory for a large ``X``; the result does not depend on it
    beyond rounding. Returns a new float64 array of shape ``(model.n_params,)``.
    """
    model, params, Xc, Yc = _check_problem(model, params, X, Y, "Y")
    v = _check_vector(v, model.n_params)
    if chunk_rows is not None:
        chunk_rows = check_int("chunk_rows", chunk_rows, 1)
    return _HessianOperator(model, params, Xc, Yc, chunk_rows)(v)


def sharpness(model, params, X, y, *, max_iter=100, tol=1e-4, seed=0,
              max_rows=None) -> Sharpness:
    """The largest-magnitude eigenvalue of the training-loss Hessian at ``params``.

    Power iteration on exact Hessian-vector products (:func:`hessian_vector_product`), from
    a unit start vector drawn by ``numpy.random.default_rng(seed).standard_normal``. Each
    iteration reports the Rayleigh quotient ``theta = q.Hq`` of the unit iterate ``q`` (so
    the sign is kept: a negative value means the largest curvature is negative). It stops
    when ``|theta_k - theta_{k-1}| <= tol |theta_k|`` and the eigen-residual
    ``|Hq - theta q| <= sqrt(tol) |theta|`` (the second rules out an estimate stalled between
    two eigenvalues of nearly equal magnitude and opposite sign); if ``H q`` is exactly 0 the
    Hessian is 0 there and the value is 0. A Rayleigh quotient never exceeds the true
    sharpness in magnitude, so an estimate that is still moving is low; when the two top
    eigenvalues are close (ratio ``r`` near 1) its error can be many times ``tol``, about
    ``tol / (1 - r**2)``.

    ``X``, ``y``: the training data as :func:`fastgd.fit` takes them (``y`` values of shape
    ``(n,)`` or ``(n, n_outputs)``, or class ids for softmax). ``max_rows``: when given and
    smaller than ``n``, the loss is that of the fixed subsample of rows
    ``np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))`` (the same
    rows for the same seed; ``result.rows`` says how many were used).

    Returns a :class:`Sharpness`. Never raises for slow convergence: after ``max_iter``
    products without meeting the rule it returns ``converged=False`` with the last estimate
    and a ``RuntimeWarning``. Invalid inputs raise ``TypeError``/``ValueError``.
    """
    model = _check_model(model)
    max_iter = check_int("max_iter", max_iter, 1)
    tol = check_float("tol", tol, 0.0, lo_inclusive=False)
    seed = check_int("seed", seed, 0)
    if max_rows is not None:
        max_rows = check_int("max_rows", max_rows, 1)
    model, params, Xc, Yc = _check_problem(model, params, X, y)
    n = len(Xc)
    if max_rows is not None and max_rows < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
        Xc, Yc = Xc[rows], Yc[rows]
    op = _HessianOperator(model, params, Xc, Yc)

    q = np.random.default_rng(seed).standard_normal(op.n_params)
    q /= np.linalg.norm(q)
    value, previous, change, residual = math.nan, math.nan, math.inf, math.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        w = op(q)
        value = float(q @ w)
        norm_w = float(np.linalg.norm(w))
        if norm_w == 0.0:  # H q = 0 for a random q: the Hessian vanishes
            value, converged = 0.0, True
            break
        residual = float(np.linalg.norm(w - value * q))
        if it > 1:
            change = abs(value - previous)
            if change <= tol * abs(value) and residual <= math.sqrt(tol) * abs(value):
                converged = True
                break
        previous = value
        q = w / norm_w
    if not converged:
        scale = abs(value) if value else 1.0
        warnings.warn(
            f"sharpness: power iteration did not converge in max_iter={max_iter} "
            f"Hessian-vector products (last relative change {change / scale:.1e}, relative "
            f"residual {residual / scale:.1e}; tol={tol:g}); value={value:.6g} is the last "
            "estimate. The top eigenvalues are probably close in magnitude: raise max_iter "
            "or loosen tol.",
            RuntimeWarning, stacklevel=2)
    return Sharpness(value=value, iterations=it, converged=converged, rows=len(Xc))
