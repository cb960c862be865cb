"""CPU benchmarks: fastgd against scikit-learn, NumPy and PyTorch on the same data.

Run: ``pytest bench --benchmark-group-by=group``. Compilation happens in the workload
factories (warm-up), never inside a timed round.
"""

from __future__ import annotations

import pytest
import workloads

import fastgd as fg
from conftest import record


def _run(benchmark, run, rounds=3):
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)


@pytest.mark.benchmark(group="linear-sgd")
def test_fastgd_linear_sgd(benchmark, linear_xy, read_bw):
    """SGD (batch 1, shuffled), one epoch."""
    run, n = workloads.make_fastgd(fg.Linear(64), *linear_xy, "sgd")
    _run(benchmark, run)
    record(benchmark, n, linear_xy[0].nbytes + linear_xy[1].nbytes, read_bw)


@pytest.mark.benchmark(group="linear-sgd")
def test_sklearn_sgdregressor(benchmark, linear_xy):
    """scikit-learn SGDRegressor, shuffle=True, constant lr, one epoch."""
    pytest.importorskip("sklearn")
    run, n = workloads.make_sklearn_sgd(*linear_xy)
    _run(benchmark, run, rounds=2)
    record(benchmark, n)


@pytest.mark.parametrize("batch", [32, 256, 4096])
@pytest.mark.benchmark(group="linear-mbgd")
def test_fastgd_linear_mbgd(benchmark, linear_xy, read_bw, batch):
    """MBGD, shuffled, one epoch."""
    run, n = workloads.make_fastgd(fg.Linear(64), *linear_xy, "mbgd", batch)
    _run(benchmark, run)
    record(benchmark, n, linear_xy[0].nbytes + linear_xy[1].nbytes, read_bw)


@pytest.mark.parametrize("batch", [256, 4096])
@pytest.mark.benchmark(group="linear-mbgd")
def test_numpy_linear_mbgd(benchmark, linear_xy, batch):
    """A plain NumPy MBGD loop (shuffled gather per batch)."""
    run, n = workloads.make_numpy_mbgd(*linear_xy, batch)
    _run(benchmark, run, rounds=2)
    record(benchmark, n)


@pytest.mark.benchmark(group="linear-bgd")
def test_fastgd_linear_bgd(benchmark, linear_xy, read_bw):
    """BGD: one full-batch step (a pass over X)."""
    run, n = workloads.make_fastgd(fg.Linear(64), *linear_xy, "bgd")
    _run(benchmark, run, rounds=5)
    record(benchmark, n, linear_xy[0].nbytes + linear_xy[1].nbytes, read_bw)


MLP_FLOPS = 6 * (64 * 128 + 128 * 10)


@pytest.mark.parametrize("batch", [32, 128, 1024])
@pytest.mark.benchmark(group="mlp")
def test_fastgd_mlp(benchmark, mlp_xy, batch):
    """MLP 64-128-10 softmax, momentum 0.9, one epoch."""
    run, n = workloads.make_fastgd(fg.MLP([64, 128, 10]), *mlp_xy, "mbgd", batch, lr=0.01,
                                   momentum=0.9)
    _run(benchmark, run)
    record(benchmark, n, flops=MLP_FLOPS)


@pytest.mark.parametrize("batch", [32, 128, 1024])
@pytest.mark.benchmark(group="mlp")
def test_torch_mlp(benchmark, mlp_xy, batch):
    """PyTorch CPU eager loop, torch.optim.SGD momentum 0.9, same thread count."""
    pytest.importorskip("torch")
    steps = max(1, (20_000 if not workloads.QUICK else 500) // batch)
    run, n = workloads.make_torch_mlp(*mlp_xy, batch, steps)
    _run(benchmark, run)
    record(benchmark, n, flops=MLP_FLOPS)
