"""CPU benchmarks: fastgd against scikit-learn, NumPy and PyTorch on the same data.

Run: ``pytest bench --benchmark-group-by=group``. Groups compare like with like (the same
data, model, mode and batch size). fastgd's configurations go through the plugin fixture
``fastgd_benchmark`` (compilation before the first round); peers are prepared (and warmed
up) by ``workloads`` before their rounds. Every benchmark records samples/s, steps/s and,
where it applies, bytes/s, FLOP/s and the fractions of the machine limits in
``extra_info``. Peers skip with a reason when their package is missing.
"""

from __future__ import annotations

import pytest
import workloads

import fastgd as fg
from conftest import record

LINEAR_BYTES = 68  # bytes read per sample: 64 float32 features + a float32 target
MLP = [64, 128, 10]
MLP_FLOPS = 6 * (64 * 128 + 128 * 10)


def _peer(benchmark, run, rounds=3):
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)


@pytest.mark.benchmark(group="linear-sgd")
@pytest.mark.parametrize("shuffle", [True, False])
def test_fastgd_linear_sgd(fastgd_benchmark, linear_xy, shuffle):
    """SGD (batch 1), one epoch."""
    fastgd_benchmark(fg.Linear(64), *linear_xy, mode="sgd", lr=1e-4, shuffle=shuffle)


@pytest.mark.benchmark(group="linear-sgd")
def test_sklearn_sgdregressor(benchmark, fastgd_machine_limits, linear_xy):
    """scikit-learn SGDRegressor, shuffle=True, constant lr, one epoch."""
    pytest.importorskip("sklearn")
    run, n = workloads.make_sklearn_sgd(*linear_xy)
    _peer(benchmark, run, rounds=2)
    record(benchmark, fastgd_machine_limits, run, n, n, n * LINEAR_BYTES)


@pytest.mark.parametrize("batch", [32, 256, 4096])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.benchmark(group="linear-mbgd")
def test_fastgd_linear_mbgd(fastgd_benchmark, linear_xy, batch, shuffle):
    """MBGD, one epoch."""
    fastgd_benchmark(fg.Linear(64), *linear_xy, mode="mbgd", batch_size=batch, lr=1e-4,
                     shuffle=shuffle)


