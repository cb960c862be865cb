"""fastgd reproduces a plain PyTorch training loop (mean-reduction losses, ``torch.optim``'s
SGD, Adam, AdamW, RMSprop and Adagrad with their defaults, batches sliced in order, last
partial batch included) from the same initial parameters."""

from __future__ import annotations

import dataclasses
import functools
import inspect

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
# The SGD shorthand keywords of fit (the old API, still supported).
OPTIMIZERS = {
    "plain": dict(momentum=0.0, nesterov=False, weight_decay=0.0),
    "momentum": dict(momentum=0.9, nesterov=False, weight_decay=0.0),
    "nesterov-wd": dict(momentum=0.9, nesterov=True, weight_decay=0.01),
}
# Optimizer objects; torch's optimizer of the same name is built from the same fields.
OPTIMIZER_SPECS = {
    "sgd-dampening-wd": fg.SGD(lr=LR, momentum=0.9, dampening=0.5, weight_decay=0.01),
    "adam": fg.Adam(lr=0.01),
    "adam-wd": fg.Adam(lr=0.01, weight_decay=0.05),
    "adam-amsgrad-wd": fg.Adam(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05, amsgrad=True),
    "adam-beta1-high": fg.Adam(lr=0.01, betas=(0.3, 0.9)),  # lerp's second branch
    "adamw": fg.AdamW(lr=0.01),
    "adamw-amsgrad": fg.AdamW(lr=0.01, weight_decay=0.1, amsgrad=True),
    "rmsprop": fg.RMSprop(lr=0.01),
    "rmsprop-centered": fg.RMSprop(lr=0.01, centered=True),
    "rmsprop-momentum-wd": fg.RMSprop(lr=0.01, momentum=0.9, weight_decay=0.01),
    "rmsprop-centered-momentum": fg.RMSprop(lr=0.01, alpha=0.9, momentum=0.5, centered=True),
    "adagrad": fg.Adagrad(lr=0.1),
    "adagrad-decay-wd-init": fg.Adagrad(lr=0.1, lr_decay=0.05, weight_decay=0.01,
                                        initial_accumulator_value=0.1, eps=1e-6),
}
SPEC_MODELS = ["linear-mse-1", "linear-mse-3", "linear-logistic", "linear-softmax-4",
               "mlp-softmax-tanh", "mlp-mse-deep"]
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


def torch_optimizer(spec: fg.Optimizer, parameters):
    """``torch.optim.<spec.name>`` with the spec's fields (they are torch's keywords)."""
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    return getattr(torch.optim, spec.name)(parameters, **fields)


