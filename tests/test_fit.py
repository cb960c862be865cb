"""fit(): convergence, history, schedules, results and the backend registry."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd as fg
from conftest import make_problem

BACKENDS = ["numpy", "numba-cpu"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bgd_converges_to_least_squares(backend, rng):
    """Full-batch gradient descent on linear regression reaches np.linalg.lstsq."""
    n, d = 400, 5
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.3 + 0.1 * rng.standard_normal(n)
    res = fg.fit(fg.Linear(d), X, y, mode="bgd", epochs=400, lr=0.3, dtype="float64",
                 backend=backend)
    A = np.hstack([X, np.ones((n, 1))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(res.params[0][:, 0], sol[:d], atol=1e-6)
    np.testing.assert_allclose(res.params[1][0], sol[d], atol=1e-6)


def _blobs(rng, n, d, k, sep=5.0):
    # random orthogonal directions: every pair of centres is sep * sqrt(2) apart, so the
    # classes are separable on every draw (random centres were sometimes too close)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    centers = sep * q[:k]
    y = rng.integers(0, k, n)
    return centers[y] + rng.standard_normal((n, d)), y


@pytest.mark.parametrize("backend", BACKENDS)
def test_logistic_and_softmax_separate_blobs(backend, rng):
    """Logistic and softmax regression and an MLP classify well-separated blobs."""
    X, y = _blobs(rng, 600, 4, 2)
    model = fg.Linear(4, 1, loss="logistic")
    res = fg.fit(model, X, y, batch_size=16, epochs=10, lr=0.1, backend=backend)
    assert np.mean((model.predict(res.params, X) > 0.5) == y) > 0.95
    X, y = _blobs(rng, 600, 6, 4)
    for model in (fg.Linear(6, 4, loss="softmax"), fg.MLP([6, 16, 4], activation="tanh")):
        res = fg.fit(model, X, y, batch_size=16, epochs=10, lr=0.1, momentum=0.9,
                     backend=backend)
        assert np.mean(model.predict(res.params, X) == y) > 0.95
        assert res.history[-1].train_loss < res.history[0].train_loss


def test_history_and_timings():
    """One record per epoch with losses, seconds, cumulative samples and the lr used."""
    model = fg.Linear(3)
    X, y = make_problem(model.sizes, "mse", 100)
    res = fg.fit(model, X, y, batch_size=10, epochs=4, lr=0.1, lr_schedule=fg.StepDecay(2, 0.1))
    assert [r.epoch for r in res.history] == [0, 1, 2, 3]
    assert [r.samples for r in res.history] == [100, 200, 300, 400]
    assert np.allclose([r.lr for r in res.history], [0.1, 0.1, 0.01, 0.01])
    assert all(r.seconds > 0 and np.isfinite(r.train_loss) for r in res.history)
    assert res.steps == 40 and res.samples_per_s > 0 and res.compile_s >= 0
    assert res.stopped is None and res.history[0].val_loss is None
    d = res.to_dict()
    assert d["history"][1]["samples"] == 200 and "params" not in d


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", [fg.Linear(3), fg.Linear(3, loss="logistic"),
                                   fg.MLP([3, 5, 4])], ids=["mse", "logistic", "mlp"])
def test_train_loss_is_the_mean_of_the_batch_losses(backend, model):
    """``train_loss`` is the epoch's batch losses (each before its step, on its own rows)
    averaged with the rows as weights, a partial last batch included: replayed here with
    the reference's own loss and update one step at a time."""
    from fastgd.kernels import reference as ref

    X, y = make_problem(model.sizes, model.loss, 103, dtype=np.float64)
    res = fg.fit(model, X, y, batch_size=10, epochs=2, lr=0.1, shuffle=False,
                 backend=backend, dtype="float64", eval_every=1)
    run = fg.prepare(model, X, y, backend="numpy", batch_size=10, epochs=2, lr=0.1,
                     shuffle=False, dtype="float64")
    theta = run.engine.params()
    for epoch, rec in enumerate(res.history):
        total = 0.0
        for start in range(0, 103, 10):
            rows = slice(start, start + 10)
            total += ref.dataset_loss(theta, run.X[rows], run.Y[rows], model.sizes,
                                      model.activation, model.loss) * len(run.X[rows])
            grads = ref.gradients(ref.unflatten(theta, model.sizes), run.X[rows],
                                  run.Y[rows], model.activation, model.loss)
            theta -= 0.1 * ref.flatten(grads)
        assert rec.train_loss == pytest.approx(total / 103, rel=1e-12)
        full = ref.dataset_loss(theta, run.X, run.Y, model.sizes, model.activation,
                                model.loss)
        assert rec.full_train_loss == pytest.approx(full, rel=1e-12)
        assert epoch < 1 or rec.train_loss != rec.full_train_loss


