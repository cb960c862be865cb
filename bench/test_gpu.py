"""GPU benchmarks (issue #4): fastgd's GPU backends against PyTorch CUDA on the same device.

Skipped, with the reason, on a machine without a usable GPU backend. Sizes follow the
issue: linear regression BGD over n = 10,000,000 x 64 float32 (fraction of the device read
rate, ``fastgd.benchmarking.device_limits``), MBGD at batch 256 and 4096 for linear
regression and the 64-128-10 MLP against an eager PyTorch loop and the same step captured
in a CUDA graph, and SGD (batch 1) on the GPU for the study. ``fastgd_benchmark``
synchronises the device before each clock stop.
"""

from __future__ import annotations

import pytest
import workloads

import fastgd as fg
from conftest import record

GPU = workloads.gpu_backends()
pytestmark = pytest.mark.skipif(
    not GPU, reason="no GPU backend is usable here: " + "; ".join(
        f"{b}: {r}" for b, r in fg.backends.describe().items() if b in ("numba-cuda", "cupy")))
N_BGD = 200_000 if workloads.QUICK else 10_000_000
N_MBGD = 100_000 if workloads.QUICK else 2_000_000
MLP = (64, 128, 10)
MLP_FLOPS = 6 * (64 * 128 + 128 * 10)


@pytest.fixture(scope="module")
def big_linear():
    return workloads.linear_data(n=N_BGD)


@pytest.fixture(scope="module")
def linear():
    return workloads.linear_data(n=N_MBGD)


@pytest.fixture(scope="module")
def mlp():
    return workloads.mlp_data(n=N_MBGD // 4)


@pytest.mark.parametrize("backend", GPU)
@pytest.mark.benchmark(group="gpu-linear-bgd")
def test_gpu_linear_bgd(fastgd_benchmark, big_linear, backend):
    """One BGD epoch: read X once; compare bytes/s with the device read rate."""
    fastgd_benchmark(fg.Linear(64), *big_linear, mode="bgd", lr=1e-4, backend=backend,
                     rounds=5)


@pytest.mark.parametrize("batch", [256, 4096])
@pytest.mark.parametrize("backend", GPU)
@pytest.mark.benchmark(group="gpu-linear-mbgd")
def test_gpu_linear_mbgd(fastgd_benchmark, linear, backend, batch):
    fastgd_benchmark(fg.Linear(64), *linear, mode="mbgd", batch_size=batch, lr=1e-4,
                     backend=backend)


@pytest.mark.parametrize("batch", [256, 4096])
@pytest.mark.parametrize("backend", GPU)
@pytest.mark.benchmark(group="gpu-mlp-mbgd")
def test_gpu_mlp_mbgd(fastgd_benchmark, mlp, backend, batch):
    fastgd_benchmark(fg.MLP(list(MLP)), *mlp, mode="mbgd", batch_size=batch, lr=0.01,
                     momentum=0.9, backend=backend)


@pytest.mark.parametrize("track_noise", [False, True])
@pytest.mark.parametrize("backend", GPU)
@pytest.mark.benchmark(group="gpu-noise")
def test_gpu_mlp_track_noise(fastgd_benchmark, mlp, backend, track_noise):
    """MLP MBGD 256 with the online gradient-noise estimate off and on (on: one tracked
    launch a step, whose last block sums every block's gradient alone; off: the step's
    two launches, ``device_tables.fused_step``)."""
    fastgd_benchmark(fg.MLP(list(MLP)), *mlp, mode="mbgd", batch_size=256, lr=0.01,
                     momentum=0.9, backend=backend, track_noise=track_noise)


@pytest.mark.parametrize("backend", GPU)
@pytest.mark.benchmark(group="gpu-linear-sgd")
def test_gpu_linear_sgd(fastgd_benchmark, backend):
    """SGD (batch 1) on the GPU: launch-bound; compare with the CPU backend's figure."""
    X, y = workloads.linear_data(n=20_000 if workloads.QUICK else 200_000)
    fastgd_benchmark(fg.Linear(64), X, y, mode="sgd", lr=1e-4, backend=backend, rounds=2)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "cuda-graph"])
@pytest.mark.parametrize("batch", [256, 4096])
@pytest.mark.parametrize("model", ["linear", "mlp"])
@pytest.mark.benchmark(group="gpu-torch")
def test_torch_cuda(benchmark, fastgd_machine_limits, linear, mlp, model, batch, graph):
    """PyTorch CUDA, data on the GPU, torch.optim.SGD; eager or one CUDA graph per step."""
    reason = workloads.torch_cuda_reason()
    if reason:
        pytest.skip(reason)
    X, y = linear if model == "linear" else mlp
    sizes = (64, 1) if model == "linear" else MLP
    run, n = workloads.make_torch_cuda(X, y, sizes, batch, graph=graph,
                                       momentum=0.0 if model == "linear" else 0.9,
                                       lr=1e-4 if model == "linear" else 0.01)
    benchmark.pedantic(run, rounds=3, iterations=1)
    record(benchmark, fastgd_machine_limits, run, n, n // batch,
           flops_per_sample=MLP_FLOPS if model == "mlp" else 6 * 64, on_device=True)
