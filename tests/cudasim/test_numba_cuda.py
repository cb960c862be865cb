"""The numba-cuda backend against the NumPy reference backend, under the CUDA simulator:
the backend matrix, partial epochs, ``load``, ``exact_noise``, online noise tracking and
the in-kernel batch loss (``device_checks.py``, shared with the CuPy GPU tests).

Sizes are tiny: the simulator runs one Python thread per CUDA thread.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (pip install numba-cuda)")

import backend_matrix  # noqa: E402
import device_checks  # noqa: E402
from backend_check import TOL, assert_same, fit_both, make_problem  # noqa: E402

import fastgd as fg  # noqa: E402
from fastgd.backends import numba_cuda  # noqa: E402
from fastgd.kernels import device_tables  # noqa: E402
from fastgd.kernels.cuda import dense  # noqa: E402
from fastgd.kernels.permutation import order  # noqa: E402
from fastgd.measure import device_peak  # noqa: E402

N = 24
# the matrix (tests/backend_matrix.py) on fewer models and modes: one Python thread per
# simulated CUDA thread
SIM_MODELS = [backend_matrix.MODELS[i] for i in (0, 1, 2, 3, 4, 6, 7)]
SIM_MODES = [("mbgd", 5), ("bgd", None), ("sgd", None)]
CASES = backend_matrix.cases(models=SIM_MODELS, modes=SIM_MODES,
                             optimizer_models=[backend_matrix.MODELS[i] for i in (0, 4)],
                             optimizer_modes=[("mbgd", 5), ("sgd", None)])


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    """Blocks of 8 threads and steps cut into about 4 tiles: few simulated threads and
    barriers per launch, and a 24-row step spans 4 blocks of 6-row tiles whose partial
    gradients the last block reduces in order."""
    monkeypatch.setattr(numba_cuda, "THREADS", 8)
    monkeypatch.setattr(device_tables, "TARGET_TILES", 4)


def _both(model, X, y, **kw):
    return fit_both(model, X, y, "numba-cuda", **kw)


@pytest.mark.parametrize("block_rows", [0, 16])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 24, 100])
def test_device_permutation_matches_numpy(n, block_rows):
    """The device shuffle visits the samples in the order of kernels.permutation (a row
    and a block shuffle)."""
    from numba import cuda

    seed = int(np.random.default_rng().integers(1 << 40))
    out = cuda.device_array(n, np.int64)
    table = dense.perm_table(seed, 2, n, True, block_rows)
    dense.permutation_kernel[-(-n // 32), 32](cuda.to_device(table), n, out)
    assert np.array_equal(out.copy_to_host(), order(table, n))
    dense.permutation_kernel[-(-n // 32), 32](cuda.to_device(dense.perm_table()), n, out)
    assert np.array_equal(out.copy_to_host(), np.arange(n))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_reference(case):
    """The backend matrix: models, losses, activations, modes, every optimizer, dtypes;
    shuffled, a partial last batch of 4."""
    backend_matrix.check(case, "numba-cuda", n=N)


@pytest.mark.parametrize("sizes,loss,mode,bs", [((5, 2), "mse", "mbgd", 10),
                                                ((5, 6, 3), "softmax", "mbgd", 7),
                                                ((5, 1), "logistic", "sgd", None)])
def test_block_shuffle_matches_reference(monkeypatch, sizes, loss, mode, bs):
    """``shuffle="blocks"`` (16-row blocks, the smallest: at least three full blocks, in a
    keyed order, and a tail) visits the reference's order on the device."""
    from fastgd.kernels import permutation

    monkeypatch.setattr(permutation, "BLOCK_BYTES", 16 * 4 * 5)
    case = backend_matrix.Case(sizes, loss, "relu", mode, bs, "sgd", "float64")
    backend_matrix.check(case, "numba-cuda", n=2 * (3 * 16 + 5), shuffle="blocks")


@pytest.mark.parametrize("name", list(backend_matrix.OPTIMIZERS))
def test_matches_reference_unshuffled(name):
    """Every optimizer without shuffling, on an MLP over three epochs."""
    case = backend_matrix.Case((5, 6, 3), "softmax", "tanh", "mbgd", 5, name, "float64")
    backend_matrix.check(case, "numba-cuda", n=N, epochs=3, shuffle=False)