def torch_fit(model, params, X, y, *, batch_size, epochs=EPOCHS, lr=LR, momentum=0.0,
              nesterov=False, weight_decay=0.0, dtype="float64", step_lr=None, spec=None,
              linear_lr=None):
    """The reference loop: returns final params as fastgd's [W (in,out), b, ...], the
    full-data loss after each epoch, the lr used in each epoch and each epoch's mean of its
    batch losses weighted by their rows (Keras's and Lightning's epoch loss). ``spec``: a fastgd
    optimizer object (else SGD from the keywords); ``step_lr``: StepLR stepped per epoch;
    ``linear_lr``: LinearLR stepped per iteration."""
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    net = _torch_net(model, params, tdtype)
    Xt = torch.from_numpy(np.asarray(X)).to(tdtype)
    Yt = _torch_targets(model, y, tdtype)
    loss_fn = {"mse": nn.MSELoss, "logistic": nn.BCEWithLogitsLoss,
               "softmax": nn.CrossEntropyLoss}[model.loss]()
    if spec is None:
        spec = fg.SGD(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    opt = torch_optimizer(spec, net.parameters())
    sched = (torch.optim.lr_scheduler.StepLR(opt, **step_lr) if step_lr is not None else None)
    per_step = (torch.optim.lr_scheduler.LinearLR(opt, **linear_lr) if linear_lr is not None
                else None)
    losses, lrs, batch_means = [], [], []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        total = 0.0
        for start in range(0, N, batch_size):
            opt.zero_grad()
            batch_loss = loss_fn(net(Xt[start:start + batch_size]), Yt[start:start + batch_size])
            total += float(batch_loss) * len(Xt[start:start + batch_size])
            batch_loss.backward()
            opt.step()
            if per_step is not None:
                per_step.step()
        batch_means.append(total / N)
        with torch.no_grad():
            losses.append(float(loss_fn(net(Xt), Yt)))
        if sched is not None:
            sched.step()
    out = []
    for mod in net:
        if isinstance(mod, nn.Linear):
            out += [mod.weight.detach().numpy().T.copy(), mod.bias.detach().numpy().copy()]
    return out, (losses, batch_means), lrs


@functools.cache
def _torch_reference(model_name, opt_name, batch_name):
    """Torch results are shared by the two backends' tests of one case."""
    model = _model(model_name)
    X, y = _data(model)
    params = model.init_params(7, dtype="float64")
    return torch_fit(model, params, X, y, batch_size=BATCHES[batch_name][1],
                     **OPTIMIZERS[opt_name])


def _assert_losses(res, want, rtol, atol=0.0):
    """The exact full-data loss after each epoch and the mean of each epoch's batch losses
    are torch's."""
    full, batch = want
    np.testing.assert_allclose([r.full_train_loss for r in res.history], full, rtol=rtol,
                               atol=atol)
    np.testing.assert_allclose([r.train_loss for r in res.history], batch, rtol=rtol,
                               atol=atol)


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
                 backend=backend, dtype="float64", params=params, eval_every=1,
                 **OPTIMIZERS[opt_name])
    want_params, want_losses, _ = _torch_reference(model_name, opt_name, batch_name)
    assert res.stopped is None
    assert res.steps == EPOCHS * -(-N // bs)
    _assert_params_close(res.params, want_params, RTOL64, ATOL64)
    _assert_losses(res, want_losses, rtol=RTOL64, atol=ATOL64)


@functools.cache
def _torch_spec_reference(model_name, spec_name, batch_name):
    model = _model(model_name)
    X, y = _data(model)
    params = model.init_params(7, dtype="float64")
    return torch_fit(model, params, X, y, batch_size=BATCHES[batch_name][1],
                     spec=OPTIMIZER_SPECS[spec_name])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_name", list(BATCHES))
@pytest.mark.parametrize("spec_name", list(OPTIMIZER_SPECS))
@pytest.mark.parametrize("model_name", SPEC_MODELS)
def test_optimizers_match_torch_float64(model_name, spec_name, batch_name, backend):
    """Every optimizer (weight decay, amsgrad, centered/momentum RMSprop, Adagrad's lr_decay
    and initial accumulator, SGD dampening): two unshuffled float64 epochs give torch's
    parameters and per-epoch losses to 1e-9 relative."""
    model = _model(model_name)
    X, y = _data(model)
    params = model.init_params(7, dtype="float64")
    mode, bs = BATCHES[batch_name]
    res = fg.fit(model, X, y, mode=mode, batch_size=bs, epochs=EPOCHS, shuffle=False,
                 backend=backend, dtype="float64", params=params,
                 optimizer=OPTIMIZER_SPECS[spec_name], eval_every=1)
    want_params, want_losses, _ = _torch_spec_reference(model_name, spec_name, batch_name)
    assert res.optimizer["name"] == OPTIMIZER_SPECS[spec_name].name
    _assert_params_close(res.params, want_params, RTOL64, ATOL64)
    _assert_losses(res, want_losses, rtol=RTOL64, atol=ATOL64)


@pytest.mark.parametrize("spec", [fg.SGD, fg.Adam, fg.AdamW, fg.RMSprop, fg.Adagrad])
def test_optimizer_defaults_are_torchs(spec):
    """Every default hyper-parameter equals ``torch.optim``'s (SGD's lr excepted: torch's
    is 1e-3, fastgd keeps its historical 0.01)."""
    ours = {f.name: f.default for f in dataclasses.fields(spec)}
    theirs = inspect.signature(getattr(torch.optim, spec.__name__)).parameters
    for name, value in ours.items():
        if spec is fg.SGD and name == "lr":
            continue
        assert name in theirs, name
        assert theirs[name].default == value, (spec.__name__, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", [fg.Adam(lr=0.01, amsgrad=True), fg.RMSprop(lr=0.01),
                                  fg.AdamW(lr=0.01)])
