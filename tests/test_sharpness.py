"""fg.sharpness and its exact Hessian-vector product, against torch, finite differences and
closed forms (float64, fresh random problems on every run)."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest

import fastgd as fg
from conftest import make_problem
from fastgd.kernels import reference as ref
from fastgd.sharpness import Sharpness, hessian_vector_product
from fastgd.validate import check_targets

# the module itself (the attribute fastgd.sharpness is the function)
sharpness_module = importlib.import_module("fastgd.sharpness")

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the torch checks skip; the rest needs NumPy only
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

# (layer sizes, loss, hidden activation): linear models, one and two hidden layers
CASES = [
    ((5, 1), "mse", "relu"),
    ((4, 3), "mse", "relu"),
    ((5, 2), "logistic", "relu"),
    ((4, 3), "softmax", "relu"),
    ((4, 5, 3), "softmax", "relu"),
    ((4, 5, 3), "softmax", "tanh"),
    ((4, 5, 2), "logistic", "tanh"),
    ((4, 5, 1), "mse", "sigmoid"),
    ((3, 4, 3, 3), "softmax", "tanh"),
    ((3, 4, 3, 2), "mse", "sigmoid"),
    ((3, 4, 3, 2), "logistic", "relu"),
    ((3, 4, 3, 2), "logistic", "sigmoid"),
]
IDS = [f"{'-'.join(map(str, s))}-{loss}-{act}" for s, loss, act in CASES]
F64 = np.dtype(np.float64)


def _problem(sizes, loss, act, n=11, scale=2.0, rng=None):
    """A fresh model, float64 params (a scaled random init) and data in fit's layout."""
    rng = np.random.default_rng() if rng is None else rng
    model = fg.Model(sizes, loss=loss, activation=act)
    X, y = make_problem(sizes, loss, n, seed=int(rng.integers(1 << 30)))
    params = [scale * p for p in model.init_params(int(rng.integers(1 << 30)), "float64")]
    return model, params, X, y


def _torch_loss(model, X, y):
    """The same mean loss written with torch.nn.functional, as a function of flat theta."""
    Xt = torch.from_numpy(X)
    Y = check_targets(y, model, len(X), F64)
    target = (torch.from_numpy(Y[:, 0].astype(np.int64)) if model.loss == "softmax"
              else torch.from_numpy(Y))
    act = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[model.activation]
    sizes = model.sizes

    def loss(theta):
        a, pos = Xt, 0
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            W = theta[pos : pos + n_in * n_out].reshape(n_in, n_out)
            pos += n_in * n_out
            b = theta[pos : pos + n_out]
            pos += n_out
            a = a @ W + b
            if layer < len(sizes) - 2:
                a = act(a)
        if model.loss == "mse":
            return F.mse_loss(a, target)
        if model.loss == "logistic":
            return F.binary_cross_entropy_with_logits(a, target)
        return F.cross_entropy(a, target)

    return loss


def _full_hessian(model, params, X, y):
    """The dense Hessian: torch.autograd.functional.hessian, or stacked HVPs without torch."""
    theta = ref.flatten(params)
    if torch is not None:
        return torch.autograd.functional.hessian(_torch_loss(model, X, y),
                                                 torch.from_numpy(theta)).numpy()
    return np.stack([hessian_vector_product(model, params, X, y, e)
                     for e in np.eye(model.n_params)])


def _top(H):
    """The eigenvalue of largest magnitude, and |lambda_2| / |lambda_1|."""
    ev = np.linalg.eigvalsh((H + H.T) / 2)
    mags = np.sort(np.abs(ev))[::-1]
    return ev[np.argmax(np.abs(ev))], mags[1] / mags[0]


# ----------------------------------------------------------------------------- the HVP
@needs_torch
@pytest.mark.parametrize("sizes,loss,act", CASES, ids=IDS)
def test_hvp_matches_torch(sizes, loss, act, rng):
    """Pearlmutter's R-op equals torch's double-backward HVP of the same loss."""
    model, params, X, y = _problem(sizes, loss, act, rng=rng)
    v = rng.standard_normal(model.n_params)
    got = hessian_vector_product(model, params, X, y, v)
    _, want = torch.autograd.functional.hvp(_torch_loss(model, X, y),
                                            torch.from_numpy(ref.flatten(params)),
                                            torch.from_numpy(v))
    want = want.numpy()
    assert got.dtype == F64 and got.shape == (model.n_params,)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13 * np.abs(want).max())