@pytest.mark.parametrize("sizes,loss", [((5, 2), "mse"), ((5, 6, 3), "softmax")])
@pytest.mark.parametrize("mode,bs", [("mbgd", 10), ("bgd", None)])
def test_several_blocks_and_tiles(monkeypatch, sizes, loss, mode, bs):
    """Blocks of 4 threads, at most 2 blocks: a step spans several tiles per block and
    several blocks, whose partial gradients the last block reduces in order."""
    monkeypatch.setattr(numba_cuda, "THREADS", 4)
    monkeypatch.setattr(device_tables, "MAX_BLOCKS", 2)
    model = fg.Model(sizes, loss=loss, activation="relu")
    X, y = make_problem(sizes, loss, N)
    kw = dict(mode=mode, batch_size=bs, epochs=2, lr=0.05, momentum=0.9, dtype="float64")
    assert_same(*_both(model, X, y, **kw), "float64")


@pytest.mark.parametrize("sizes,loss,optimizer", [
    ((5, 6, 3), "softmax", fg.Adam(lr=0.01, weight_decay=0.01)),
    ((5, 2), "mse", fg.SGD(lr=0.05, momentum=0.9, nesterov=True)),
])
def test_launch_forms_give_the_same_bits(monkeypatch, sizes, loss, optimizer):
    """A step as one launch (its last block sums and updates), as two (the gradient pass,
    then a thread per parameter), and with the parameters read from global memory instead
    of a shared-memory copy: the same sums in the same order, so the same parameters and
    batch losses, bit for bit (a partial last batch, several blocks)."""
    model = fg.Model(sizes, loss=loss, activation="tanh")
    X, y = make_problem(sizes, loss, N)
    runs = []
    for fused_max, shared in ((1 << 30, True), (0, True), (1 << 30, False)):
        monkeypatch.setattr(device_tables, "FUSED_MAX", fused_max)
        if not shared:
            monkeypatch.setattr(device_tables, "weights_shared", lambda *a: False)
        runs.append(fg.fit(model, X, y, batch_size=7, epochs=2, seed=5, dtype="float32",
                           optimizer=optimizer, backend="numba-cuda"))
    for other in runs[1:]:
        for a, b in zip(runs[0].params, other.params, strict=True):
            np.testing.assert_array_equal(a, b)
        assert [r.train_loss for r in other.history] == [r.train_loss for r in runs[0].history]


def test_drop_last_and_val_loss():
    """drop_last skips the partial batch; validation data of another size is evaluated."""
    model = fg.Linear(5, 1)
    X, y = make_problem(model.sizes, "mse", N)
    Xv, yv = make_problem(model.sizes, "mse", 37)
    kw = dict(mode="mbgd", batch_size=5, epochs=2, lr=0.05, drop_last=True, dtype="float64",
              X_val=Xv, y_val=yv)
    ref, got = _both(model, X, y, **kw)
    assert_same(ref, got, "float64")
    assert got.steps == 2 * 4 and got.history[-1].samples == 2 * 20
    np.testing.assert_allclose([r.val_loss for r in got.history],
                               [r.val_loss for r in ref.history], **TOL["float64"])


def test_same_seed_same_result_bitwise():
    """The same seed reproduces the run exactly; another seed shuffles differently."""
    model = fg.MLP([5, 6, 3], activation="relu", loss="softmax")
    X, y = make_problem(model.sizes, "softmax", N)
    kw = dict(batch_size=5, epochs=2, lr=0.1, momentum=0.9, backend="numba-cuda")
    a = fg.fit(model, X, y, seed=3, **kw)
    b = fg.fit(model, X, y, seed=3, **kw)
    c = fg.fit(model, X, y, seed=4, **kw)
    assert all(np.array_equal(p, q) for p, q in zip(a.params, b.params, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a.params, c.params, strict=True))


@pytest.mark.parametrize("optimizer", [fg.SGD(lr=0.05), fg.Adam(lr=0.01)])
@pytest.mark.parametrize("n_val", [0, 37])
def test_memory_is_the_models_device_peak(optimizer, n_val):
    """memory() is the backend's own device peak (its buffers, the warm-up's copies, the
    validation data), exactly what the memory model predicts; measure_fit reports it
    beside the estimate; the device-wide reading is None under the simulator, at least the
    backend's own bytes on a GPU."""
    from fastgd.measure import estimate_memory, measure_fit

    model = fg.MLP([5, 6, 3], activation="tanh", loss="softmax")
    X, y = make_problem(model.sizes, "softmax", N)
    val = make_problem(model.sizes, "softmax", n_val) if n_val else (None, None)
    kw = dict(batch_size=5, epochs=1, backend="numba-cuda", optimizer=optimizer,
              X_val=val[0], y_val=val[1])
    run = fg.prepare(model, X, y, **kw)
    run.train()
    est = estimate_memory(run.plan, N, n_val, backend="numba-cuda")
    assert run.engine.memory() == device_peak(run.engine) == est.device_total > 0
    assert est.device_arrays["partial"] == run.engine.partial.nbytes
    if numba.config.ENABLE_CUDASIM:  # the simulator reports no device memory
        assert run.engine.device_memory() is None
    else:
        assert run.engine.device_memory() >= est.device_total
    _, report = measure_fit(model, X, y, **kw)
    assert report.device_peak_bytes == report.estimate.device_total == est.device_total


