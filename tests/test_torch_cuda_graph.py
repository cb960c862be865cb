"""The PyTorch CUDA-graph peer of ``bench/test_gpu.py`` (``bench/workloads.py``) computes what
an eager loop computes: each replay a fresh gradient of the batch copied into the graph's
inputs, never that gradient plus all the previous ones. Needs PyTorch with a CUDA device;
skips, with the reason, elsewhere (torch on CI is a CPU build)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def _load_workloads():
    """``bench/workloads.py`` as a module (``bench/`` is not a package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "workloads.py"
    spec = importlib.util.spec_from_file_location("bench_workloads", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


workloads = _load_workloads()
REASON = workloads.torch_cuda_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"needs PyTorch CUDA: {REASON}")

BATCH, REPLAYS, WARMUP = 64, 5, 3


@pytest.mark.parametrize("sizes, momentum", [((64, 1), 0.0), ((64, 128, 10), 0.9)],
                         ids=["linear", "mlp-momentum"])
def test_graph_replays_match_eager_steps(sizes, momentum):
    """Two identical setups: one trained by the captured graph (warm-up steps, then one
    replay per batch), the other by the same eager steps. Each replay's ``.grad`` equals the
    eager gradient of the same batch, and the parameters stay equal. With the gradients
    zeroed instead of set to None before capture, replay k would hold the sum of k
    gradients."""
    X, y = (workloads.linear_data if sizes[-1] == 1 else workloads.mlp_data)(
        n=BATCH * REPLAYS)
    graphed = workloads.torch_cuda_setup(X, y, sizes, lr=0.01, momentum=momentum)
    eager_net, eager_opt, eager_loss_fn = workloads.torch_cuda_setup(
        X, y, sizes, lr=0.01, momentum=momentum)[:3]
    net, opt, loss_fn, Xt, yt = graphed
    batches = [(Xt[i * BATCH : (i + 1) * BATCH], yt[i * BATCH : (i + 1) * BATCH])
               for i in range(REPLAYS)]
    sx, sy = batches[0][0].clone(), batches[0][1].clone()
    graph = workloads.capture_torch_step(net, opt, loss_fn, sx, sy, warmup=WARMUP)
    for _ in range(WARMUP):
        workloads.torch_step(eager_net, eager_opt, eager_loss_fn, *batches[0])
    for xb, yb in batches:
        sx.copy_(xb)
        sy.copy_(yb)
        graph.replay()
        workloads.torch_step(eager_net, eager_opt, eager_loss_fn, xb, yb)
        torch.cuda.synchronize()
        for p, q in zip(net.parameters(), eager_net.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