@pytest.mark.parametrize("sizes,loss,act", CASES, ids=IDS)
def test_hvp_matches_finite_differences_of_gradients(sizes, loss, act, rng):
    """H v = (g(theta + eps v) - g(theta - eps v)) / (2 eps) with reference.gradients."""
    model, params, X, y = _problem(sizes, loss, act, rng=rng)
    Y = check_targets(y, model, len(X), F64)
    v = rng.standard_normal(model.n_params)
    v /= np.linalg.norm(v)
    theta, eps = ref.flatten(params), 1e-6

    def grad(t):
        return ref.flatten(ref.gradients(ref.unflatten(t, sizes), X, Y, act, loss))

    numeric = (grad(theta + eps * v) - grad(theta - eps * v)) / (2 * eps)
    got = hessian_vector_product(model, params, X, Y, v)
    np.testing.assert_allclose(got, numeric, rtol=1e-5, atol=1e-7 * np.abs(got).max())


@pytest.mark.parametrize("sizes,loss,act", CASES, ids=IDS)
def test_hvp_is_symmetric(sizes, loss, act, rng):
    """u . H v == v . H u (the Hessian is symmetric), and H is linear in v."""
    model, params, X, y = _problem(sizes, loss, act, rng=rng)
    u, v = rng.standard_normal((2, model.n_params))
    Hu = hessian_vector_product(model, params, X, y, u)
    Hv = hessian_vector_product(model, params, X, y, v)
    scale = np.linalg.norm(u) * np.linalg.norm(Hv) + np.linalg.norm(v) * np.linalg.norm(Hu)
    assert abs(u @ Hv - v @ Hu) <= 1e-13 * scale
    np.testing.assert_allclose(hessian_vector_product(model, params, X, y, 2 * u - 3 * v),
                               2 * Hu - 3 * Hv, rtol=1e-10, atol=1e-13 * scale)


@pytest.mark.parametrize("sizes,loss,act", [CASES[5], CASES[9], CASES[11]], ids=[IDS[5], IDS[9],
                                                                              IDS[11]])
def test_hvp_chunks_and_recompute_agree(sizes, loss, act, rng, monkeypatch):
    """Row chunks (normalized by all n rows) and the uncached path give the same product."""
    model, params, X, y = _problem(sizes, loss, act, n=23, rng=rng)
    v = rng.standard_normal(model.n_params)
    whole = hessian_vector_product(model, params, X, y, v)
    for chunk in (1, 5, 23, 100):
        np.testing.assert_allclose(hessian_vector_product(model, params, X, y, v,
                                                          chunk_rows=chunk), whole,
                                   rtol=1e-12, atol=1e-15 * np.abs(whole).max())
    monkeypatch.setattr(sharpness_module, "_CACHE_BYTES", 0)  # recompute the primal pass
    np.testing.assert_allclose(hessian_vector_product(model, params, X, y, v, chunk_rows=4),
                               whole, rtol=1e-12, atol=1e-15 * np.abs(whole).max())


def test_hvp_layouts_and_dtypes(rng):
    """User and kernel target layouts, float32 and int inputs: all computed in float64."""
    for sizes, loss in (((4, 3), "softmax"), ((4, 1), "mse"), ((4, 2, 1), "logistic")):
        model, params, X, y = _problem(sizes, loss, "tanh", rng=rng)
        v = rng.standard_normal(model.n_params)
        want = hessian_vector_product(model, params, X, y, v)
        Y = check_targets(y, model, len(X), F64)
        np.testing.assert_array_equal(hessian_vector_product(model, params, X, Y, v), want)
        p32 = [p.astype(np.float32) for p in params]
        got = hessian_vector_product(model, p32, X.astype(np.float32), y, v.astype(np.float32))
        want64 = hessian_vector_product(model, [p.astype(F64) for p in p32],
                                        X.astype(np.float32).astype(F64), y,
                                        v.astype(np.float32).astype(F64))
        assert got.dtype == F64
        np.testing.assert_array_equal(got, want64)
    Xi = rng.integers(-3, 4, (7, 4))
    model, params, _, y = _problem((4, 3), "softmax", "relu", n=7, rng=rng)
    v = rng.standard_normal(model.n_params)
    np.testing.assert_array_equal(hessian_vector_product(model, params, Xi, y, v),
                                  hessian_vector_product(model, params, Xi.astype(F64), y, v))