def _out_of_memory_error() -> Exception:
    """CUDA_ERROR_OUT_OF_MEMORY as the driver in use raises it: the real driver's
    ``CudaAPIError`` takes ``(code, msg)``, the simulator's one message."""
    import numba
    from numba.cuda.cudadrv.driver import CudaAPIError

    msg = "CUDA_ERROR_OUT_OF_MEMORY: out of memory"
    return CudaAPIError(msg) if numba.config.ENABLE_CUDASIM else CudaAPIError(2, msg)


def test_out_of_memory_says_what_did_not_fit(monkeypatch):
    """A CUDA out-of-memory error in prepare becomes a MemoryError naming the buffers the
    run needs (none grows with the batch size) and what to do."""
    def no_memory(*args, **kwargs):
        raise _out_of_memory_error()

    monkeypatch.setattr(numba_cuda.cuda, "device_array", no_memory)
    model = fg.Linear(5, 1)
    X, y = make_problem(model.sizes, "mse", N)
    with pytest.raises(MemoryError, match=r"out of memory placing the run.*needs about "
                                          r"[0-9.]+ KiB at its peak; largest: X .*"
                                          r"batch size does not change.*numba-cpu"):
        fg.fit(model, X, y, batch_size=5, epochs=1, backend="numba-cuda")


def test_registry_under_the_simulator(monkeypatch):
    """Usable on the simulator only with FASTGD_ALLOW_CUDASIM=1, with a reason otherwise."""
    assert fg.backends.describe()["numba-cuda"] is None
    assert "numba-cuda" in fg.backends.available()
    monkeypatch.delenv("FASTGD_ALLOW_CUDASIM")
    reason = fg.backends.describe()["numba-cuda"]
    assert "CUDA simulator is on" in reason and "FASTGD_ALLOW_CUDASIM=1" in reason
    with pytest.raises(RuntimeError, match="simulator"):
        fg.backends.create("numba-cuda")


# ----------------------------------------------------------------------------- noise, parts
NOISE_IDS = [device_checks.row_id(r) for r in device_checks.NOISE_MODELS]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("row", device_checks.NOISE_MODELS, ids=NOISE_IDS)
def test_exact_noise_matches_reference(row, dtype):
    """exact_noise: linear mse (one and three outputs), logistic, softmax, a two-hidden-layer
    MLP; 24 rows span four blocks of 8 threads."""
    device_checks.check_exact_noise("numba-cuda", row, dtype)


def test_exact_noise_several_tiles_per_block(monkeypatch):
    """Blocks of 4 threads, at most 2 blocks: each block sums the norms of several tiles."""
    monkeypatch.setattr(numba_cuda, "THREADS", 4)
    monkeypatch.setattr(device_tables, "MAX_BLOCKS", 2)
    device_checks.check_exact_noise("numba-cuda", device_checks.NOISE_MODELS[-1], "float64")


@pytest.mark.parametrize("track_noise", [False, True])
def test_chunked_epochs_are_one_epoch_bitwise(track_noise):
    """run_epoch in parts (shuffled, Adam: the bias corrections need the global step)."""
    device_checks.check_chunked_epochs("numba-cuda", ((5, 6, 3), "softmax", "relu"),
                                       "float64", fg.Adam(lr=0.01), track_noise=track_noise)


def test_chunked_epochs_float32():
    """The same in float32 with SGD momentum and a linear model."""
    device_checks.check_chunked_epochs("numba-cuda", ((5, 2), "mse", "relu"), "float32",
                                       fg.SGD(lr=0.05, momentum=0.9), parts=(0, 1, 5, None))


