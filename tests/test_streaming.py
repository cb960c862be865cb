"""Chunked data (fastgd.chunks, fastgd.session): the same steps as in-memory data when
unshuffled, a keyed chunk order when shuffled, clear errors, and memory bounded by chunks."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastgd as fg
from fastgd import chunks
from fastgd.session import Session


def data(n=700, d=6, seed=0, loss="mse"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    z = X @ rng.standard_normal(d)
    y = (z > 0).astype(float) if loss == "logistic" else z + 0.1 * rng.standard_normal(n)
    return X, y


def pieces(X, y, cuts=(0, 37, 37, 300, 301, 555, None)):
    """Uneven chunks, an empty one included."""
    cuts = [len(X) if c is None else c for c in cuts]
    return [(X[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode, batch, opt, drop_last", [
    ("mbgd", 32, fg.SGD(lr=0.05, momentum=0.9), False),
    ("mbgd", 50, fg.Adam(lr=0.01), True),
    ("sgd", None, fg.SGD(lr=0.01), False),
])
def test_unshuffled_chunks_take_the_in_memory_steps(backend, dtype, mode, batch, opt,
                                                    drop_last):
    """Batches are cut from the stream of rows (leftovers carried to the next chunk), so
    the run is fit on the concatenation, bit for bit."""
    X, y = data(loss="logistic")
    model = fg.Linear(6, 1, "logistic")
    kw = dict(mode=mode, batch_size=batch, epochs=2, optimizer=opt, shuffle=False,
              backend=backend, dtype=dtype, seed=4, drop_last=drop_last)
    ref = fg.fit(model, X, y, **kw)
    got = fg.fit(model, pieces(X, y), **kw)
    for a, b in zip(ref.params, got.params, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r.samples for r in got.history] == [r.samples for r in ref.history]
    np.testing.assert_allclose([r.train_loss for r in got.history],
                               [r.train_loss for r in ref.history], rtol=1e-6)


def test_mlp_chunks_equal_in_memory():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((400, 5))
    y = rng.integers(0, 3, 400)
    model = fg.MLP([5, 16, 3])
    kw = dict(batch_size=24, epochs=2, shuffle=False, seed=0, lr=0.1, dtype="float64")
    ref = fg.fit(model, X, y, **kw)
    got = fg.fit(model, chunks.from_arrays(X, y, chunk_rows=70), **kw)
    for a, b in zip(ref.params, got.params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_one_array_session_is_fit_with_its_shuffle():
    """A session's epoch over one array is fit's epoch (same keyed shuffle)."""
    X, y = data()
    ref = fg.fit(fg.Linear(6), X, y, batch_size=16, epochs=3, seed=9, dtype="float64")
    s = Session(fg.Linear(6), batch_size=16, epochs=3, seed=9, dtype="float64")
    for _ in range(3):
        s.epoch(X, y)
    for a, b in zip(ref.params, s.params(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_shuffled_chunk_order_is_keyed_and_new_each_epoch():
    X, y = data(n=1000)
    src = chunks.from_arrays(X, y, chunk_rows=100)
    orders = [[i for i, _ in src.visit(7, e, True)] for e in range(3)]
    for o in orders:
        assert sorted(o) == list(range(10))
    assert orders[0] != orders[1] != orders[2]
    assert orders[0] == [i for i, _ in src.visit(7, 0, True)]
    assert [i for i, _ in src.visit(7, 0, False)] == list(range(10))


def test_shuffled_chunks_visit_every_row_once_and_train():
    """Each epoch trains on every row once; the same seed gives the same bits; the loss
    lands near a full row shuffle's."""
    X, y = data(n=2000)
    kw = dict(batch_size=32, epochs=4, seed=1, lr=0.05, dtype="float64")
    a = fg.fit(fg.Linear(6), chunks.from_arrays(X, y, 300), **kw)
    b = fg.fit(fg.Linear(6), chunks.from_arrays(X, y, 300), **kw)
    full = fg.fit(fg.Linear(6), X, y, **kw)
    assert [r.samples for r in a.history] == [2000 * (e + 1) for e in range(4)]
    np.testing.assert_array_equal(a.params[0], b.params[0])
    assert abs(a.history[-1].train_loss - full.history[-1].train_loss) < \
        0.05 * full.history[-1].train_loss + 1e-3


def test_generator_reads_once():
    X, y = data()
    gen = (p for p in pieces(X, y))
    with pytest.raises(ValueError, match="one-shot"):
        fg.fit(fg.Linear(6), gen, epochs=2)
    res = fg.fit(fg.Linear(6), (p for p in pieces(X, y)), epochs=1, shuffle=False)
    assert res.history[-1].samples == len(X)


@pytest.mark.parametrize("kw, match", [
    (dict(mode="bgd"), "one chunk"),
    (dict(shuffle="once"), "shuffle='once'"),
    (dict(eval_every=1), "eval_every"),
])
def test_settings_that_need_memory_are_refused(kw, match):
    X, y = data()
    with pytest.raises(ValueError, match=match):
        fg.fit(fg.Linear(6), pieces(X, y), **kw)


