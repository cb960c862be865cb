"""fastgd reproduces a plain PyTorch training loop (mean-reduction losses, torch.optim.SGD
with dampening 0, batches sliced in order, last partial batch included) from the same
initial parameters."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import fastgd as fg

torch = pytest.importorskip("torch")
nn = torch.nn

N = 50
EPOCHS = 2
LR = 0.1
RTOL64, ATOL64 = 1e-9, 1e-12
BACKENDS = ["numpy", "numba-cpu"]

# name -> (sizes, loss, activation, y shape kind)
MODELS = {
    "linear-mse-1": ((5, 1), "mse", "relu"),
    "linear-mse-3": ((5, 3), "mse", "relu"),
    "linear-logistic": ((5, 1), "logistic", "relu"),
    "linear-softmax-4": ((5, 4), "softmax", "relu"),
    "mlp-softmax-relu": ((5, 8, 3), "softmax", "relu"),
    "mlp-softmax-tanh": ((5, 8, 3), "softmax", "tanh"),
    "mlp-softmax-sigmoid": ((5, 8, 3), "softmax", "sigmoid"),
    "mlp-mse-deep": ((5, 8, 6, 1), "mse", "relu"),
    "mlp-logistic-2": ((5, 7, 2), "logistic", "relu"),
}
OPTIMIZERS = {
    "plain": dict(momentum=0.0, nesterov=False, weight_decay=0.0),
    "momentum": dict(momentum=0.9, nesterov=False, weight_decay=0.0),
    "nesterov-wd": dict(momentum=0.9, nesterov=True, weight_decay=0.01),
}
BATCHES = {"sgd": ("sgd", 1), "mbgd-7": ("mbgd", 7), "bgd": ("bgd", N)}


def _model(name) -> fg.Model:
    sizes, loss, activation = MODELS[name]
    return fg.Model(sizes, loss=loss, activation=activation)


def _data(model: fg.Model, seed: int = 0):
    """Fixed random data: y is (n,) for single-output mse/logistic, (n, k) otherwise,
    class ids (n,) for softmax."""
    rng = np.random.default_rng(1000 + seed)
    X = rng.normal(size=(N, model.n_features))
    k = model.n_outputs
    if model.loss == "softmax":
        y = rng.integers(0, k, size=N)
    elif model.loss == "logistic":
        y = rng.integers(0, 2, size=N if k == 1 else (N, k)).astype(np.float64)
    else:
        y = rng.normal(size=N if k == 1 else (N, k))
    return X, y


def _torch_net(model: fg.Model, params, tdtype):
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    layers = []
    n_layers = len(params) // 2
    for layer in range(n_layers):
        W, b = params[2 * layer], params[2 * layer + 1]
        lin = nn.Linear(W.shape[0], W.shape[1], dtype=tdtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(np.asarray(b)))
        layers.append(lin)
        if layer < n_layers - 1:
            layers.append(acts[model.activation]())
    return nn.Sequential(*layers)


def _torch_targets(model: fg.Model, y, tdtype):
    if model.loss == "softmax":
        return torch.from_numpy(np.asarray(y, dtype=np.int64))
    return torch.from_numpy(np.asarray(y, dtype=np.float64).reshape(N, -1)).to(tdtype)


def torch_fit(model, params, X, y, *, batch_size, epochs=EPOCHS, lr=LR, momentum=0.0,
              nesterov=False, weight_decay=0.0, dtype="float64", step_lr=None):
    """The reference loop: returns final params as fastgd's [W (in,out), b, ...], the
    full-data loss after each epoch and the lr used in each epoch."""
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    net = _torch_net(model, params, tdtype)
    Xt = torch.from_numpy(np.asarray(X)).to(tdtype)
    Yt = _torch_targets(model, y, tdtype)
    loss_fn = {"mse": nn.MSELoss, "logistic": nn.BCEWithLogitsLoss,
               "softmax": nn.CrossEntropyLoss}[model.loss]()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, dampening=0,
                          nesterov=nesterov, weight_decay=weight_decay)
    sched = (torch.optim.lr_scheduler.StepLR(opt, **step_lr) if step_lr is not None else None)
    losses, lrs = [], []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        for start in range(0, N, batch_size):
            opt.zero_grad()
            loss_fn(net(Xt[start:start + batch_size]), Yt[start:start + batch_size]).backward()
            opt.step()
        with torch.no_grad():
            losses.append(float(loss_fn(net(Xt), Yt)))
        if sched is not None:
            sched.step()
    out = []
    for mod in net:
        if isinstance(mod, nn.Linear):
            out += [mod.weight.detach().numpy().T.copy(), mod.bias.detach().numpy().copy()]
    return out, losses, lrs


@functools.cache
def _torch_reference(model_name, opt_name, batch_name):
    """Torch results are shared by the two backends' tests of one case."""
    model = _model(model_name)
    X, y = _data(model)
    params = model.init_params(7, dtype="float64")
    return torch_fit(model, params, X, y, batch_size=BATCHES[batch_name][1],
                     **OPTIMIZERS[opt_name])


