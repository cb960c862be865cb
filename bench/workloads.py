"""Workloads shared by the pytest-benchmark suite and ``bench/report_cpu.py``.

Each ``make_*`` returns ``(run, samples)``: ``run()`` performs one timed unit (one epoch, or
a fixed number of steps for the slow peers) with compilation already done, ``samples`` is
how many samples it processes. Sizes shrink with ``FASTGD_BENCH_QUICK=1`` (the CI smoke run).
"""

from __future__ import annotations

import os
import time

import numpy as np
from numba import njit

import fastgd as fg
from fastgd.benchmarking import read_bandwidth as read_limit
from fastgd.kernels.cpu.prefetch import prefetch_row

QUICK = os.environ.get("FASTGD_BENCH_QUICK") == "1"
N_LINEAR = 20_000 if QUICK else 1_000_000
N_MLP = 4_000 if QUICK else 100_000
D = 64


def linear_data(n=N_LINEAR, d=D, seed=0):
    """Synthetic linear regression, float32."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    y = X @ rng.standard_normal(d).astype(np.float32) + rng.standard_normal(n, dtype=np.float32)
    return X, y.astype(np.float32)


def mlp_data(n=N_MLP, d=D, k=10, seed=0):
    """Synthetic 10-class data for the 64-128-10 MLP, float32."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = (rng.standard_normal((k, d))[y] + rng.standard_normal((n, d))).astype(np.float32)
    return X, y


def read_bandwidth(nbytes=512 << 20, repeats=3) -> float:
    """The machine's read limit, measured now: the best of a NumPy sum and a one- and an
    all-thread Numba read (``fastgd.benchmarking.read_methods``)."""
    return read_limit(nbytes, repeats)


@njit(cache=True, fastmath=True)
def _gather_sum(X, y, order, distance):
    # the cheapest possible shuffled pass: read every row in ``order``, prefetching
    # ``distance`` rows ahead (as the fastgd kernels do), and add it up
    s = np.float32(0)
    n = order.size
    for j in range(n):
        if j + distance < n:
            prefetch_row(X, order[j + distance])
        r = order[j]
        for p in range(X.shape[1]):
            s += X[r, p]
        s += y[r]
    return s


def gather_rate(X, y, repeats=3, distance=16) -> float:
    """Samples/s of the cheapest shuffled pass over ``(X, y)`` on one core: the random-row
    gather limit of this machine, measured now (the read floor assumes sequential reads)."""
    order = np.random.default_rng(0).permutation(len(X))
    _gather_sum(X[:2], y[:2], order[:2] % 2, distance)
    return len(X) / min(_timed(lambda: _gather_sum(X, y, order, distance))
                        for _ in range(repeats))


def emit(lines, out=None) -> str:
    """Print a report's Markdown ``lines`` and, with ``out``, write them to that file."""
    text = "\n".join(lines)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    return text


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def make_fastgd(model, X, y, mode, batch_size=None, lr=1e-4, momentum=0.0, shuffle=True,
                backend="numba-cpu", optimizer=None):
    """A prepared fastgd run (validated, compiled); ``run()`` is one epoch. ``optimizer``
    (an ``fg.Adam(...)``...) replaces the SGD ``lr``/``momentum``."""
    opt = dict(lr=lr, momentum=momentum) if optimizer is None else dict(optimizer=optimizer)
    prep = fg.prepare(model, X, y, mode=mode, batch_size=batch_size, shuffle=shuffle,
                      backend=backend, dtype="float32", **opt)
    epoch = iter(range(1 << 30))
    return (lambda: prep.run_epoch(next(epoch))), prep.samples_per_epoch


def make_numpy_mbgd(X, y, batch_size, lr=1e-4, shuffle=True):
    """The plain NumPy MBGD loop a user would write: a gather per batch from a fresh
    permutation each epoch, or contiguous slices when ``shuffle=False``."""
    n, d = X.shape
    w = np.zeros(d, np.float32)
    state = {"w": w, "b": np.float32(0), "rng": np.random.default_rng(0)}

    def run():
        order = state["rng"].permutation(n) if shuffle else None
        w, b = state["w"], state["b"]
        for s in range(0, n, batch_size):
            if shuffle:
                idx = order[s : s + batch_size]
                xb, yb = X[idx], y[idx]
            else:
                xb, yb = X[s : s + batch_size], y[s : s + batch_size]
            err = xb @ w + b - yb
            w -= lr * (2 / len(xb)) * (xb.T @ err)
            b -= lr * 2 * err.mean()
        state["b"] = b

    return run, n


def make_sklearn_sgd(X, y):
    """scikit-learn SGDRegressor, one shuffled epoch at a constant learning rate."""
    from sklearn.linear_model import SGDRegressor

    est = SGDRegressor(max_iter=1, tol=None, shuffle=True, learning_rate="constant",
                       eta0=1e-4, penalty=None, random_state=0)
    # its own dtype, converted once (not timed)
    return _quiet_fit(est, X.astype(np.float64), y.astype(np.float64)), len(X)


def _quiet_fit(est, X, y):
    """``run()``: one ``est.fit(X, y)`` (one epoch with ``max_iter=1``), its convergence
    warnings silenced."""
    import warnings

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, y)

    return run