@pytest.mark.parametrize("batch", [256, 4096])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.benchmark(group="linear-mbgd")
def test_numpy_linear_mbgd(benchmark, fastgd_machine_limits, linear_xy, batch, shuffle):
    """A plain NumPy MBGD loop (a gather per batch when shuffled, slices otherwise)."""
    run, n = workloads.make_numpy_mbgd(*linear_xy, batch, shuffle=shuffle)
    _peer(benchmark, run, rounds=2)
    record(benchmark, fastgd_machine_limits, run, n, -(-n // batch), n * LINEAR_BYTES)


@pytest.mark.benchmark(group="linear-bgd")
def test_fastgd_linear_bgd(fastgd_benchmark, linear_xy):
    """BGD: one full-batch step (a pass over X)."""
    fastgd_benchmark(fg.Linear(64), *linear_xy, mode="bgd", lr=1e-4, rounds=5)


@pytest.mark.parametrize("batch", [32, 128, 1024])
@pytest.mark.benchmark(group="mlp")
def test_fastgd_mlp(fastgd_benchmark, mlp_xy, batch):
    """MLP 64-128-10 softmax, momentum 0.9, one epoch."""
    fastgd_benchmark(fg.MLP(MLP), *mlp_xy, mode="mbgd", batch_size=batch, lr=0.01,
                     momentum=0.9)


@pytest.mark.parametrize("batch", [32, 128, 1024])
@pytest.mark.benchmark(group="mlp")
def test_torch_mlp(benchmark, fastgd_machine_limits, mlp_xy, batch):
    """PyTorch CPU eager loop, torch.optim.SGD momentum 0.9, same thread count."""
    pytest.importorskip("torch")
    steps = max(1, (20_000 if not workloads.QUICK else 500) // batch)
    run, n = workloads.make_torch_mlp(*mlp_xy, batch, steps)
    _peer(benchmark, run)
    record(benchmark, fastgd_machine_limits, run, n, steps, flops_per_sample=MLP_FLOPS)


@pytest.mark.parametrize("batch", [32, 128, 1024])
@pytest.mark.benchmark(group="mlp-adam")
def test_fastgd_mlp_adam(fastgd_benchmark, mlp_xy, batch):
    """MLP 64-128-10 softmax, Adam (lr 1e-3, torch's defaults), one epoch."""
    fastgd_benchmark(fg.MLP(MLP), *mlp_xy, mode="mbgd", batch_size=batch,
                     optimizer=fg.Adam(lr=1e-3))


@pytest.mark.parametrize("batch", [32, 128, 1024])
@pytest.mark.benchmark(group="mlp-adam")
def test_torch_mlp_adam(benchmark, fastgd_machine_limits, mlp_xy, batch):
    """PyTorch CPU eager loop, torch.optim.Adam (defaults, lr 1e-3), same thread count."""
    pytest.importorskip("torch")
    steps = max(1, (20_000 if not workloads.QUICK else 500) // batch)
    run, n = workloads.make_torch_mlp(*mlp_xy, batch, steps, optimizer="adam")
    _peer(benchmark, run)
    record(benchmark, fastgd_machine_limits, run, n, steps, flops_per_sample=MLP_FLOPS)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.benchmark(group="linear-mbgd-optimizer")
def test_fastgd_linear_mbgd_optimizer(fastgd_benchmark, linear_xy, optimizer):
    """MBGD b=256 in order, SGD against Adam (what Adam's state costs an epoch)."""
    opt = fg.Adam(lr=1e-4) if optimizer == "adam" else fg.SGD(lr=1e-4)
    fastgd_benchmark(fg.Linear(64), *linear_xy, mode="mbgd", batch_size=256, shuffle=False,
                     optimizer=opt)


@pytest.mark.parametrize("batch", [32, 128, 1024])
@pytest.mark.benchmark(group="mlp")
def test_sklearn_mlpclassifier(benchmark, fastgd_machine_limits, mlp_xy, batch):
    """scikit-learn MLPClassifier (solver="sgd", momentum 0.9, no L2), one epoch."""
    pytest.importorskip("sklearn")
    run, n = workloads.make_sklearn_mlp(*mlp_xy, batch)
    _peer(benchmark, run, rounds=2)
    record(benchmark, fastgd_machine_limits, run, n, -(-n // batch), flops_per_sample=MLP_FLOPS)


@pytest.mark.benchmark(group="logistic-sgd")
def test_fastgd_logistic_sgd(fastgd_benchmark, logistic_xy):
    """Logistic regression (BCEWithLogits), SGD batch 1, shuffled, one epoch."""
    fastgd_benchmark(fg.Linear(64, 1, loss="logistic"), *logistic_xy, mode="sgd", lr=1e-3)


@pytest.mark.benchmark(group="logistic-sgd")
def test_sklearn_sgdclassifier(benchmark, fastgd_machine_limits, logistic_xy):
    """scikit-learn SGDClassifier(loss="log_loss"), shuffle=True, constant lr, one epoch."""
    pytest.importorskip("sklearn")
    run, n = workloads.make_sklearn_sgd_classifier(*logistic_xy)
    _peer(benchmark, run, rounds=2)
    record(benchmark, fastgd_machine_limits, run, n, n, n * LINEAR_BYTES)


@pytest.mark.parametrize("track_noise", [False, True])
@pytest.mark.benchmark(group="noise")
def test_fastgd_linear_mbgd_track_noise(fastgd_benchmark, linear_xy, track_noise):
    """MBGD 256 with the online gradient-noise estimate off and on (goal: <= 15% more)."""
    fastgd_benchmark(fg.Linear(64), *linear_xy, mode="mbgd", batch_size=256, lr=1e-4,
                     track_noise=track_noise)


@pytest.mark.parametrize("track_noise", [False, True])
@pytest.mark.benchmark(group="noise")
def test_fastgd_mlp_track_noise(fastgd_benchmark, mlp_xy, track_noise):
    """MLP 64-128-10 at batch 128 with the online gradient-noise estimate off and on."""
    fastgd_benchmark(fg.MLP(MLP), *mlp_xy, mode="mbgd", batch_size=128, lr=0.01,
                     momentum=0.9, track_noise=track_noise)