@pytest.mark.parametrize("eval_every,evaluated", [(None, []), (1, [0, 1, 2, 3, 4]),
                                                  (2, [1, 3, 4]), (5, [4]), (9, [4])])
def test_eval_every(eval_every, evaluated):
    """The exact training loss after every ``eval_every``-th epoch and the last; never by
    default (the epochs' own batch losses are always there)."""
    model = fg.Linear(3)
    X, y = make_problem(model.sizes, "mse", 60)
    res = fg.fit(model, X, y, batch_size=8, epochs=5, eval_every=eval_every)
    assert [r.epoch for r in res.history if r.full_train_loss is not None] == evaluated
    assert all(np.isfinite(r.train_loss) for r in res.history)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_eval_every_rejects_bad_values(bad):
    """``eval_every`` is an int >= 1 (or None): anything else is a clear error."""
    model = fg.Linear(3)
    X, y = make_problem(model.sizes, "mse", 20)
    with pytest.raises((ValueError, TypeError), match="eval_every"):
        fg.fit(model, X, y, epochs=1, eval_every=bad)


@pytest.mark.parametrize("schedule,expected", [
    ("constant", [0.1, 0.1, 0.1]),
    ("invscaling", [0.1, 0.1 / 2**0.5, 0.1 / 3**0.5]),
    (fg.Cosine(), [0.1, 0.075, 0.025]),
    (lambda epoch: 0.5 / (epoch + 1), [0.5, 0.25, 0.5 / 3]),
])
def test_schedules(schedule, expected):
    """Named, object and callable schedules give the per-epoch learning rates."""
    model = fg.Linear(3)
    X, y = make_problem(model.sizes, "mse", 30)
    res = fg.fit(model, X, y, epochs=3, lr=0.1, lr_schedule=schedule, backend="numpy")
    assert np.allclose([r.lr for r in res.history], expected)


def test_params_layout_and_init():
    """init_params follows [W1, b1, ...] with W (n_in, n_out), torch-like bounds, seeded."""
    model = fg.MLP([64, 128, 10])
    p = model.init_params(seed=0, dtype="float32")
    assert [a.shape for a in p] == [(64, 128), (128,), (128, 10), (10,)]
    assert all(a.dtype == np.float32 for a in p)
    assert np.abs(p[0]).max() <= 1 / 8 and np.abs(p[2]).max() <= 1 / np.sqrt(128)
    q = model.init_params(seed=0, dtype="float32")
    assert all(np.array_equal(a, b) for a, b in zip(p, q, strict=True))
    assert model.n_params == 64 * 128 + 128 + 128 * 10 + 10


def test_given_params_are_the_starting_point():
    """params= starts training from the given values (one step of plain SGD checked)."""
    model = fg.Linear(2)
    X = np.array([[1.0, 2.0]])
    y = np.array([1.0])
    params = [np.array([[0.5], [0.25]]), np.array([0.0])]
    res = fg.fit(model, X, y, mode="sgd", epochs=1, lr=0.1, dtype="float64", params=params)
    err = 1.0 - 1.0  # prediction 0.5 + 0.5 = 1.0 equals the target: no change
    assert np.allclose(res.params[0], params[0]) and err == 0
    res = fg.fit(model, X, np.array([2.0]), mode="sgd", epochs=1, lr=0.1, dtype="float64",
                 params=params)
    grad_w = 2 * (1.0 - 2.0) * X[0]  # d/dw (w.x - y)^2
    np.testing.assert_allclose(res.params[0][:, 0], params[0][:, 0] - 0.1 * grad_w)


def test_predict_outputs():
    """predict gives values, probabilities or class ids by loss."""
    X = np.random.default_rng().standard_normal((5, 3))
    for loss, k, check in [
        ("mse", 1, lambda p: p.shape == (5,)),
        ("mse", 2, lambda p: p.shape == (5, 2)),
        ("logistic", 1, lambda p: p.shape == (5,) and np.all((p > 0) & (p < 1))),
        ("softmax", 4, lambda p: p.shape == (5,) and p.dtype.kind == "i"),
    ]:
        model = fg.Linear(3, k, loss=loss)
        assert check(model.predict(model.init_params(1), X))


def test_backends_registry():
    """Both CPU backends are available here; unknown names fail clearly."""
    assert {"numpy", "numba-cpu"} <= set(fg.backends.available())
    assert fg.backends.describe()["numpy"] is None
    with pytest.raises(ValueError, match="backend"):
        fg.backends.create("tpu")