def test_load_then_run_is_the_run_from_there():
    """load() restores parameters, Adam state and the step counter exactly."""
    device_checks.check_load("numba-cuda", ((5, 6, 3), "softmax", "tanh"), "float64",
                             fg.Adam(lr=0.01, amsgrad=True))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("row,n,batch_size,mode", [
    (((5, 1), "mse", "relu"), 24, 5, "mbgd"),           # last batch of 4
    (((5, 3), "mse", "relu"), 21, 5, "mbgd"),           # last batch of 1: skipped
    (((5, 2), "logistic", "relu"), 24, 24, "bgd"),      # b = n: exact
    (((5, 6, 4, 3), "softmax", "tanh"), 24, 10, "mbgd"),
    (((5, 4), "softmax", "relu"), 12, 1, "sgd"),        # nothing tracked
], ids=device_checks.ONLINE_IDS)
def test_online_noise_matches_reference(row, n, batch_size, mode, dtype):
    """epoch_noise sums equal the reference's; tracking leaves the parameters' bits."""
    device_checks.check_online_noise("numba-cuda", row, dtype, n, batch_size, mode,
                                     fg.SGD(lr=0.05, momentum=0.9))


def test_online_noise_several_blocks(monkeypatch):
    """Blocks of 4, at most 2: per-block norm sums over several tiles, reduced by the last block."""
    monkeypatch.setattr(numba_cuda, "THREADS", 4)
    monkeypatch.setattr(device_tables, "MAX_BLOCKS", 2)
    device_checks.check_online_noise("numba-cuda", ((5, 6, 3), "softmax", "relu"),
                                     "float64", 24, 20, "mbgd")


def test_untracked_epochs_launch_no_noise_kernel():
    """track_noise=False: the noise kernels are never launched."""
    device_checks.check_untracked_launches_nothing_extra(
        "numba-cuda", ((5, 6, 3), "softmax", "relu"), "float64")


def test_tracked_run_reproducible_bitwise():
    """Two tracked runs give the same noise sums and parameters, bit for bit."""
    model = device_checks.model_of((5, 6, 3), "softmax", "relu")
    X, Y = device_checks.data(model, 24, "float64")
    runs = []
    for _ in range(2):
        e = device_checks.engine("numba-cuda", model, X, Y, "float64", track_noise=True)
        e.run_epoch(0, device_checks.rates(e))
        runs.append((e.epoch_noise(), e.params(), e.exact_noise(X, Y)))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- batch loss
LOSS_IDS = [device_checks.row_id(r) for r in device_checks.LOSS_MODELS]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mode,n,batch_size", [("sgd", 10, None), ("mbgd", N, 5),
                                               ("bgd", N, None)])
@pytest.mark.parametrize("row", device_checks.LOSS_MODELS, ids=LOSS_IDS)
def test_batch_loss_matches_reference(row, mode, n, batch_size, dtype):
    """epoch_loss (the kernels' batch losses: one-row steps; batches of 5 and a last one of
    4; one step of 24 rows over three blocks of 8 threads) equals the reference's; parts of
    an epoch add the same sums as one call; a second read is None."""
    device_checks.check_batch_loss("numba-cuda", row, dtype, n, batch_size, mode)


@pytest.mark.parametrize("track_noise", [False, True])
def test_batch_loss_several_blocks_and_chunks(monkeypatch, track_noise):
    """Blocks of 4 threads, at most 2 blocks: a step's rows span several tiles per block
    and two blocks whose loss sums the last block adds in order (with track_noise, through
    the tracked step's kernel)."""
    monkeypatch.setattr(numba_cuda, "THREADS", 4)
    monkeypatch.setattr(device_tables, "MAX_BLOCKS", 2)
    device_checks.check_batch_loss("numba-cuda", ((5, 6, 3), "softmax", "relu"), "float64",
                                   batch_size=10, track_noise=track_noise,
                                   epochs=1 if track_noise else 2)


def test_streamed_chunks_take_the_in_memory_steps_on_the_device():
    """Chunked data on numba-cuda: each chunk is placed again (set_data) with parameters,
    optimizer state and step counter carried over, so the run equals the in-memory one;
    memory() keeps its peak over the placements."""
    from fastgd.session import Session

    rng = np.random.default_rng()
    X = rng.standard_normal((30, 3))
    y = X @ rng.standard_normal(3)
    kw = dict(batch_size=4, epochs=2, shuffle=False, optimizer=fg.Adam(lr=0.01),
              backend="numba-cuda", dtype="float64")
    ref = fg.fit(fg.Linear(3), X, y, **kw)
    sess = Session(fg.Linear(3), **kw)
    for _ in range(2):
        sess.epoch([(X[:9], y[:9]), (X[9:22], y[9:22]), (X[22:], y[22:])])
    for a, b in zip(ref.params, sess.params(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert sess.engine.memory() > 0
