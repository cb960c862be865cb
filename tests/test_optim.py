"""The optimizer specs and schedules (fastgd/optim.py): validation, state sizes, per-step
rates, and the SGD shorthand of ``fit``. Trajectories against torch are in test_torch.py,
every backend against the reference in the backend matrix."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd as fg
from fastgd.kernels.optimizers import HYPER_SLOTS, OPTIMIZER_CODES
from fastgd.optim import make_optimizer

# (constructor, keyword arguments, the argument the error must name)
BAD = [
    (fg.SGD, dict(lr=-0.1), "lr"),
    (fg.SGD, dict(lr=0.0), "lr"),
    (fg.SGD, dict(lr=float("nan")), "lr"),
    (fg.SGD, dict(momentum=-0.5), "momentum"),
    (fg.SGD, dict(weight_decay=-1e-3), "weight_decay"),
    (fg.SGD, dict(nesterov=True), "nesterov"),
    (fg.SGD, dict(momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (fg.Adam, dict(betas=(1.0, 0.999)), r"betas\[0\]"),
    (fg.Adam, dict(betas=(0.9, -0.1)), r"betas\[1\]"),
    (fg.Adam, dict(betas=(0.9,)), "betas"),
    (fg.Adam, dict(eps=0.0), "eps"),
    (fg.Adam, dict(eps=-1e-8), "eps"),
    (fg.Adam, dict(amsgrad="yes"), "amsgrad"),
    (fg.AdamW, dict(weight_decay=-0.01), "weight_decay"),
    (fg.RMSprop, dict(alpha=-0.1), "alpha"),
    (fg.RMSprop, dict(momentum=-1.0), "momentum"),
    (fg.RMSprop, dict(eps=0), "eps"),
    (fg.Adagrad, dict(lr_decay=-0.1), "lr_decay"),
    (fg.Adagrad, dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (fg.Adagrad, dict(eps=0.0), "eps"),
]


@pytest.mark.parametrize("cls,kwargs,name", BAD, ids=[f"{c.__name__}-{n}" for c, _, n in BAD])
def test_bad_hyper_parameters_name_the_argument(cls, kwargs, name):
    """Out-of-range or ill-typed hyper-parameters raise at construction, naming them."""
    with pytest.raises((ValueError, TypeError), match=name):
        cls(**kwargs)


# (optimizer, state buffers): SGD none or one, Adam two or three, RMSprop one to three
STATE = [
    (fg.SGD(), 0), (fg.SGD(momentum=0.9), 1), (fg.Adam(), 2), (fg.Adam(amsgrad=True), 3),
    (fg.AdamW(), 2), (fg.RMSprop(), 1), (fg.RMSprop(centered=True), 2),
    (fg.RMSprop(momentum=0.9), 2), (fg.RMSprop(momentum=0.9, centered=True), 3),
    (fg.Adagrad(), 1),
]


@pytest.mark.parametrize("opt,n_state", STATE, ids=[repr(o) for o, _ in STATE])
def test_state_size_and_initial_value(opt, n_state):
    """The state buffer has one row per buffer, bytes counted per dtype."""
    state = opt.init_state(11, np.float32)
    assert state.shape == (n_state, 11) and state.dtype == np.float32
    assert opt.state_bytes(11, "float64") == n_state * 11 * 8
    assert opt.hyper().shape == (HYPER_SLOTS,)
    assert opt.code == OPTIMIZER_CODES[opt.kernel]


def test_adagrad_state_starts_at_the_initial_accumulator():
    """Adagrad's sum starts at ``initial_accumulator_value``, like torch's."""
    assert np.all(fg.Adagrad(initial_accumulator_value=0.3).init_state(4, np.float64) == 0.3)


def test_fit_reports_the_optimizer_and_its_state(rng):
    """FitResult carries the optimizer's settings and the bytes of its state."""
    model = fg.MLP([4, 5, 3])
    X, y = rng.standard_normal((40, 4)), rng.integers(0, 3, 40)
    res = fg.fit(model, X, y, optimizer=fg.Adam(amsgrad=True), epochs=1, backend="numpy")
    assert res.optimizer["name"] == "Adam" and res.optimizer["amsgrad"] is True
    assert res.optimizer_state_bytes == 3 * model.n_params * 4
    plain = fg.fit(model, X, y, lr=0.1, epochs=1, backend="numpy")
    assert plain.optimizer["name"] == "SGD" and plain.optimizer_state_bytes == 0


@pytest.mark.parametrize("keyword", [dict(lr=0.1), dict(momentum=0.9), dict(nesterov=True),
                                     dict(weight_decay=0.1)])
