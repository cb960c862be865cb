"""The NumPy reference against finite differences (float64)."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd as fg
from conftest import make_problem
from fastgd.kernels import reference as ref
from fastgd.validate import check_targets

CASES = [
    ((6, 1), "mse", "relu"),
    ((6, 3), "mse", "relu"),
    ((6, 1), "logistic", "relu"),
    ((6, 2), "logistic", "relu"),
    ((6, 4), "softmax", "relu"),
    ((6, 5, 4), "softmax", "relu"),
    ((6, 5, 4), "softmax", "tanh"),
    ((6, 5, 4), "softmax", "sigmoid"),
    ((6, 5, 3, 1), "mse", "tanh"),
    ((6, 5, 3, 2), "logistic", "sigmoid"),
    ((6, 4, 4, 4, 3), "softmax", "tanh"),
]


@pytest.mark.parametrize("sizes,loss,act", CASES)
def test_gradients_match_finite_differences(sizes, loss, act):
    """Central differences of the mean batch loss agree with backpropagation."""
    model = fg.Model(sizes, loss=loss, activation=act)
    X, y = make_problem(sizes, loss, 9)
    Y = check_targets(y, model, len(X), np.dtype(np.float64))
    theta = ref.flatten(model.init_params(seed=int(np.random.default_rng().integers(1 << 30)),
                                          dtype="float64"))
    grad = ref.flatten(ref.gradients(ref.unflatten(theta, sizes), X, Y, act, loss))
    eps = 1e-6
    numeric = np.empty_like(theta)
    for i in range(theta.size):
        t = theta.copy()
        t[i] += eps
        up = ref.dataset_loss(t, X, Y, sizes, act, loss)
        t[i] -= 2 * eps
        down = ref.dataset_loss(t, X, Y, sizes, act, loss)
        numeric[i] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_losses_match_closed_forms(rng):
    """Each loss equals its textbook formula with PyTorch's mean reduction."""
    z = rng.standard_normal((7, 3))
    y = rng.standard_normal((7, 3))
    assert np.isclose(ref.loss_value(z, y, "mse"), np.mean((z - y) ** 2))
    t = (rng.random((7, 3)) > 0.5).astype(float)
    p = 1 / (1 + np.exp(-z))
    bce = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert np.isclose(ref.loss_value(z, t, "logistic"), bce)
    ids = rng.integers(0, 3, 7)
    sm = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    ce = -np.mean(np.log(sm[np.arange(7), ids]))
    assert np.isclose(ref.loss_value(z, ids.reshape(-1, 1).astype(float), "softmax"), ce)


def test_logistic_loss_is_stable_for_large_logits():
    """BCE-with-logits stays finite where the naive formula overflows."""
    z = np.array([[1000.0], [-1000.0]])
    y = np.array([[0.0], [1.0]])
    assert np.isclose(ref.loss_value(z, y, "logistic"), 1000.0)
    assert np.all(np.isfinite(ref.loss_grad(z, y, "logistic")))


def test_sgd_update_matches_torch_formula(rng):
    """Momentum buffer starts at the first gradient; Nesterov adds momentum * buf."""
    from fastgd.kernels import optimizers

    theta, g1, g2 = rng.standard_normal((3, 5))
    state = np.zeros((1, 5))
    h = fg.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01).hyper()
    t = theta.copy()
    optimizers.update(optimizers.OPTIMIZER_CODES["sgd"], t, state, g1, h, 0.1, 1)
    d1 = g1 + 0.01 * theta
    np.testing.assert_allclose(state[0], d1)
    np.testing.assert_allclose(t, theta - 0.1 * (d1 + 0.9 * d1))
    t_prev = t.copy()
    optimizers.update(optimizers.OPTIMIZER_CODES["sgd"], t, state, g2, h, 0.1, 2)
    d2 = g2 + 0.01 * t_prev
    buf = 0.9 * d1 + d2
    np.testing.assert_allclose(t, t_prev - 0.1 * (d2 + 0.9 * buf))


def test_batch_bounds():
    """Partial last batch is its own step unless drop_last (Plan.batches, the one
    definition every backend uses)."""
    from fastgd.plan import Plan

    def bounds(n, b, drop_last):
        plan = Plan.for_model(fg.Linear(2), "float64", "mbgd", b, drop_last=drop_last)
        return [(start, start + rows) for start, rows, _ in plan.batches(n)]

    assert bounds(10, 4, False) == [(0, 4), (4, 8), (8, 10)]
    assert bounds(10, 4, True) == [(0, 4), (4, 8)]
    assert bounds(8, 4, False) == [(0, 4), (4, 8)]