# ----------------------------------------------------------------------------- sharpness
SHARP_CASES = [CASES[i] for i in (0, 2, 3, 5, 6, 8, 9, 10)]


@pytest.mark.parametrize("sizes,loss,act", SHARP_CASES,
                         ids=[IDS[CASES.index(c)] for c in SHARP_CASES])
def test_sharpness_matches_full_hessian(sizes, loss, act, rng):
    """Power iteration finds the top eigenvalue (largest |lambda|) of the dense Hessian."""
    for _ in range(20):  # power iteration needs a gap: redraw the rare near-degenerate ones
        model, params, X, y = _problem(sizes, loss, act, rng=rng)
        top, ratio = _top(_full_hessian(model, params, X, y))
        if ratio < 0.99:
            break
    res = fg.sharpness(model, params, X, y, max_iter=20_000, tol=1e-10,
                       seed=int(rng.integers(1 << 30)))
    assert isinstance(res, Sharpness) and res.converged and res.rows == len(X)
    assert 1 < res.iterations < 20_000
    assert res.value == pytest.approx(top, rel=1e-6)


def test_sharpness_keeps_the_sign_of_a_negative_top_eigenvalue(rng):
    """Far from a minimum the largest curvature can be negative: the sign is reported."""
    for _ in range(100):
        model, params, X, y = _problem((3, 4, 3, 2), "mse", "tanh", n=8, scale=5.0, rng=rng)
        y = 3 * y
        top, ratio = _top(_full_hessian(model, params, X, y))
        if top < 0 and ratio < 0.99:
            break
    else:
        pytest.fail("no random problem with a negative top eigenvalue was drawn")
    res = fg.sharpness(model, params, X, y, max_iter=20_000, tol=1e-10)
    assert res.converged and res.value < 0
    assert res.value == pytest.approx(top, rel=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_linear_regression_closed_form(k, rng):
    """MSE linear regression: H = 2/(n k) X1^T X1 on each output's (W[:, j], b[j])."""
    n, d = 17, 4
    model = fg.Linear(d, k)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d)
    y = rng.standard_normal((n, k) if k > 1 else n)
    params = model.init_params(int(rng.integers(1 << 30)), "float64")
    X1 = np.hstack([X, np.ones((n, 1))])
    gram = 2.0 / (n * k) * X1.T @ X1
    # flat layout: W[i, j] at i * k + j, b[j] at d * k + j, i.e. row i of X1 at i * k + j
    want = np.kron(gram, np.eye(k))
    H = np.stack([hessian_vector_product(model, params, X, y, e)
                  for e in np.eye(model.n_params)])
    np.testing.assert_allclose(H, want, rtol=1e-12, atol=1e-14 * np.abs(want).max())
    res = fg.sharpness(model, params, X, y, max_iter=5_000, tol=1e-10)
    assert res.converged
    assert float(res) == pytest.approx(np.linalg.eigvalsh(gram)[-1], rel=1e-7)


def test_not_converged_warns_and_returns(rng):
    """Too few iterations: a RuntimeWarning saying what to do, converged=False, no raise."""
    model, params, X, y = _problem((4, 5, 3), "softmax", "tanh", rng=rng)
    with pytest.warns(RuntimeWarning, match="did not converge.*raise max_iter or loosen tol"):
        res = fg.sharpness(model, params, X, y, max_iter=1)
    assert not res.converged and res.iterations == 1 and np.isfinite(res.value)