def test_optimizer_and_sgd_keywords_conflict(rng, keyword):
    """Giving optimizer= and any SGD shorthand keyword is a ValueError naming both."""
    X, y = rng.standard_normal((20, 3)), rng.standard_normal(20)
    name = next(iter(keyword))
    with pytest.raises(ValueError, match=rf"optimizer=.*{name}="):
        fg.fit(fg.Linear(3), X, y, optimizer=fg.Adam(), backend="numpy", **keyword)


def test_optimizer_names_and_unknown_names():
    """A name gives the optimizer with its defaults; unknown names and objects are refused."""
    assert make_optimizer("adam") == fg.Adam()
    assert make_optimizer("AdamW") == fg.AdamW()
    assert make_optimizer(None, lr=0.5) == fg.SGD(lr=0.5)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("lion")
    with pytest.raises(TypeError, match="optimizer must be an optimizer object"):
        make_optimizer(object())


def test_sgd_keywords_not_given_mean_the_defaults(rng):
    """lr=None and friends are "not given": SGD with lr 0.01 and no momentum."""
    X, y = rng.standard_normal((20, 3)), rng.standard_normal(20)
    res = fg.fit(fg.Linear(3), X, y, lr=None, momentum=None, backend="numpy", epochs=1)
    assert res.optimizer == fg.SGD(lr=0.01).to_dict()


def test_sgd_shorthand_equals_the_sgd_object(rng):
    """fit(lr=, momentum=, nesterov=) is exactly fit(optimizer=fg.SGD(...))."""
    model = fg.Linear(3)
    X, y = rng.standard_normal((30, 3)), rng.standard_normal(30)
    a = fg.fit(model, X, y, lr=0.05, momentum=0.9, nesterov=True, backend="numpy", epochs=2)
    b = fg.fit(model, X, y, optimizer=fg.SGD(lr=0.05, momentum=0.9, nesterov=True),
               backend="numpy", epochs=2)
    for p, q in zip(a.params, b.params, strict=True):
        assert np.array_equal(p, q)


# ----------------------------------------------------------------------------- schedules
def test_warmup_rates_cross_epochs_then_hand_over():
    """Warm-up factors are LinearLR's closed form by global step; ``then`` takes over."""
    w = fg.Warmup(steps=5, start_factor=0.2, then=fg.StepDecay(step_size=1, gamma=0.5))
    first = w.rates(1.0, 0, 3, 0, 3)
    np.testing.assert_allclose(first, [0.2, 0.36, 0.52])
    second = w.rates(1.0, 1, 3, 3, 3)
    np.testing.assert_allclose(second, [0.68, 0.84, 0.5])  # step 5 on: StepDecay's epoch 1
    assert w.rates(1.0, 2, 3, 6, 3).tolist() == [0.25] * 3


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(steps=1.5), dict(start_factor=0.0),
                                    dict(start_factor=1.5), dict(then="nope")])
def test_bad_warmup(kwargs):
    """Warm-up length and factor are checked like LinearLR's."""
    with pytest.raises((ValueError, TypeError)):
        fg.Warmup(**kwargs)


def test_per_step_schedule_sees_the_global_step(rng):
    """PerStep(fn) is called with every global step, across epochs."""
    seen = []

    def fn(step):
        seen.append(step)
        return 0.01

    X, y = rng.standard_normal((10, 3)), rng.standard_normal(10)
    fg.fit(fg.Linear(3), X, y, batch_size=4, epochs=2, backend="numpy",
           lr_schedule=fg.PerStep(fn))
    assert seen == list(range(6))


def test_schedule_that_gives_a_bad_step_rate_is_refused(rng):
    """A per-step rate that is not finite and > 0 stops the run with the step named."""
    X, y = rng.standard_normal((10, 3)), rng.standard_normal(10)
    with pytest.raises(ValueError, match=r"lr=-1.0 at epoch 0 \(step 2\)"):
        fg.fit(fg.Linear(3), X, y, batch_size=2, epochs=1, backend="numpy",
               lr_schedule=fg.PerStep(lambda s: -1.0 if s == 2 else 0.1))


def test_per_epoch_schedules_repeat_one_rate_per_step():
    """A per-epoch schedule gives every step of the epoch the same rate."""
    assert fg.Cosine().rates(0.1, 0, 4, 0, 3).tolist() == [0.1] * 3
    assert fg.StepDecay(1, 0.5).rates(0.1, 2, 4, 9, 2).tolist() == [0.025] * 2