def test_adaptive_optimizers_match_torch_float32(backend, spec):
    """float32 MLP with mini-batches matches torch float32 (rtol 1e-4)."""
    model = _model("mlp-softmax-tanh")
    X, y = _data(model, seed=1)
    params = model.init_params(3, dtype="float32")
    res = fg.fit(model, X, y, mode="mbgd", batch_size=7, epochs=EPOCHS, shuffle=False,
                 backend=backend, dtype="float32", params=params, optimizer=spec,
                 eval_every=1)
    want_params, want_losses, _ = torch_fit(model, params, X, y, batch_size=7,
                                            dtype="float32", spec=spec)
    _assert_params_close(res.params, want_params, 1e-4, 1e-6)
    _assert_losses(res, want_losses, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_warmup_matches_linearlr_per_step(backend):
    """``Warmup(steps, start_factor)`` equals ``LinearLR(start_factor, total_iters=steps)``
    stepped after every iteration (warm-up crossing the epoch boundary, then constant)."""
    model = _model("mlp-mse-deep")
    X, y = _data(model, seed=4)
    params = model.init_params(5, dtype="float64")
    spec = fg.Adam(lr=0.02)
    res = fg.fit(model, X, y, mode="mbgd", batch_size=7, epochs=3, shuffle=False,
                 backend=backend, dtype="float64", params=params, optimizer=spec,
                 lr_schedule=fg.Warmup(steps=10, start_factor=0.1), eval_every=1)
    want_params, want_losses, want_lrs = torch_fit(
        model, params, X, y, batch_size=7, epochs=3, spec=spec,
        linear_lr=dict(start_factor=0.1, end_factor=1.0, total_iters=10))
    np.testing.assert_allclose([r.lr for r in res.history], want_lrs, rtol=1e-12)
    _assert_params_close(res.params, want_params, RTOL64, ATOL64)
    _assert_losses(res, want_losses, rtol=RTOL64, atol=ATOL64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_torch_float32_mlp_momentum(backend):
    """float32 MLP with momentum and mini-batches matches torch float32 to rtol 1e-4."""
    model = _model("mlp-softmax-tanh")
    X, y = _data(model, seed=1)
    params = model.init_params(3, dtype="float32")
    kw = dict(momentum=0.9, nesterov=False, weight_decay=0.0)
    res = fg.fit(model, X, y, mode="mbgd", batch_size=7, epochs=EPOCHS, lr=LR, shuffle=False,
                 backend=backend, dtype="float32", params=params, **kw, eval_every=1)
    want_params, want_losses, _ = torch_fit(model, params, X, y, batch_size=7,
                                            dtype="float32", **kw)
    assert all(p.dtype == np.float32 for p in res.params)
    _assert_params_close(res.params, want_params, 1e-4, 1e-6)
    _assert_losses(res, want_losses, rtol=1e-4)


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
                 lr_schedule=fg.StepDecay(step_size=1, gamma=0.5), **kw, eval_every=1)
    want_params, want_losses, want_lrs = torch_fit(
        model, params, X, y, batch_size=7, epochs=epochs, step_lr=dict(step_size=1, gamma=0.5),
        **kw)
    assert want_lrs == [LR * 0.5**e for e in range(epochs)]
    np.testing.assert_allclose([r.lr for r in res.history], want_lrs, rtol=1e-15)
    _assert_params_close(res.params, want_params, RTOL64, ATOL64)
    _assert_losses(res, want_losses, rtol=RTOL64, atol=ATOL64)


def test_constant_schedule_is_not_steplr():
    """Sanity check of the comparison itself: without the schedule the params differ."""
    model = _model("linear-mse-1")
    X, y = _data(model, seed=3)
    params = model.init_params(0, dtype="float64")
    res = fg.fit(model, X, y, mode="mbgd", batch_size=7, epochs=3, lr=LR, shuffle=False,
                 backend="numpy", dtype="float64", params=params, eval_every=1)
    want_params, _, _ = torch_fit(model, params, X, y, batch_size=7, epochs=3,
                                  step_lr=dict(step_size=1, gamma=0.5))
    assert not np.allclose(res.params[0], want_params[0], rtol=1e-6)