def test_bad_chunks_are_clear_errors():
    X, y = data()
    with pytest.raises(ValueError, match="chunk 1's X has 4 features"):
        fg.fit(fg.Linear(6), [(X[:10], y[:10]), (X[10:20, :4], y[10:20])])
    with pytest.raises(ValueError, match="dtype"):
        fg.fit(fg.Linear(6), [(X[:10], y[:10]), (X[10:20].astype(np.float32), y[10:20])])
    with pytest.raises(ValueError, match="NaN"):
        bad = X[10:20].copy()
        bad[3, 2] = np.nan
        fg.fit(fg.Linear(6), [(X[:10], y[:10]), (bad, y[10:20])])
    with pytest.raises(ValueError, match="pairs"):
        fg.fit(fg.Linear(6), [X[:10]])
    with pytest.raises(ValueError, match="no rows"):
        fg.fit(fg.Linear(6), [])


def test_npy_reader_equals_the_arrays(tmp_path):
    X, y = data(n=999)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    src = chunks.from_npy(tmp_path / "X.npy", tmp_path / "y.npy", chunk_rows=128)
    assert src.n_chunks == 8
    Xc, yc = src.chunk(7)
    np.testing.assert_array_equal(Xc, X[896:])
    np.testing.assert_array_equal(yc, y[896:])
    kw = dict(batch_size=32, epochs=2, shuffle=False, lr=0.05, dtype="float64")
    a = fg.fit(fg.Linear(6), src, **kw)
    b = fg.fit(fg.Linear(6), np.load(tmp_path / "X.npy", mmap_mode="r"), y, **kw)
    np.testing.assert_array_equal(a.params[0], b.params[0])
    np.save(tmp_path / "F.npy", np.asfortranarray(X))
    with pytest.raises(ValueError, match="Fortran"):
        chunks.from_npy(tmp_path / "F.npy", y)


# ----------------------------------------------------------------------------- Dask
def test_dask_arrays_stream_block_by_block():
    da = pytest.importorskip("dask.array")
    X, y = data(n=900)
    dX, dy = da.from_array(X, chunks=(200, 6)), da.from_array(y, chunks=250)
    kw = dict(batch_size=32, epochs=2, shuffle=False, lr=0.05, dtype="float64")
    a = fg.fit(fg.Linear(6), dX, dy, **kw)
    b = fg.fit(fg.Linear(6), X, y, **kw)
    np.testing.assert_array_equal(a.params[0], b.params[0])


def test_dask_ml_incremental_with_a_local_cluster():
    """dask-ml's Incremental drives GDClassifier.partial_fit block by block on a local
    cluster this test starts and stops."""
    pytest.importorskip("sklearn")
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    from fastgd.sklearn import GDClassifier

    X, y = data(n=4000, loss="logistic")
    dX, dy = da.from_array(X, chunks=(500, 6)), da.from_array(y.astype(int), chunks=500)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        inc = wrappers.Incremental(GDClassifier(random_state=0, eta0=0.05),
                                   scoring="accuracy")
        inc.fit(dX, dy, classes=[0, 1])
        est = inc.estimator_
        assert est.n_iter_ == 8  # one partial_fit per block
        assert est.t_ == 4000
        assert inc.score(dX, dy) > 0.9


# ----------------------------------------------------------------------------- memory
MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import fastgd as fg
    from fastgd import chunks

    path, y_path = sys.argv[1], sys.argv[2]
    limit_mb, chunk_rows = int(sys.argv[3]), int(sys.argv[4])
    model = fg.Linear(64, 1)
    small = chunks.from_npy(path, y_path, chunk_rows=chunk_rows)
    X0, y0 = small.chunk(0)
    fg.fit(model, [(X0, y0)], batch_size=256, epochs=1)  # compile before measuring
    def vm(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (vm("VmData:") + limit_mb * 2**20, hard))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del X0, y0
    res = fg.fit(model, small, batch_size=256, epochs=1, lr=1e-3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(res.history[-1].samples, base, peak, vm("VmRSS:"))
""")


def test_streamed_fit_stays_within_a_few_chunks(tmp_path):
    """A data set four times a memory limit (RLIMIT_DATA, imposed in a child process after
    compiling) trains in one epoch, and the peak resident memory grows by a few chunks."""
    limit_mb, chunk_rows, d = 100, 16384, 64  # chunks of 4 MiB
    n = 4 * limit_mb * 2**20 // (4 * d)
    X = np.lib.format.open_memmap(tmp_path / "X.npy", "w+", np.float32, (n, d))
    rng = np.random.default_rng(0)
    for a in range(0, n, 1 << 20):
        X[a:a + (1 << 20)] = rng.standard_normal((min(1 << 20, n - a), d), np.float32)
    y = np.asarray(X[:, 0]) * 2
    X.flush()
    del X
    np.save(tmp_path / "y.npy", y)
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "X.npy"),
                          str(tmp_path / "y.npy"), str(limit_mb), str(chunk_rows)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NUMBA_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    samples, base, peak, _ = map(int, out.stdout.split()[-4:])
    assert samples == n
    chunk_bytes = chunk_rows * d * 4
    assert peak - base < 8 * chunk_bytes + y.nbytes, (base, peak)

