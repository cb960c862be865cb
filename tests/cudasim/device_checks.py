"""Checks of a GPU backend's partial epochs, ``load``, ``exact_noise``, online noise
tracking and the in-kernel batch loss (``epoch_loss``) against the NumPy reference backend,
shared by the CUDA-simulator suite (``test_numba_cuda.py``) and the CuPy GPU tests
(``tests/test_cupy_backend.py``).

The backends are driven directly through the ``Backend`` protocol (a ``Plan`` from
``Plan.for_model``, ``prepare``, ``warmup``, ``run_epoch``...), as ``fit`` does. Imports
fastgd (hence numba) only inside the functions, so the simulator's conftest can set
``NUMBA_ENABLE_CUDASIM`` first.
"""

from __future__ import annotations

import numpy as np
from backend_check import make_problem

# (sizes, loss, activation) of the exact-noise checks: linear mse with one and three
# outputs, logistic, softmax, an MLP with two hidden layers
NOISE_MODELS = [
    ((5, 1), "mse", "relu"),
    ((5, 3), "mse", "relu"),
    ((5, 2), "logistic", "relu"),
    ((5, 4), "softmax", "relu"),
    ((5, 6, 4, 3), "softmax", "tanh"),
]
ONLINE_IDS = ["mse1-b5", "mse3-b5-last-row-skipped", "logistic-bgd", "mlp-b10", "softmax-sgd"]
NOISE_TOL = {"float64": dict(rtol=1e-9, atol=0.0), "float32": dict(rtol=2e-3, atol=0.0)}

# (sizes, loss, activation) of the batch-loss checks: linear mse with one and three
# outputs, logistic, a softmax MLP
LOSS_MODELS = [
    ((5, 1), "mse", "relu"),
    ((5, 3), "mse", "relu"),
    ((5, 2), "logistic", "relu"),
    ((5, 6, 3), "softmax", "tanh"),
]
LOSS_TOL = {"float64": dict(rtol=1e-10, atol=0.0), "float32": dict(rtol=1e-5, atol=0.0)}


def row_id(row) -> str:
    """A test id for a ``(sizes, loss, activation)`` row, e.g. ``5-6-4-3-softmax-tanh``."""
    return "-".join(map(str, row[0])) + f"-{row[1]}-{row[2]}"


def model_of(sizes, loss, activation):
    """The fastgd model of a ``(sizes, loss, activation)`` row."""
    import fastgd as fg

    return fg.Model(sizes, loss=loss, activation=activation)


def data(model, n, dtype, seed=None):
    """Random ``(X, Y)`` of ``n`` rows in the kernels' layout (what ``prepare`` gets)."""
    from fastgd.validate import check_features, check_targets

    dt = np.dtype(dtype)
    X, y = make_problem(model.sizes, model.loss, n, dt, seed)
    X = check_features(X, model.n_features, dt, "X")
    return X, check_targets(y, model, len(X), dt, "y")


def engine(backend, model, X, Y, dtype, *, batch_size=5, mode="mbgd", optimizer=None,
           shuffle=True, seed=3, track_noise=False, theta0=None):
    """A prepared and warmed-up backend ``backend`` for ``model`` on ``(X, Y)``."""
    import fastgd as fg
    from fastgd.kernels.reference import flatten
    from fastgd.plan import Plan

    dt = np.dtype(dtype)
    plan = Plan.for_model(model, dt, mode, batch_size, shuffle=shuffle, seed=seed,
                          optimizer=optimizer, track_noise=track_noise)
    e = fg.backends.create(backend)
    e.prepare(plan, X, Y, flatten(model.init_params(seed, dt)) if theta0 is None else theta0)
    e.warmup()
    return e


def rates(e, epoch=0):
    """Per-step learning rates of one epoch, different for every step (a wrong index into
    ``lrs`` shows)."""
    steps = e.plan.steps_per_epoch(len(e.X))
    return 0.05 * (1.0 + 0.1 * np.arange(steps)) / (1 + epoch)