def _assert_params_close(got, want, rtol, atol):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == b.shape, f"params[{i}]"
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"params[{i}]")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_name", list(BATCHES))
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_matches_torch_float64(model_name, opt_name, batch_name, backend):
    """Two unshuffled float64 epochs match torch's params and per-epoch full-data loss."""
    model = _model(model_name)
    X, y = _data(model)
    params = model.init_params(7, dtype="float64")
    mode, bs = BATCHES[batch_name]
    res = fg.fit(model, X, y, mode=mode, batch_size=bs, epochs=EPOCHS, lr=LR, shuffle=False,
                 backend=backend, dtype="float64", params=params, **OPTIMIZERS[opt_name])
    want_params, want_losses, _ = _torch_reference(model_name, opt_name, batch_name)
    assert res.stopped is None
    assert res.steps == EPOCHS * -(-N // bs)
    _assert_params_close(res.params, want_params, RTOL64, ATOL64)
    got_losses = [r.train_loss for r in res.history]
    np.testing.assert_allclose(got_losses, want_losses, rtol=RTOL64, atol=ATOL64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_torch_float32_mlp_momentum(backend):
    """float32 MLP with momentum and mini-batches matches torch float32 to rtol 1e-4."""
    model = _model("mlp-softmax-tanh")
    X, y = _data(model, seed=1)
    params = model.init_params(3, dtype="float32")
    kw = dict(momentum=0.9, nesterov=False, weight_decay=0.0)
    res = fg.fit(model, X, y, mode="mbgd", batch_size=7, epochs=EPOCHS, lr=LR, shuffle=False,
                 backend=backend, dtype="float32", params=params, **kw)
    want_params, want_losses, _ = torch_fit(model, params, X, y, batch_size=7,
                                            dtype="float32", **kw)
    assert all(p.dtype == np.float32 for p in res.params)
    _assert_params_close(res.params, want_params, 1e-4, 1e-6)
    np.testing.assert_allclose([r.train_loss for r in res.history], want_losses, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_decay_matches_torch_steplr(backend):
    """StepDecay(step_size=1, gamma=0.5) equals torch's StepLR stepped once per epoch."""
    model = _model("mlp-mse-deep")
    X, y = _data(model, seed=2)
    params = model.init_params(11, dtype="float64")
    epochs = 4
    kw = dict(momentum=0.9, nesterov=True, weight_decay=0.01)
    res = fg.fit(model, X, y, mode="mbgd", batch_size=7, epochs=epochs, lr=LR, shuffle=False,
                 backend=backend, dtype="float64", params=params,
                 lr_schedule=fg.StepDecay(step_size=1, gamma=0.5), **kw)
    want_params, want_losses, want_lrs = torch_fit(
        model, params, X, y, batch_size=7, epochs=epochs, step_lr=dict(step_size=1, gamma=0.5),
        **kw)
    assert want_lrs == [LR * 0.5**e for e in range(epochs)]
    np.testing.assert_allclose([r.lr for r in res.history], want_lrs, rtol=1e-15)
    _assert_params_close(res.params, want_params, RTOL64, ATOL64)
    np.testing.assert_allclose([r.train_loss for r in res.history], want_losses,
                               rtol=RTOL64, atol=ATOL64)


def test_constant_schedule_is_not_steplr():
    """Sanity check of the comparison itself: without the schedule the params differ."""
    model = _model("linear-mse-1")
    X, y = _data(model, seed=3)
    params = model.init_params(0, dtype="float64")
    res = fg.fit(model, X, y, mode="mbgd", batch_size=7, epochs=3, lr=LR, shuffle=False,
                 backend="numpy", dtype="float64", params=params)
    want_params, _, _ = torch_fit(model, params, X, y, batch_size=7, epochs=3,
                                  step_lr=dict(step_size=1, gamma=0.5))
    assert not np.allclose(res.params[0], want_params[0], rtol=1e-6)
