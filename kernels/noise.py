"""The gradient noise scale: per-example gradient norms and the estimators built on them.

Definitions (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training"): with
``g_i`` the gradient of example ``i``'s own loss (the loss of a batch of one, as each loss
is defined for a batch: ``MSELoss``/``BCEWithLogitsLoss`` average the example's outputs,
``CrossEntropyLoss`` is the example's loss) and ``G`` their mean over the ``n`` examples
(the full-batch gradient), ``tr(Sigma) = mean_i |g_i - G|^2 = S - |G|^2`` with
``S = mean_i |g_i|^2``, and the simple noise scale ``B_simple = tr(Sigma) / |G|^2``.
Weight decay is not part of the loss, so not of ``g_i``.

Per-example norms without per-example gradients: a dense layer's weight gradient of
example ``i`` is the outer product ``a_i delta_i^T`` of its input and its output delta, so
``|g_i|^2 = sum over layers (|a_i|^2 + 1) |delta_i|^2`` (the ``+ 1`` is the bias). The
compiled kernels accumulate that during their usual forward and backward passes.

Online estimates from a batch of ``b`` examples drawn without replacement from ``n``
(an epoch's batches): ``S_B`` (the batch's mean ``|g_i|^2``) and ``|G_B|^2`` (its mean
gradient's) satisfy ``E[S_B] = |G|^2 + tr(Sigma)`` and ``E|G_B|^2 = |G|^2 + c tr(Sigma)``
with ``c = (n - b) / (b (n - 1))`` (the finite-population variance of a mean), so
:func:`step_estimates` is unbiased for both, exact for ``b = n``, and undefined for
``b = 1`` (a single example has no spread). :func:`two_batch_estimates` is McCandlish's
appendix A.1 estimator from two batch sizes, the independent check of the online one.
"""

from __future__ import annotations

import numpy as np

from . import reference


def own_scale(loss: str, n_out: int) -> float:
    """The mean-reduction factor of a batch of one (the per-example loss's scale)."""
    return 1.0 if loss == "softmax" else 1.0 / n_out


def per_example_gradients(params, X, Y, activation: str, loss: str) -> np.ndarray:
    """``(n, n_params)`` float64: row ``i`` is the flat gradient of example ``i``'s own loss,
    computed one example at a time (the plain definition, for checking)."""
    p64 = [np.asarray(p, np.float64) for p in params]
    X64, Y64 = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    return np.stack([reference.flatten(reference.gradients(p64, X64[i:i + 1], Y64[i:i + 1],
                                                            activation, loss))
                     for i in range(len(X64))])


def sums(params, X, Y, activation: str, loss: str) -> tuple[float, np.ndarray]:
    """``(sum_i |g_i|^2, sum_i g_i)`` in float64 by the layer identity above, all rows at
    once (what the kernels compute; equal to summing :func:`per_example_gradients`)."""
    p64 = [np.asarray(p, np.float64) for p in params]
    X64, Y64 = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    rows = len(X64)
    acts = reference.forward(p64, X64, activation)
    # the batch gradient of the mean loss is (1/rows) of the sum of the own gradients
    dz = reference.loss_grad(acts[-1], Y64, loss) * rows
    n_layers = len(p64) // 2
    sq = np.zeros(rows)
    grad = [None] * len(p64)
    for layer in reversed(range(n_layers)):
        a = acts[layer]
        sq += ((a * a).sum(axis=1) + 1.0) * (dz * dz).sum(axis=1)
        grad[2 * layer] = a.T @ dz
        grad[2 * layer + 1] = dz.sum(axis=0)
        if layer > 0:
            dz = (dz @ p64[2 * layer].T) * reference.activation_grad(a, activation)
    return float(sq.sum()), reference.flatten(grad)


def exact(params, X, Y, activation: str, loss: str) -> tuple[float, float]:
    """``(S, |G|^2)`` over the whole data set: the mean of ``|g_i|^2`` and the squared norm
    of the mean gradient."""
    sq, g = sums(params, X, Y, activation, loss)
    n = len(X)
    G = g / n
    return sq / n, float(G @ G)


def step_estimates(mean_sq, grad_sq, b, n):
    """Unbiased ``(tr(Sigma), |G|^2)`` estimates from one batch of ``b >= 2`` of ``n``
    examples drawn without replacement: ``mean_sq`` is ``S_B``, ``grad_sq`` is ``|G_B|^2``
    (plain Python: the Numba kernels compile this same function)."""
    c = (n - b) / (b * (n - 1.0))
    trace = (mean_sq - grad_sq) / (1.0 - c)
    return trace, mean_sq - trace


def two_batch_estimates(g_small_sq, g_big_sq, b_small, b_big) -> tuple[float, float]:
    """McCandlish et al. appendix A.1: ``(tr(Sigma), |G|^2)`` from the mean squared norms of
    batch gradients at two batch sizes (average each over many batches first)."""
    grad_sq = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace = (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)
    return trace, grad_sq
