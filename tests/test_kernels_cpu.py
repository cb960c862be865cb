"""The numba-cpu backend against the NumPy reference backend, across the whole matrix."""

from __future__ import annotations

import backend_matrix
import numba
import numpy as np
import pytest
from backend_check import assert_same, fit_both, make_problem

import fastgd as fg
from fastgd.backends import numba_cpu

CASES = backend_matrix.cases()


def _both(model, X, y, **kw):
    return fit_both(model, X, y, "numba-cpu", **kw)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_reference(case):
    """The whole matrix (models, losses, activations, modes, optimizers, dtypes), shuffled."""
    backend_matrix.check(case, "numba-cpu")


@pytest.mark.parametrize("name", list(backend_matrix.OPTIMIZERS))
def test_matches_reference_unshuffled(name):
    """Every optimizer without shuffling, on an MLP over three epochs."""
    case = backend_matrix.Case((7, 9, 4), "softmax", "tanh", "mbgd", 7, name, "float64")
    backend_matrix.check(case, "numba-cpu", n=50, epochs=3, shuffle=False)


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


@pytest.fixture
def small_blocks(monkeypatch):
    """``shuffle="blocks"`` with 16-row blocks on 7 features (several full blocks and a
    tail on the tests' small data)."""
    from fastgd.kernels import permutation

    monkeypatch.setattr(permutation, "BLOCK_BYTES", 16 * 4 * 7)


BLOCK_CASES = [c for c in CASES if c.sizes[0] == 7 and c.dtype == "float64"
               and c.optimizer in ("sgd", "adam")][:12]


@pytest.mark.parametrize("case", BLOCK_CASES, ids=[c.id for c in BLOCK_CASES])
def test_block_shuffle_matches_reference(small_blocks, case):
    """``shuffle="blocks"``: the kernels visit the reference's block order (16-row blocks,
    a tail, every mode)."""
    backend_matrix.check(case, "numba-cpu", shuffle="blocks")


@pytest.mark.parametrize("sizes,loss", [((7, 1), "logistic"), ((7, 9, 4), "softmax")])
def test_block_shuffle_in_parallel_groups(small_groups, small_blocks, sizes, loss):
    """Parallel groups of a block-shuffled step (each group primes its own look-ahead)."""
    model = fg.Model(sizes, loss=loss, activation="relu")
    X, y = make_problem(sizes, loss, 300)
    kw = dict(mode="mbgd", batch_size=100, epochs=2, lr=0.05, shuffle="blocks",
              dtype="float64")
    assert_same(*_both(model, X, y, **kw), "float64")


@pytest.mark.parametrize("optimizer", ["sgd", "adam-amsgrad-wd"])
@pytest.mark.parametrize("model", [fg.MLP([7, 9, 4]), fg.Linear(7, 1, loss="logistic")],
                         ids=["mlp", "logistic"])
def test_same_result_for_any_thread_count(small_groups, model, optimizer):
    """Groups depend on the batch, not on the threads: 1 and 2 threads agree bitwise."""
    X, y = make_problem(model.sizes, model.loss, 300)
    kw = dict(mode="mbgd", batch_size=100, epochs=2, dtype="float32", backend="numba-cpu",
              optimizer=backend_matrix.optimizer(optimizer))
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


@pytest.mark.parametrize("loss", ["mse", "softmax"])
@pytest.mark.parametrize("n,batch_size,drop_last", [(10, 3, False), (10, 3, True), (9, 3, False),
                                                   (1, 1, False), (7, 7, False)])
def test_kernel_step_arithmetic_is_the_plans(n, batch_size, drop_last, loss):
    """The compiled kernels' step bounds and mean scales equal ``Plan.batches`` (the one
    definition the other backends use)."""
    from numba import njit

    from fastgd.kernels.cpu import common

    model = fg.Model((3, 2), loss=loss)
    X, y = make_problem(model.sizes, loss, n)
    run = fg.prepare(model, X, y, batch_size=batch_size, drop_last=drop_last,
                     backend="numba-cpu", dtype="float64")
    plan, (config, _) = run.plan, run.engine._config(0, n)

    @njit
    def bounds(n, cfg, n_out):
        out = []
        for step in range(cfg.start, cfg.stop):
            out.append(common.step_bounds(step, n, cfg, n_out))
        return out

    assert bounds(n, config, 2) == list(plan.batches(n))


@pytest.mark.parametrize("size, parts", [(1, 1), (1000, 3), (4099, 8), (5, 8)])
def test_read_reductions_sum_every_element(size, parts):
    """The bandwidth probes read every element once, whatever the chunking (integers in
    float32, so the sums are exact)."""
    from fastgd.kernels.cpu import bandwidth

    a = np.random.default_rng(size).integers(-50, 50, size).astype(np.float32)
    assert bandwidth.serial_read(a) == a.sum(dtype=np.float64)
    assert bandwidth.parallel_read(a, parts) == a.sum(dtype=np.float64)
