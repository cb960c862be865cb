"""The gradient noise scale: the per-example norm identity, the exact pass on the CPU
backends, the online per-step estimator (unbiased, equal across backends, free of side
effects on training) and McCandlish's two-batch estimator as an independent check."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from backend_check import make_problem

import fastgd as fg
from fastgd import backends
from fastgd.backends import numba_cpu
from fastgd.kernels import noise, reference
from fastgd.kernels.reference import flatten
from fastgd.plan import Plan
from fastgd.validate import check_targets

# (sizes, loss, activation): linear (one and several outputs), logistic, softmax, MLPs
MODELS = [
    ((5, 1), "mse", "relu"),
    ((5, 3), "mse", "relu"),
    ((4, 2), "logistic", "relu"),
    ((6, 4), "softmax", "relu"),
    ((6, 9, 3), "softmax", "relu"),
    ((5, 7, 4, 2), "logistic", "tanh"),
    ((4, 18, 1), "mse", "sigmoid"),  # a wide hidden layer (W kept (n_in, n_out))
]
IDS = [f"{'-'.join(map(str, s))}-{loss}-{act}" for s, loss, act in MODELS]


def problem(sizes, loss, act, n, dtype="float64", seed=0):
    """A model, its random parameters (not at a minimum) and data in the kernel layout."""
    model = fg.Model(sizes, loss, act)
    X, y = make_problem(sizes, loss, n, seed=seed)
    Y = check_targets(y, model, n, np.dtype(dtype), "y")
    params = model.init_params(seed + 1, dtype)
    return model, params, X.astype(dtype), y, Y


def engine(name, model, params, X, Y, dtype="float64", **plan_kw):
    """A prepared backend over ``(X, Y)``."""
    kw = dict(mode="mbgd", batch_size=4, shuffle=True, seed=5, optimizer=fg.SGD(lr=1e-3))
    kw.update(plan_kw)
    plan = Plan.for_model(model, dtype, **kw)
    e = backends.create(name)
    e.prepare(plan, X, Y, flatten(params))
    e.warmup()
    return e


@pytest.mark.parametrize(("sizes", "loss", "act"), MODELS, ids=IDS)
def test_layer_identity_matches_per_example_gradients(sizes, loss, act):
    """sum_l (|a|^2 + 1)|delta|^2 is |g_i|^2 of the explicit per-example gradients, and the
    own gradients' mean is the batch gradient."""
    model, params, X, _, Y = problem(sizes, loss, act, 11)
    g = noise.per_example_gradients(params, X, Y, act, loss)
    sq, total = noise.sums(params, X, Y, act, loss)
    np.testing.assert_allclose(sq, (g * g).sum(), rtol=1e-12)
    np.testing.assert_allclose(total, g.sum(axis=0), rtol=1e-12, atol=1e-14)
    batch = flatten(reference.gradients(params, X, Y, act, loss))
    np.testing.assert_allclose(total / len(X), batch, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("sizes", "loss", "act"), MODELS, ids=IDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exact_noise_numba_matches_reference(sizes, loss, act, dtype, monkeypatch):
    """The compiled one-pass exact noise (rows in several parallel groups) equals the
    reference's."""
    monkeypatch.setattr(numba_cpu, "MIN_GROUP_FLOPS", 1)
    model, params, X, y, Y = problem(sizes, loss, act, 23, dtype)
    want = noise.exact(params, X, Y, act, loss)
    got = engine("numba-cpu", model, params, X, Y, dtype).exact_noise(X, Y)
    tol = dict(rtol=1e-10) if dtype == "float64" else dict(rtol=2e-4)
    np.testing.assert_allclose(got, want, **tol)
    result = fg.noise_scale(model, params, X, y)
    assert result.source == "exact" and result.n == len(X)
    np.testing.assert_allclose(result.grad_norm_sq, want[1], **tol)
    np.testing.assert_allclose(result.trace_cov, want[0] - want[1], **tol)
    np.testing.assert_allclose(result.b_simple, (want[0] - want[1]) / want[1], rtol=1e-3)


@pytest.mark.parametrize(("b", "n"), [(2, 6), (3, 7), (7, 7)])
def test_step_estimator_is_unbiased_over_every_batch(b, n):
    """Averaged over every batch of b of n examples (what sampling without replacement
    draws), the per-step estimates equal the exact tr(Sigma) and |G|^2."""
    model, params, X, _, Y = problem((4, 5, 3), "softmax", "tanh", n)
    mean_sq, grad_sq = noise.exact(params, X, Y, "tanh", "softmax")
    estimates = []
    for rows in itertools.combinations(range(n), b):
        idx = list(rows)
        sq, total = noise.sums(params, X[idx], Y[idx], "tanh", "softmax")
        G = total / b
        estimates.append(noise.step_estimates(sq / b, G @ G, b, n))
    trace, grad = np.mean(estimates, axis=0)
    np.testing.assert_allclose([trace, grad], [mean_sq - grad_sq, grad_sq], rtol=1e-10)


def test_step_estimator_against_two_batch_estimator():
    """McCandlish's appendix-A.1 estimator (mean |G_B|^2 at two batch sizes) and the
    within-batch estimator agree on the same data, and both approach the exact values."""
    rng = np.random.default_rng(7)
    model, params, X, _, Y = problem((8, 1), "mse", "relu", 20000, seed=3)
    mean_sq, grad_sq = noise.exact(params, X, Y, "relu", "mse")
    big, small = [], []
    online = []
    for _ in range(300):
        for b, out in ((8, small), (128, big)):
            idx = rng.choice(len(X), b, replace=False)
            sq, total = noise.sums(params, X[idx], Y[idx], "relu", "mse")
            G = total / b
            out.append(G @ G)
            online.append(noise.step_estimates(sq / b, G @ G, b, len(X)))
    trace2, grad2 = noise.two_batch_estimates(np.mean(small), np.mean(big), 8, 128)
    trace1, grad1 = np.mean(online, axis=0)
    exact = np.array([mean_sq - grad_sq, grad_sq])
    np.testing.assert_allclose([trace2, grad2], exact, rtol=0.1)
    np.testing.assert_allclose([trace1, grad1], exact, rtol=0.1)
    np.testing.assert_allclose(trace1 / grad1, trace2 / grad2, rtol=0.15)


@pytest.mark.parametrize(("sizes", "loss", "act"), MODELS[::2], ids=IDS[::2])
@pytest.mark.parametrize("grouped", [False, True])
def test_online_noise_numba_matches_reference(sizes, loss, act, grouped, monkeypatch):
    """track_noise: the compiled epochs (serial and grouped drivers, a partial last batch,
    shuffled) add the same per-step estimates as the reference, and train the same bits
    as without tracking."""
    if grouped:
        monkeypatch.setattr(numba_cpu, "MIN_GROUP_FLOPS", 1)
    model, params, X, _, Y = problem(sizes, loss, act, 30)
    lrs = np.full(8, 1e-2)
    runs = {}
    for name, track in (("numpy", True), ("numba-cpu", True), ("numba-cpu", False)):
        # plain SGD: the noise code does not depend on the optimizer, and every driver
        # variant is a compile (CI time)
        e = engine(name, model, params, X, Y, optimizer=fg.SGD(lr=1e-2), track_noise=track)
        e.run_epoch(0, lrs)
        runs[name, track] = (e.epoch_noise(), e.params())
    ref, got, off = runs["numpy", True], runs["numba-cpu", True], runs["numba-cpu", False]
    assert ref[0][2] == got[0][2] == 8  # every step of the epoch (7 of 4 rows, one of 2)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-9, atol=1e-14)
    np.testing.assert_array_equal(got[1], off[1])
    assert not off[0].any()


def test_online_noise_of_full_batch_is_exact():
    """BGD: the whole data set is the batch, so the online estimate is the exact one."""
    model, params, X, y, Y = problem((6, 9, 3), "softmax", "relu", 40)
    run = fg.prepare(model, X, y, mode="bgd", epochs=1, lr=1e-9, params=params,
                     dtype="float64", track_noise=True)
    run.run_epoch(0)
    online = run.epoch_noise()
    exact = fg.noise_scale(model, params, X, y)
    assert online.source == "online"
    np.testing.assert_allclose([online.trace_cov, online.grad_norm_sq],
                               [exact.trace_cov, exact.grad_norm_sq], rtol=1e-6)


def test_batch_size_one_falls_back_to_the_exact_noise_scale():
    """A batch of one has no within-batch spread: the record holds the exact noise scale at
    the epoch's end."""
    model, params, X, y, _ = problem((5, 1), "mse", "relu", 12)
    result = fg.fit(model, X, y, mode="sgd", epochs=2, params=params, track_noise=True,
                    dtype="float64")
    for rec in result.history:
        assert rec.noise.source == "exact"
    last = fg.noise_scale(model, result.params, X, y)
    assert result.history[-1].noise == last


def test_fit_without_tracking_has_no_noise_and_same_params():
    """Off by default (no noise in the records); on, the parameters are the same bits."""
    model, params, X, y, _ = problem((6, 9, 3), "softmax", "relu", 64)
    kw = dict(batch_size=8, epochs=2, params=params, lr=0.05)
    off, on = fg.fit(model, X, y, **kw), fg.fit(model, X, y, track_noise=True, **kw)
    assert all(r.noise is None for r in off.history)
    assert all(r.noise.source == "online" and r.noise.n == 64 for r in on.history)
    for a, b in zip(off.params, on.params, strict=True):
        np.testing.assert_array_equal(a, b)
    assert on.to_dict()["history"][0]["noise"]["source"] == "online"


@pytest.mark.parametrize("name", ["numpy", "numba-cpu"])
def test_epoch_in_parts_and_load_reproduce_one_call(name):
    """run_epoch(start, stop) in parts is the same epoch as one call, bit for bit; load()
    then the rest reproduces it too."""
    model, params, X, _, Y = problem((6, 9, 3), "softmax", "relu", 50)
    lrs = np.linspace(1e-2, 5e-3, 13)
    whole = engine(name, model, params, X, Y, optimizer=fg.Adam(lr=1e-2))
    whole.run_epoch(0, lrs)
    whole.run_epoch(1, lrs)
    parts = engine(name, model, params, X, Y, optimizer=fg.Adam(lr=1e-2))
    parts.run_epoch(0, lrs, 0, 5)
    saved = (parts.params(), parts.state(), parts.steps_done)
    parts.run_epoch(0, lrs, 5, 13)
    parts.run_epoch(1, lrs, 0, 1)
    parts.run_epoch(1, lrs, 1)
    assert parts.steps_done == whole.steps_done == 26
    np.testing.assert_array_equal(parts.params(), whole.params())
    np.testing.assert_array_equal(parts.state(), whole.state())
    parts.load(*saved)
    parts.run_epoch(0, lrs, 5)
    parts.run_epoch(1, lrs)
    np.testing.assert_array_equal(parts.params(), whole.params())


def test_bad_arguments_are_clear_errors():
    """Chunks out of range, load() of the wrong shapes, a non-boolean track_noise."""
    model, params, X, y, Y = problem((5, 1), "mse", "relu", 12)
    e = engine("numba-cpu", model, params, X, Y)
    lrs = np.full(3, 1e-3)
    with pytest.raises(ValueError, match="start=2, stop=1"):
        e.run_epoch(0, lrs, 2, 1)
    with pytest.raises(ValueError, match="load needs theta of shape"):
        e.load(np.zeros(3), e.state(), 0)
    with pytest.raises(TypeError, match="track_noise must be True or False"):
        fg.fit(model, X, y, track_noise="yes")
    with pytest.raises(ValueError, match="X"):
        fg.noise_scale(model, params, X[:, :2], y)