def check_exact_noise(backend, row, dtype, n=24):
    """``exact_noise`` on the training data (in place) and on another data set matches the
    reference backend's at the same parameters (after an epoch, so away from the init)."""
    model = model_of(*row)
    X, Y = data(model, n, dtype)
    Xv, Yv = data(model, n // 2 + 3, dtype)
    ref = engine("numpy", model, X, Y, dtype)
    got = engine(backend, model, X, Y, dtype)
    for e in (ref, got):
        e.run_epoch(0, rates(e))
    got.load(ref.params(), ref.state(), ref.steps_done)  # the very same parameters
    for Xs, Ys in ((X, Y), (Xv, Yv)):
        want = ref.exact_noise(Xs, Ys)
        have = got.exact_noise(Xs, Ys)
        assert all(isinstance(v, float) for v in have)
        np.testing.assert_allclose(have, want, **NOISE_TOL[np.dtype(dtype).name])
        assert have == got.exact_noise(Xs, Ys)  # bitwise reproducible
    assert got.epoch_noise().tolist() == [0.0, 0.0, 0.0]  # not tracking: nothing added


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def check_chunked_epochs(backend, row, dtype, optimizer, n=24, parts=(0, 2, 2, 4, None),
                         track_noise=False):
    """Epochs run in consecutive parts (an empty one included) give the same parameters,
    state, step counter and noise sums, bitwise, as one call per epoch; both match the
    reference."""
    model = model_of(*row)
    X, Y = data(model, n, dtype)
    whole = engine(backend, model, X, Y, dtype, optimizer=optimizer, track_noise=track_noise)
    split = engine(backend, model, X, Y, dtype, optimizer=optimizer, track_noise=track_noise)
    ref = engine("numpy", model, X, Y, dtype, optimizer=optimizer, track_noise=track_noise)
    for epoch in range(2):
        whole.run_epoch(epoch, rates(whole, epoch))
        ref.run_epoch(epoch, rates(ref, epoch))
        for start, stop in zip(parts[:-1], parts[1:], strict=True):
            split.run_epoch(epoch, rates(split, epoch), start, stop)
        assert split.steps_done == whole.steps_done == ref.steps_done
        _same_bits(split.params(), whole.params())
        _same_bits(split.state(), whole.state())
        _same_bits(split.epoch_noise(), whole.epoch_noise())
    tol = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=2e-4, atol=2e-5)}
    np.testing.assert_allclose(whole.params(), ref.params(), **tol[np.dtype(dtype).name])
    np.testing.assert_allclose(whole.state(), ref.state(), **tol[np.dtype(dtype).name])


def check_load(backend, row, dtype, optimizer, n=24):
    """``load`` of a saved point, then an epoch, gives the bits of the run that went on
    from that point (a backend that has run something else first)."""
    model = model_of(*row)
    X, Y = data(model, n, dtype)
    fresh = engine(backend, model, X, Y, dtype, optimizer=optimizer)
    fresh.run_epoch(0, rates(fresh))
    saved = fresh.params(), fresh.state(), fresh.steps_done
    fresh.run_epoch(1, rates(fresh, 1))
    other = engine(backend, model, X, Y, dtype, optimizer=optimizer, seed=3)
    other.run_epoch(0, 3 * rates(other))
    other.run_epoch(1, rates(other))
    other.load(*saved)
    assert other.steps_done == saved[2]
    _same_bits(other.params(), saved[0])
    _same_bits(other.state(), saved[1])
    other.run_epoch(1, rates(other, 1))
    assert other.steps_done == fresh.steps_done
    _same_bits(other.params(), fresh.params())
    _same_bits(other.state(), fresh.state())


def check_online_noise(backend, row, dtype, n, batch_size, mode="mbgd", optimizer=None):
    """``epoch_noise`` with ``track_noise`` matches the reference backend's sums per epoch
    (one-row steps skipped, the count exact), is reset by reading it, and tracking leaves
    the parameters' bits as an untracked run's."""
    model = model_of(*row)
    X, Y = data(model, n, dtype)
    kw = dict(batch_size=batch_size, mode=mode, optimizer=optimizer)
    ref = engine("numpy", model, X, Y, dtype, track_noise=True, **kw)
    got = engine(backend, model, X, Y, dtype, track_noise=True, **kw)
    off = engine(backend, model, X, Y, dtype, track_noise=False, **kw)
    tol = NOISE_TOL[np.dtype(dtype).name]
    for epoch in range(2):
        for e in (ref, got, off):
            e.run_epoch(epoch, rates(e, epoch))
        want, have = ref.epoch_noise(), got.epoch_noise()
        assert have.dtype == np.float64 and have.shape == (3,)
        assert have[2] == want[2] == sum(rows > 1 for _, rows, _ in ref.plan.batches(n))
        np.testing.assert_allclose(have[:2], want[:2], **tol)
        assert got.epoch_noise().tolist() == [0.0, 0.0, 0.0]  # reset by the read
        assert off.epoch_noise().tolist() == [0.0, 0.0, 0.0]
        _same_bits(got.params(), off.params())
        _same_bits(got.state(), off.state())