def make_torch_mlp(X, y, batch_size, steps, momentum=0.9, optimizer="sgd"):
    """An eager PyTorch CPU loop slicing a tensor per batch: ``torch.optim.SGD`` (lr 0.01,
    ``momentum``) or, with ``optimizer="adam"``, ``torch.optim.Adam`` (lr 1e-3, defaults)."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    if optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=momentum)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(np.asarray(y, np.int64))
    n = len(X)

    def run():
        for s in range(steps):
            lo = (s * batch_size) % (n - batch_size + 1)
            opt.zero_grad()
            loss_fn(net(Xt[lo : lo + batch_size]), yt[lo : lo + batch_size]).backward()
            opt.step()

    run()  # warm-up
    return run, steps * batch_size


def make_sklearn_mlp(X, y, batch_size):
    """scikit-learn MLPClassifier doing what fastgd's MLP does: 64-128-10 relu, softmax
    cross-entropy, plain SGD with momentum 0.9 (no Nesterov), constant lr, no L2, one
    shuffled epoch per call."""

    from sklearn.neural_network import MLPClassifier

    est = MLPClassifier(hidden_layer_sizes=(128,), solver="sgd", learning_rate="constant",
                        learning_rate_init=0.01, momentum=0.9, nesterovs_momentum=False,
                        alpha=0.0, batch_size=batch_size, max_iter=1, shuffle=True,
                        warm_start=True, random_state=0, tol=0.0, n_iter_no_change=10**9)
    run = _quiet_fit(est, X, y)
    run()  # warm-up (first fit allocates the layers)
    return run, len(X)


# --------------------------------------------------------------------------- GPU peers
def gpu_backends() -> list[str]:
    """fastgd's GPU backends usable here (empty without a GPU)."""
    return [b for b in fg.backends.available() if b in ("numba-cuda", "cupy")]


def torch_cuda_reason() -> str | None:
    """None when PyTorch can use a CUDA device, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    return None if torch.cuda.is_available() else "torch sees no CUDA device"


def torch_cuda_setup(X, y, sizes, lr=1e-4, momentum=0.0):
    """``(net, opt, loss_fn, Xt, yt)`` on the CUDA device: the network of ``sizes`` (linear
    layers, ReLU between them; seeded, so two calls build the same one), ``torch.optim.SGD``,
    the loss, and the data copied to the device. ``sizes`` (64, 1) is linear regression
    (MSELoss), (64, 128, 10) the softmax MLP (CrossEntropyLoss)."""
    import torch

    dev = torch.device("cuda")
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    classify = sizes[-1] > 1
    loss_fn = torch.nn.CrossEntropyLoss() if classify else torch.nn.MSELoss()
    Xt = torch.from_numpy(X).to(dev)
    yt = torch.from_numpy(np.asarray(y, np.int64 if classify else np.float32)).to(dev)
    return net, opt, loss_fn, Xt, yt if classify else yt.reshape(-1, 1)


def torch_step(net, opt, loss_fn, xb, yb) -> None:
    """One eager training step on the batch ``(xb, yb)``."""
    opt.zero_grad(set_to_none=True)
    loss_fn(net(xb), yb).backward()
    opt.step()


def capture_torch_step(net, opt, loss_fn, sx, sy, warmup=3):
    """A CUDA graph of one training step on the static batch ``(sx, sy)``, captured as
    PyTorch documents whole-network capture: ``warmup`` eager steps on ``(sx, sy)`` on a side
    stream (they update ``net``), then the gradients set to None so that the captured
    backward writes fresh ``.grad`` tensors from the graph's pool: with zeroed tensors it
    would add to them, and every replay would add all previous gradients. Copy each batch
    into ``sx``/``sy`` before ``replay()``."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            torch_step(net, opt, loss_fn, sx, sy)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss_fn(net(sx), sy).backward()
        opt.step()
    return graph


def make_torch_cuda(X, y, sizes, batch_size, graph=False, lr=1e-4, momentum=0.0):
    """One epoch of a PyTorch CUDA loop over data already on the GPU, slicing per batch
    (full batches only): eager, or the step captured once in a CUDA graph
    (:func:`capture_torch_step`) and replayed with each batch copied into its inputs.
    ``sizes`` as in :func:`torch_cuda_setup`."""
    import torch

    net, opt, loss_fn, Xt, yt = torch_cuda_setup(X, y, sizes, lr, momentum)
    steps = len(X) // batch_size
    batches = [(Xt[s * batch_size : (s + 1) * batch_size],
                yt[s * batch_size : (s + 1) * batch_size]) for s in range(steps)]

    if not graph:
        def run():
            for xb, yb in batches:
                torch_step(net, opt, loss_fn, xb, yb)
            torch.cuda.synchronize()

        run()  # warm-up
        return run, steps * batch_size

    sx, sy = batches[0][0].clone(), batches[0][1].clone()
    g = capture_torch_step(net, opt, loss_fn, sx, sy)

    def run_graph():
        for xb, yb in batches:
            sx.copy_(xb)
            sy.copy_(yb)
            g.replay()
        torch.cuda.synchronize()

    run_graph()
    return run_graph, steps * batch_size


def make_sklearn_sgd_classifier(X, y):
    """scikit-learn SGDClassifier computing fastgd's logistic regression with SGD: log loss,
    no penalty, constant learning rate, one shuffled epoch per call."""

    from sklearn.linear_model import SGDClassifier

    est = SGDClassifier(loss="log_loss", penalty=None, learning_rate="constant", eta0=1e-3,
                        max_iter=1, tol=None, shuffle=True, random_state=0)
    # its own dtypes, converted once (not timed)
    return _quiet_fit(est, X.astype(np.float64), y.astype(np.int64)), len(X)
