"""The numba-cpu backend against the NumPy reference backend, across the whole matrix."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from backend_check import assert_same, fit_both, make_problem

import fastgd as fg
from fastgd.backends import numba_cpu

MODELS = [
    ((7, 1), "mse", "relu"),
    ((7, 3), "mse", "relu"),
    ((7, 1), "logistic", "relu"),
    ((7, 4), "softmax", "relu"),
    ((7, 9, 4), "softmax", "relu"),
    ((7, 9, 4), "softmax", "tanh"),
    ((7, 9, 5, 1), "mse", "sigmoid"),
    ((7, 6, 5, 4, 2), "logistic", "tanh"),
    ((7, 20, 17, 3), "softmax", "relu"),  # wide layers (n_out >= dense.WIDE) and a narrow one
    ((5, 16, 18), "mse", "sigmoid"),
]
OPTIMIZERS = [
    dict(momentum=0.0),
    dict(momentum=0.9),
    dict(momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(momentum=0.5, weight_decay=0.1),
]
# batch 4 on 61 rows ends on a one-row step (the rank-1 path inside a batch epoch)
MODES = [("sgd", None), ("mbgd", 4), ("mbgd", 8), ("mbgd", 61), ("bgd", None)]
def _both(model, X, y, **kw):
    return fit_both(model, X, y, "numba-cpu", **kw)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mode,bs", MODES)
@pytest.mark.parametrize("sizes,loss,act", MODELS)
def test_matches_reference_across_models_and_modes(sizes, loss, act, mode, bs, dtype):
    """Every model and mode, shuffled, momentum + Nesterov + weight decay."""
    model = fg.Model(sizes, loss=loss, activation=act)
    X, y = make_problem(sizes, loss, 61, dtype)
    kw = dict(mode=mode, batch_size=bs, epochs=2, lr=0.05, momentum=0.9, nesterov=True,
              weight_decay=0.01, seed=int(np.random.default_rng().integers(1000)), dtype=dtype)
    assert_same(*_both(model, X, y, **kw), dtype)


@pytest.mark.parametrize("opt", OPTIMIZERS)
@pytest.mark.parametrize("shuffle", [True, False])
def test_matches_reference_across_optimizers(opt, shuffle):
    """Plain SGD, momentum, Nesterov, weight decay; with and without shuffling."""
    model = fg.MLP([7, 9, 4], activation="tanh", loss="softmax")
    X, y = make_problem(model.sizes, "softmax", 50)
    kw = dict(mode="mbgd", batch_size=7, epochs=3, lr=0.1, shuffle=shuffle, dtype="float64",
              **opt)
    assert_same(*_both(model, X, y, **kw), "float64")


def test_drop_last_and_val_loss():
    """drop_last skips the partial batch on both backends; val loss is recorded."""
    model = fg.Linear(7, 1)
    X, y = make_problem(model.sizes, "mse", 50)
    Xv, yv = make_problem(model.sizes, "mse", 20)
    kw = dict(mode="mbgd", batch_size=8, epochs=2, lr=0.05, drop_last=True, dtype="float64",
              X_val=Xv, y_val=yv)
    ref, got = _both(model, X, y, **kw)
    assert_same(ref, got, "float64")
    assert got.steps == 2 * 6 and got.history[-1].samples == 2 * 48
    assert np.isclose(got.history[-1].val_loss, ref.history[-1].val_loss)


@pytest.fixture
def small_groups(monkeypatch):
    """Force steps to split into several parallel groups even on tiny batches."""
    monkeypatch.setattr(numba_cpu, "MIN_GROUP_FLOPS", 1)


@pytest.mark.parametrize("sizes,loss", [((7, 1), "mse"), ((7, 1), "logistic"), ((7, 3), "mse"),
                                        ((7, 9, 4), "softmax")])
def test_parallel_groups_match_reference(small_groups, sizes, loss):
    """Row groups reduced in a fixed order still give the reference result."""
    model = fg.Model(sizes, loss=loss, activation="relu")
    X, y = make_problem(sizes, loss, 300)
    kw = dict(mode="mbgd", batch_size=100, epochs=2, lr=0.05, momentum=0.9, dtype="float64")
    assert_same(*_both(model, X, y, **kw), "float64")


@pytest.mark.parametrize("model", [fg.MLP([7, 9, 4]), fg.Linear(7, 1, loss="logistic")],
                         ids=["mlp", "logistic"])
def test_same_result_for_any_thread_count(small_groups, model):
    """Groups depend on the batch, not on the threads: 1 and 2 threads agree bitwise."""
    X, y = make_problem(model.sizes, model.loss, 300)
    kw = dict(mode="mbgd", batch_size=100, epochs=2, lr=0.05, dtype="float32",
              backend="numba-cpu")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fg.fit(model, X, y, **kw)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = fg.fit(model, X, y, **kw)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one.params, many.params, strict=True):
        assert np.array_equal(a, b)


def test_same_seed_same_result_bitwise():
    """Determinism on one backend: the same seed reproduces the run exactly."""
    model = fg.Linear(7, 4, loss="softmax")
    X, y = make_problem(model.sizes, "softmax", 80)
    a = fg.fit(model, X, y, batch_size=5, epochs=2, seed=3, backend="numba-cpu")
    b = fg.fit(model, X, y, batch_size=5, epochs=2, seed=3, backend="numba-cpu")
    c = fg.fit(model, X, y, batch_size=5, epochs=2, seed=4, backend="numba-cpu")
    assert all(np.array_equal(p, q) for p, q in zip(a.params, b.params, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a.params, c.params, strict=True))
