"""Sample weights: a batch loss is the mean of ``w_i * loss_i`` (PyTorch's
``(criterion(reduction="none")(z, y) * w).mean()``), on the reference and numba-cpu."""

import numpy as np
import pytest

import fastgd as fg
from fastgd.backends.gpu_launch import refuse_sample_weights
from fastgd.kernels import reference
from fastgd.plan import Plan
from fastgd.validate import check_targets, with_sample_weight

MODELS = [fg.Linear(4, 1), fg.Linear(4, 1, "logistic"), fg.Linear(4, 3, "softmax"),
          fg.Linear(4, 2), fg.MLP([4, 6, 3], activation="tanh"),
          fg.MLP([4, 6, 1], activation="sigmoid", loss="logistic")]


def problem(model, n=57, seed=None):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, model.n_features))
    if model.loss == "softmax":
        y = rng.integers(0, model.n_outputs, n)
    elif model.loss == "logistic":
        y = (rng.random((n, model.n_outputs)) > 0.5).astype(float)
    else:
        y = rng.standard_normal((n, model.n_outputs))
    return X, y, rng.random(n) * 3


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.sizes}-{m.loss}")
def test_weighted_gradient_matches_finite_differences(model):
    X, y, w = problem(model)
    Y = with_sample_weight(check_targets(y, model, len(X), np.dtype(np.float64)), w,
                           np.dtype(np.float64))
    params = model.init_params(int(np.random.default_rng().integers(1 << 30)), "float64")
    grads = reference.flatten(reference.gradients(params, X, Y, model.activation,
                                                  model.loss))
    theta = reference.flatten(params)
    eps = 1e-6
    for i in np.random.default_rng().choice(theta.size, min(8, theta.size), replace=False):
        up, down = theta.copy(), theta.copy()
        up[i] += eps
        down[i] -= eps
        f = [reference.dataset_loss(t, X, Y, model.sizes, model.activation, model.loss)
             for t in (up, down)]
        assert grads[i] == pytest.approx((f[0] - f[1]) / (2 * eps), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("loss", ["mse", "logistic", "softmax"])
def test_weighted_loss_is_torchs_reduction_none_times_weights(loss):
    torch = pytest.importorskip("torch")
    model = fg.Linear(4, 3 if loss == "softmax" else 2, loss)
    X, y, w = problem(model)
    Y = with_sample_weight(check_targets(y, model, len(X), np.dtype(np.float64)), w,
                           np.dtype(np.float64))
    Z = np.random.default_rng().standard_normal((len(X), model.n_outputs))
    z = torch.tensor(Z, requires_grad=True)
    crit = {"mse": torch.nn.MSELoss, "logistic": torch.nn.BCEWithLogitsLoss,
            "softmax": torch.nn.CrossEntropyLoss}[loss](reduction="none")
    target = torch.tensor(y) if loss != "softmax" else torch.tensor(y, dtype=torch.long)
    per = crit(z, target)
    tw = torch.tensor(w)
    value = (per * (tw[:, None] if per.ndim == 2 else tw)).mean()
    value.backward()
    assert reference.loss_value(Z, Y, loss) == pytest.approx(value.item(), rel=1e-12)
    np.testing.assert_allclose(reference.loss_grad(Z, Y, loss), z.grad.numpy(), rtol=1e-10,
                               atol=1e-15)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.sizes}-{m.loss}")
@pytest.mark.parametrize("batch, shuffle", [(1, True), (8, False), (16, True)])
def test_numba_cpu_matches_the_reference_with_weights(model, batch, shuffle):
    X, y, w = problem(model)
    kw = dict(batch_size=batch, epochs=2, shuffle=shuffle, lr=0.05, dtype="float64",
              optimizer=fg.Adam(lr=0.01), seed=3)
    kw.pop("lr")
    a = fg.fit(model, X, y, sample_weight=w, backend="numpy", **kw)
    b = fg.fit(model, X, y, sample_weight=w, backend="numba-cpu", **kw)
    for p, q in zip(a.params, b.params, strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-10, atol=1e-12)
    assert a.history[-1].train_loss == pytest.approx(b.history[-1].train_loss, rel=1e-10)
    plain = fg.fit(model, X, y, backend="numba-cpu", **kw)
    assert not np.allclose(plain.params[0], b.params[0])


@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unit_weights_are_the_unweighted_run_bit_for_bit(backend, dtype):
    for model in MODELS:
        X, y, _ = problem(model)
        kw = dict(batch_size=5, epochs=2, lr=0.05, dtype=dtype, backend=backend)
        a = fg.fit(model, X, y, sample_weight=np.ones(len(X)), **kw)
        b = fg.fit(model, X, y, **kw)
        for p, q in zip(a.params, b.params, strict=True):
            np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("w, match", [
    (np.ones(3), "one weight per row"),
    (np.ones((57, 1)), "1-D"),
    (-np.ones(57), ">= 0"),
    (np.full(57, np.nan), "finite"),
    (np.zeros(57), "all zeros"),
])
def test_bad_weights_are_clear_errors(w, match):
    X, y, _ = problem(fg.Linear(4, 1))
    with pytest.raises(ValueError, match=match):
        fg.fit(fg.Linear(4, 1), X, y, sample_weight=w)


def test_gpu_backends_and_chunks_refuse_weights():
    model = fg.Linear(4, 3, "softmax")
    plan = Plan.for_model(model, np.float32)
    refuse_sample_weights("cupy", plan, np.zeros((5, 1)))  # no weights: fine
    with pytest.raises(ValueError, match="numba-cpu"):
        refuse_sample_weights("cupy", plan, np.zeros((5, 2)))
    X, y, w = problem(model)
    with pytest.raises(ValueError, match="in-memory"):
        fg.fit(model, [(X, y)], sample_weight=w)


def test_estimators_pass_weights_through():
    pytest.importorskip("sklearn")
    from fastgd.sklearn import GDClassifier

    X, y, w = problem(fg.Linear(4, 3, "softmax"), n=300)
    est = GDClassifier(max_iter=3, tol=None, random_state=2, batch_size=16, eta0=0.1,
                       alpha=0.0).fit(X, y, sample_weight=w)
    res = fg.fit(fg.Linear(4, 3, "softmax"), X, y, sample_weight=w, batch_size=16, epochs=3,
                 seed=2, lr=0.1, dtype="float64")
    np.testing.assert_array_equal(est.coef_, res.params[0].T)
    inc = GDClassifier(random_state=2, batch_size=16, eta0=0.1)
    inc.partial_fit(X, y, classes=[0, 1, 2], sample_weight=w)
    assert inc.n_iter_ == 1