def test_result_is_frozen_and_floatable(rng):
    """Sharpness is a frozen dataclass; float(result) is its value; defaults converge."""
    model, params, X, y = _problem((4, 5, 3), "softmax", "relu", rng=rng)
    res = fg.sharpness(model, params, X, y, max_iter=1000)
    assert [f.name for f in dataclasses.fields(res)] == ["value", "iterations", "converged",
                                                         "rows"]
    assert float(res) == res.value and isinstance(res.value, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.value = 0.0
    assert fg.Sharpness is Sharpness and {"sharpness", "Sharpness"} <= set(fg.__all__)


def test_max_rows_subsample_is_deterministic(rng):
    """max_rows: the documented seeded subsample, the same rows for the same seed."""
    model, params, X, y = _problem((4, 5, 3), "softmax", "tanh", n=60, rng=rng)
    kw = dict(max_iter=5_000, tol=1e-8)
    a = fg.sharpness(model, params, X, y, max_rows=20, seed=7, **kw)
    b = fg.sharpness(model, params, X, y, max_rows=20, seed=7, **kw)
    assert a == b and a.rows == 20
    rows = np.sort(np.random.default_rng(7).choice(60, 20, replace=False))
    assert fg.sharpness(model, params, X[rows], y[rows], seed=7, **kw) == a
    full = fg.sharpness(model, params, X, y, seed=3, **kw)
    assert full.rows == 60
    assert fg.sharpness(model, params, X, y, max_rows=60, seed=3, **kw) == full
    assert fg.sharpness(model, params, X, y, max_rows=1000, seed=3, **kw) == full


# ----------------------------------------------------------------------------- bad inputs
def _bad_cases():
    model = fg.Model((4, 5, 3), loss="softmax", activation="tanh")
    params = model.init_params(0, "float64")
    X, y = make_problem(model.sizes, "softmax", 9)
    v = np.ones(model.n_params)
    Xnan = X.copy()
    Xnan[2, 1] = np.nan
    pnan = [p.copy() for p in params]
    pnan[2][0, 0] = np.inf
    sharp = fg.sharpness
    hvp = hessian_vector_product
    return [
        (lambda: sharp("mlp", params, X, y), TypeError, "must be a fastgd Model"),
        (lambda: sharp(model, params, X[:, :3], y), ValueError, "3 features.*n_features=4"),
        (lambda: sharp(model, params, X[0], y), ValueError, "must be 2-D"),
        (lambda: sharp(model, params, Xnan, y), ValueError, "X contains NaN or inf"),
        (lambda: sharp(model, params, X.astype(str), y), TypeError, "real numbers"),
        (lambda: sharp(model, params, X, y[:-1]), ValueError, "8 rows but X has 9"),
        (lambda: sharp(model, params, X, y + 3), ValueError, "class ids in"),
        (lambda: sharp(model, params, X, y + 0.5), ValueError, "integer class ids"),
        (lambda: sharp(model, params[:2], X, y), ValueError, "list of 4 arrays"),
        (lambda: sharp(model, [params[0].T, *params[1:]], X, y), ValueError, "expected"),
        (lambda: sharp(model, pnan, X, y), ValueError, r"params\[2\] contains NaN or inf"),
        (lambda: sharp(model, params, X, y, max_iter=0), ValueError, "max_iter must be"),
        (lambda: sharp(model, params, X, y, max_iter=2.5), TypeError, "max_iter must be an"),
        (lambda: sharp(model, params, X, y, tol=0.0), ValueError, "tol must be > 0"),
        (lambda: sharp(model, params, X, y, tol=np.nan), TypeError, "tol must be a finite"),
        (lambda: sharp(model, params, X, y, seed=-1), ValueError, "seed must be >= 0"),
        (lambda: sharp(model, params, X, y, max_rows=0), ValueError, "max_rows must be"),
        (lambda: hvp(model, params, X, y, v[:-1]), ValueError, "length n_params=43"),
        (lambda: hvp(model, params, X, y, np.full_like(v, np.nan)), ValueError,
         "v contains NaN"),
        (lambda: hvp(model, params, X, y, v, chunk_rows=0), ValueError, "chunk_rows must be"),
        (lambda: hvp(fg.Linear(4, 2, "logistic"), fg.Linear(4, 2).init_params(), X,
                     2 * np.ones((9, 2)), np.ones(10)), ValueError, r"in \[0, 1\]"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_inputs_give_clear_errors(case):
    """Shape, dtype, NaN and range errors name the argument and what was expected."""
    call, exc, match = _bad_cases()[case]
    with pytest.raises(exc, match=match):
        call()
