"""Data-parallel training on MPI ranks. Run under ``mpiexec -n 2 python -m pytest
tests/mpi -p no:cacheprovider`` (``.ci/run`` does); skips in a single process or without
mpi4py.

With ``shuffle=False``, ``P`` ranks at per-rank batch ``b`` equal one process training with
batch ``P * b`` on the shards interleaved batch by batch, to float rounding; every rank ends
with the same bits."""

import numpy as np
import pytest

MPI = pytest.importorskip("mpi4py.MPI")
pytest.importorskip("numba_mpi")
COMM = MPI.COMM_WORLD
if COMM.Get_size() < 2:
    pytest.skip("run under mpiexec -n 2 (a single process has nothing to exchange)",
                allow_module_level=True)

import fastgd as fg  # noqa: E402

P, RANK = COMM.Get_size(), COMM.Get_rank()


def shards(model, m, seed):
    """Every rank's shard of ``m`` rows of one global data set (the same draw on every
    rank), and the whole set."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P * m, model.n_features))
    if model.loss == "softmax":
        y = rng.integers(0, model.n_outputs, P * m)
    elif model.loss == "logistic":
        y = (rng.random(P * m) > 0.5).astype(float)
    else:
        y = rng.standard_normal(P * m)
    return X, y


def interleaved(X, y, m, b):
    """The shards laid out as [shard 0 batch 0, shard 1 batch 0, ..., shard 0 batch 1, ...]."""
    order = []
    for start in range(0, m, b):
        for r in range(P):
            order.extend(range(r * m + start, r * m + min(start + b, m)))
    return X[order], y[order]


def same_on_every_rank(arrays):
    everyone = COMM.allgather([np.asarray(a) for a in arrays])
    return all(np.array_equal(a, b) for other in everyone for a, b in zip(other, everyone[0],
                                                                           strict=True))


CASES = [
    (fg.Linear(5, 1), "mbgd", 8, fg.SGD(lr=0.05, momentum=0.9)),
    (fg.Linear(5, 1, "logistic"), "sgd", None, fg.SGD(lr=0.05)),
    (fg.Linear(5, 3, "softmax"), "mbgd", 7, fg.Adam(lr=0.01)),
    (fg.MLP([5, 8, 3]), "mbgd", 8, fg.Adam(lr=0.01)),
    (fg.Linear(5, 1), "bgd", None, fg.SGD(lr=0.1)),
]


@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("model, mode, b, opt", CASES, ids=lambda v: getattr(v, "loss", v))
def test_ranks_equal_one_process_on_the_interleaved_batches(backend, dtype, model, mode, b,
                                                            opt):
    m = 45  # not a multiple of the batch: the partial last step too
    X, y = shards(model, m, seed=11)
    mine = slice(RANK * m, (RANK + 1) * m)
    kw = dict(epochs=2, shuffle=False, optimizer=opt, backend=backend, dtype=dtype)
    res = fg.fit(model, X[mine], y[mine], mode=mode, batch_size=b, comm=COMM, **kw)
    assert same_on_every_rank(res.params)
    assert same_on_every_rank([[r.train_loss for r in res.history]])
    b_local = {"sgd": 1, "bgd": m}.get(mode, b)
    Xi, yi = interleaved(X, y, m, b_local)
    ref = fg.fit(model, Xi, yi, mode="mbgd", batch_size=P * b_local, **kw)
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == "float64" else dict(rtol=2e-4, atol=1e-5)
    for a, c in zip(res.params, ref.params, strict=True):
        np.testing.assert_allclose(a, c, **tol)
    np.testing.assert_allclose([r.train_loss for r in res.history],
                               [r.train_loss for r in ref.history], rtol=1e-5)


def test_shuffled_ranks_agree_bitwise_and_train():
    model = fg.MLP([5, 8, 3])
    X, y = shards(model, 200, seed=3)
    mine = slice(RANK * 200, (RANK + 1) * 200)
    res = fg.fit(model, X[mine], y[mine], batch_size=16, epochs=3, comm=COMM, lr=0.1)
    assert same_on_every_rank(res.params)
    assert res.history[-1].train_loss < res.history[0].train_loss


@pytest.mark.parametrize("mode, batch", [("mbgd", 8), ("bgd", None)])
def test_unequal_shards_train_on_the_shortest(mode, batch):
    X, y = shards(fg.Linear(5, 1), 60, seed=2)
    n = 60 - 7 * RANK
    res = fg.fit(fg.Linear(5, 1), X[:n], y[:n], mode=mode, batch_size=batch, epochs=1,
                 comm=COMM)
    assert res.history[-1].samples == 60 - 7 * (P - 1)
    assert same_on_every_rank(res.params)


def test_a_disagreement_is_an_error_on_every_rank_naming_rank_and_field():
    X, y = shards(fg.Linear(5, 1), 40, seed=1)
    with pytest.raises(ValueError, match=r"rank 1 disagrees with rank 0 on batch_size"):
        fg.fit(fg.Linear(5, 1), X[:40], y[:40], batch_size=8 + (RANK == 1), comm=COMM)


def test_bad_data_on_one_rank_stops_every_rank():
    X, y = shards(fg.Linear(5, 1), 40, seed=1)
    X = X[:40].copy()
    if RANK == 1:
        X[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"rank 1: ValueError: X contains NaN"):
        fg.fit(fg.Linear(5, 1), X, y[:40], batch_size=8, comm=COMM)


def test_divergence_raises_on_every_rank_with_the_history():
    X, y = shards(fg.Linear(5, 1), 64, seed=4)
    with pytest.raises(fg.DivergenceError) as info:
        fg.fit(fg.Linear(5, 1), X[:64] * 1e3, y[:64], batch_size=8, epochs=3, lr=10.0,
               comm=COMM, dtype="float64")
    assert info.value.result.history


@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_local_sgd_every_step_is_gradient_averaging_for_plain_sgd(backend):
    """Averaging the parameters after every plain-SGD step is averaging the gradients."""
    model = fg.Linear(5, 3, "softmax")
    X, y = shards(model, 40, seed=8)
    mine = slice(RANK * 40, (RANK + 1) * 40)
    kw = dict(batch_size=8, epochs=2, shuffle=False, lr=0.1, backend=backend,
              dtype="float64", comm=COMM)
    grads = fg.fit(model, X[mine], y[mine], **kw)
    local = fg.fit(model, X[mine], y[mine], sync_every=1, **kw)
    for a, c in zip(grads.params, local.params, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_local_sgd_ends_every_epoch_in_agreement(backend):
    model = fg.MLP([5, 8, 3])
    X, y = shards(model, 120, seed=9)
    mine = slice(RANK * 120, (RANK + 1) * 120)
    res = fg.fit(model, X[mine], y[mine], batch_size=8, epochs=3, sync_every=4,
                 optimizer=fg.Adam(lr=0.01), backend=backend, comm=COMM)
    assert same_on_every_rank(res.params)
    assert res.history[-1].train_loss < res.history[0].train_loss
    assert res.exchange_s > 0


def test_compare_runs_data_parallel():
    """``fg.compare(..., comm=...)`` passes the communicator to every fit: each rank gets
    the same rows (rates per rank, losses over all ranks)."""
    X, y = shards(fg.Linear(5, 1), 200, seed=6)
    mine = slice(RANK * 200, (RANK + 1) * 200)
    table = fg.compare(fg.Linear(5, 1), X[mine], y[mine], modes=("mbgd",), batch_sizes=(16,),
                       backends=("numpy",), epochs=2, repeats=1, comm=COMM)
    rows = table.rows
    assert [r["status"] for r in rows] == ["ok"]
    losses = COMM.allgather(rows[0]["final_train_loss"])
    assert losses[0] == losses[1]