def check_untracked_launches_nothing_extra(backend, row, dtype):
    """Without ``track_noise`` an epoch never touches the noise kernels (they are replaced
    by ones that fail), and its bits are those of a tracked run's parameters."""
    model = model_of(*row)
    X, Y = data(model, 24, dtype)
    e = engine(backend, model, X, Y, dtype)

    def fail(*args, **kwargs):
        raise AssertionError("a noise kernel was launched without track_noise")

    class Failing:
        def __getitem__(self, launch):
            return fail

        __call__ = fail

    names = ("step_noise", "grad_norms", "grad_sq")
    e.kernels = e.kernels._replace(**{k: Failing() for k in names if k in e.kernels._fields})
    e.run_epoch(0, rates(e))
    e.run_epoch(1, rates(e, 1), 0, 2)
    e.run_epoch(1, rates(e, 1), 2)
    assert e.epoch_noise().tolist() == [0.0, 0.0, 0.0]


def _prepared(backend, row, dtype, X, y, **kw):
    """``fastgd.prepare`` of the model of ``row`` on ``backend`` (SGD with momentum, so the
    steps' losses depend on every earlier update)."""
    import fastgd as fg

    return fg.prepare(model_of(*row), X, y, backend=backend, dtype=dtype, lr=0.1,
                      momentum=0.9, seed=3, **kw)


def check_batch_loss(backend, row, dtype, n=24, batch_size=5, mode="mbgd", track_noise=False,
                     epochs=2):
    """``epoch_loss`` after each epoch equals the reference backend's (the rows-weighted mean
    of the steps' batch losses at their parameters before the update: a partial last batch
    weighs less); a second call, and one after warm-up or after no step, is None; the sums
    are untouched by ``warmup`` and reset by the read; an epoch run in parts (an empty one
    included) adds the very same sums as one call."""
    from backend_check import make_problem

    X, y = make_problem(row[0], row[1], n, np.dtype(dtype))
    kw = dict(mode=mode, batch_size=batch_size if mode == "mbgd" else None,
              track_noise=track_noise)
    ref, got, split = (_prepared(b, row, dtype, X, y, **kw)
                       for b in ("numpy", backend, backend))
    tol = LOSS_TOL[np.dtype(dtype).name]
    steps = ref.steps_per_epoch
    assert got.engine.epoch_loss() is None  # prepare's warm-up added nothing
    for epoch in range(epochs):
        lrs = got.rates(epoch)
        ref.run_epoch(epoch)
        got.run_epoch(epoch)
        cut = steps // 2
        for start, stop in ((0, cut), (cut, cut), (cut, None)):
            split.engine.run_epoch(epoch, lrs, start, stop)
        sums = got.engine.loss_sums()
        assert sums.dtype == np.float64 and sums.shape == (2,)
        assert sums[1] == ref.plan.samples_per_epoch(n)
        _same_bits(split.engine.loss_sums(), sums)
        if epoch == 0:
            got.engine.warmup()  # leaves the sums as they are
            _same_bits(got.engine.loss_sums(), sums)
        want, have = ref.engine.epoch_loss(), got.engine.epoch_loss()
        assert isinstance(have, float)
        np.testing.assert_allclose(have, want, **tol)
        assert have == split.engine.epoch_loss()
        for e in (ref, got, split):  # reset by the read
            assert e.engine.epoch_loss() is None
    got.engine.run_epoch(epochs, got.rates(epochs), 0, 0)  # no step: nothing to report
    assert got.engine.epoch_loss() is None
    assert got.engine.loss_sums().tolist() == [0.0, 0.0]
