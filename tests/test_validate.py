"""Bad inputs to ``fastgd.fit`` and the model constructors fail early with a clear message
naming the offending argument; accepted conversions (ints, bools, float16, memory order)
train exactly like the canonical input; the caller's arrays are never modified."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd as fg
from fastgd.backends.numba_cpu import NumbaCpuBackend
from fastgd.backends.numpy_backend import NumpyBackend
from fastgd.validate import check_features

N, D = 40, 3


def _rng():
    return np.random.default_rng()


def _data(n=N, d=D, k=1, loss="mse"):
    """Fresh random (X, y) for a model with ``d`` features and ``k`` outputs."""
    rng = _rng()
    X = rng.normal(size=(n, d))
    if loss == "mse":
        y = rng.normal(size=(n,)) if k == 1 else rng.normal(size=(n, k))
    elif loss == "logistic":
        y = rng.integers(0, 2, size=(n,) if k == 1 else (n, k)).astype(float)
    else:
        y = rng.integers(0, k, size=n)
    return X, y


def _fit(model, X, y, **kw):
    kw.setdefault("backend", "numpy")
    kw.setdefault("epochs", 1)
    return fg.fit(model, X, y, **kw)


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_wrong_n_features_in_X(backend):
    """X with 4 columns for a 3-feature model names X and n_features."""
    X, y = _data(d=4)
    with pytest.raises(ValueError, match=r"^X has 4 features .*n_features=3"):
        _fit(fg.Linear(3), X, y, backend=backend)


def test_wrong_n_features_in_X_val():
    """X_val with the wrong width is reported as X_val, not X."""
    X, y = _data()
    Xv, yv = _data(n=10, d=2)
    with pytest.raises(ValueError, match=r"^X_val has 2 features .*n_features=3"):
        _fit(fg.Linear(3), X, y, X_val=Xv, y_val=yv)


@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_y_rows_differ_from_X_rows(backend):
    """y with fewer rows than X names y and both row counts."""
    X, y = _data()
    with pytest.raises(ValueError, match=rf"^y has {N - 1} rows but X has {N}"):
        _fit(fg.Linear(3), X, y[:-1], backend=backend)


def test_y_val_rows_differ_from_X_val_rows():
    """y_val rows are checked against X_val rows."""
    X, y = _data()
    Xv, yv = _data(n=10)
    with pytest.raises(ValueError, match=r"^y_val has 9 rows but X has 10"):
        _fit(fg.Linear(3), X, y, X_val=Xv, y_val=yv[:-1])


@pytest.mark.parametrize("shape", [(N,), (N, 2), (N, 4), (N, 3, 1)])
def test_y_wrong_width_for_multi_output_mse(shape):
    """mse with n_outputs=3 needs y of shape (n, 3)."""
    X, _ = _data()
    y = _rng().normal(size=shape)
    with pytest.raises(ValueError, match=r"^y must have shape .*n_outputs=3"):
        _fit(fg.Linear(3, 3), X, y)


def test_y_wrong_width_for_single_output_mse():
    """mse with n_outputs=1 refuses y of shape (n, 2)."""
    X, _ = _data()
    with pytest.raises(ValueError, match=r"^y must have shape .*n_outputs=1"):
        _fit(fg.Linear(3), X, _rng().normal(size=(N, 2)))


def test_softmax_y_must_be_1d():
    """softmax targets of shape (n, 2) are refused (class ids are 1-D)."""
    X, _ = _data()
    y = _rng().integers(0, 3, size=(N, 2))
    with pytest.raises(ValueError, match=r"^y must be 1-D class ids"):
        _fit(fg.Linear(3, 3, loss="softmax"), X, y)


def test_X_must_be_2d():
    """A 1-D X is refused with its shape."""
    with pytest.raises(ValueError, match=r"^X must be 2-D"):
        _fit(fg.Linear(3), _rng().normal(size=N), _rng().normal(size=N))


def test_empty_X():
    """X with zero rows is refused as empty."""
    with pytest.raises(ValueError, match=r"^X is empty"):
        _fit(fg.Linear(3), np.empty((0, 3)), np.empty(0))


def test_empty_X_val():
    """X_val with zero rows is refused as empty."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^X_val is empty"):
        _fit(fg.Linear(3), X, y, X_val=np.empty((0, 3)), y_val=np.empty(0))


# ----------------------------------------------------------------------------- NaN / inf
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_non_finite_X(bad, backend):
    """NaN or inf anywhere in X is refused before training."""
    X, y = _data()
    X[_rng().integers(N), _rng().integers(D)] = bad
    with pytest.raises(ValueError, match=r"^X contains NaN or inf"):
        _fit(fg.Linear(3), X, y, backend=backend)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_y(bad):
    """NaN or inf in y (mse) is refused."""
    X, y = _data()
    y[_rng().integers(N)] = bad
    with pytest.raises(ValueError, match=r"^y contains NaN or inf"):
        _fit(fg.Linear(3), X, y)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_logistic_y(bad):
    """NaN/inf in logistic targets is reported as non-finite, not as out of range."""
    X, y = _data(loss="logistic")
    y[3] = bad
    with pytest.raises(ValueError, match=r"^y contains NaN or inf"):
        _fit(fg.Linear(3, loss="logistic"), X, y)


def test_nan_softmax_y():
    """A NaN class id is refused as a non-integer class id."""
    X, y = _data(k=3, loss="softmax")
    y = y.astype(float)
    y[0] = np.nan
    with pytest.raises(ValueError, match=r"^y must hold integer class ids"):
        _fit(fg.Linear(3, 3, loss="softmax"), X, y)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_inf_softmax_y(bad):
    """An infinite class id is refused with a ValueError naming y."""
    X, y = _data(k=3, loss="softmax")
    y = y.astype(float)
    y[0] = bad
    with pytest.raises(ValueError, match=r"^y "):
        _fit(fg.Linear(3, 3, loss="softmax"), X, y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X_val(bad):
    """NaN or inf in X_val is reported as X_val."""
    X, y = _data()
    Xv, yv = _data(n=10)
    Xv[4, 1] = bad
    with pytest.raises(ValueError, match=r"^X_val contains NaN or inf"):
        _fit(fg.Linear(3), X, y, X_val=Xv, y_val=yv)


def test_non_finite_y_val():
    """NaN in y_val is reported as y_val."""
    X, y = _data()
    Xv, yv = _data(n=10)
    yv[2] = np.nan
    with pytest.raises(ValueError, match=r"^y_val contains NaN or inf"):
        _fit(fg.Linear(3), X, y, X_val=Xv, y_val=yv)


def test_huge_finite_X_passes_the_finiteness_check():
    """Finite values whose sum overflows are not mistaken for inf (exact fallback check)."""
    X, _ = _data()
    X[0, 0] = X[1, 0] = np.finfo(np.float64).max
    with np.errstate(all="ignore"):
        out = check_features(X, D, np.dtype("float64"))
    np.testing.assert_array_equal(out, X)
    X[2, 2] = np.inf
    with pytest.raises(ValueError, match=r"^X contains NaN or inf"), np.errstate(all="ignore"):
        check_features(X, D, np.dtype("float64"))


# ----------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("make", [
    lambda a: a.astype(str),
    lambda a: a.astype(object),
    lambda a: a.astype(complex),
], ids=["str", "object", "complex"])
def test_non_numeric_X(make):
    """Strings, objects and complex numbers in X raise TypeError naming X."""
    X, y = _data()
    with pytest.raises(TypeError, match=r"^X must hold real numbers"):
        _fit(fg.Linear(3), make(X), y)


@pytest.mark.parametrize("make", [
    lambda a: a.astype(str),
    lambda a: a.astype(object),
    lambda a: a.astype(complex),
], ids=["str", "object", "complex"])
def test_non_numeric_y(make):
    """Strings, objects and complex numbers in y raise TypeError naming y."""
    X, y = _data()
    with pytest.raises(TypeError, match=r"^y must hold real numbers"):
        _fit(fg.Linear(3), X, make(y))


def test_string_class_labels():
    """Softmax labels given as strings are refused (they must be integer ids)."""
    X, _ = _data()
    y = _rng().choice(["cat", "dog", "eel"], size=N)
    with pytest.raises(TypeError, match=r"^y must hold real numbers"):
        _fit(fg.Linear(3, 3, loss="softmax"), X, y)


def test_non_numeric_X_val():
    """A string X_val raises TypeError naming X_val."""
    X, y = _data()
    Xv, yv = _data(n=10)
    with pytest.raises(TypeError, match=r"^X_val must hold real numbers"):
        _fit(fg.Linear(3), X, y, X_val=Xv.astype(str), y_val=yv)


@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_int_and_bool_inputs_are_converted(backend):
    """Integer X and y, and bool X, train exactly like their float64 conversion."""
    rng = _rng()
    Xi = rng.integers(-5, 5, size=(N, D))
    yi = rng.integers(-3, 3, size=N)
    model = fg.Linear(3)
    kw = dict(backend=backend, dtype="float64", epochs=2, batch_size=8)
    got = _fit(model, Xi, yi, **kw)
    want = _fit(model, Xi.astype(np.float64), yi.astype(np.float64), **kw)
    for a, b in zip(got.params, want.params, strict=True):
        np.testing.assert_array_equal(a, b)
    Xb = Xi > 0
    got = _fit(model, Xb, yi, **kw)
    want = _fit(model, Xb.astype(np.float64), yi.astype(np.float64), **kw)
    for a, b in zip(got.params, want.params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bool_logistic_targets_are_converted():
    """Boolean targets for logistic regression are accepted as 0/1."""
    X, _ = _data()
    y = _rng().random(N) > 0.5
    got = _fit(fg.Linear(3, loss="logistic"), X, y, dtype="float64", epochs=2)
    want = _fit(fg.Linear(3, loss="logistic"), X, y.astype(float), dtype="float64", epochs=2)
    np.testing.assert_array_equal(got.params[0], want.params[0])


def test_int_class_ids_as_float_are_accepted():
    """Softmax class ids given as whole floats (and as an (n, 1) column) are accepted."""
    X, y = _data(k=3, loss="softmax")
    model = fg.Linear(3, 3, loss="softmax")
    want = _fit(model, X, y, dtype="float64")
    for yy in (y.astype(float), y.reshape(-1, 1)):
        got = _fit(model, X, yy, dtype="float64")
        np.testing.assert_array_equal(got.params[0], want.params[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float16_X_is_converted_up(dtype):
    """float16 X trains like its conversion to the compute dtype."""
    X, y = _data()
    X16 = X.astype(np.float16)
    got = _fit(fg.Linear(3), X16, y, dtype=dtype, epochs=2)
    want = _fit(fg.Linear(3), X16.astype(dtype), y, dtype=dtype, epochs=2)
    assert got.params[0].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.params[0], want.params[0])


@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_float16_compute_dtype_refused(backend):
    """dtype='float16' is a ValueError that mentions float16."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^dtype must be .*float16"):
        _fit(fg.Linear(3), X, y, dtype="float16", backend=backend)


@pytest.mark.parametrize("dtype", ["int32", "complex128", "bool"])
def test_other_compute_dtypes_refused(dtype):
    """Only float32/float64 are compute dtypes."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^dtype must be 'float32' or 'float64'"):
        _fit(fg.Linear(3), X, y, dtype=dtype)


def test_unparseable_compute_dtype_refused():
    """A dtype name NumPy does not know is a TypeError naming dtype."""
    X, y = _data()
    with pytest.raises(TypeError, match=r"^dtype must be"):
        _fit(fg.Linear(3), X, y, dtype="float-ish")


def test_float16_compute_dtype_refused_by_init_params():
    """Model.init_params refuses float16 too."""
    with pytest.raises(ValueError, match=r"float16"):
        fg.Linear(3).init_params(0, dtype="float16")


# ----------------------------------------------------------------------------- targets
@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_class_id_out_of_range(bad):
    """Softmax class ids must be in [0, n_outputs)."""
    X, y = _data(k=3, loss="softmax")
    y[_rng().integers(N)] = bad
    with pytest.raises(ValueError, match=r"^y has class ids in .*n_outputs=3"):
        _fit(fg.Linear(3, 3, loss="softmax"), X, y)


def test_class_id_out_of_range_in_y_val():
    """Out-of-range class ids in y_val are reported as y_val."""
    X, y = _data(k=3, loss="softmax")
    Xv, yv = _data(n=10, k=3, loss="softmax")
    yv[0] = 3
    with pytest.raises(ValueError, match=r"^y_val has class ids in"):
        _fit(fg.Linear(3, 3, loss="softmax"), X, y, X_val=Xv, y_val=yv)


@pytest.mark.parametrize("bad", [0.5, 1.25, -0.1])
def test_non_integer_class_ids(bad):
    """Fractional class ids are refused for softmax."""
    X, y = _data(k=3, loss="softmax")
    y = y.astype(float)
    y[5] = bad
    with pytest.raises(ValueError, match=r"^y must hold integer class ids"):
        _fit(fg.Linear(3, 3, loss="softmax"), X, y)


@pytest.mark.parametrize("bad", [-0.5, 1.5, 2.0])
@pytest.mark.parametrize("k", [1, 2])
def test_logistic_targets_outside_unit_interval(bad, k):
    """Logistic targets must lie in [0, 1]."""
    X, y = _data(k=k, loss="logistic")
    y.reshape(-1)[7] = bad
    with pytest.raises(ValueError, match=r"^y must be in \[0, 1\] for loss='logistic'"):
        _fit(fg.MLP([3, 4, k], loss="logistic"), X, y)


def test_logistic_soft_targets_accepted():
    """Probabilities strictly inside [0, 1] are valid logistic targets."""
    X, _ = _data()
    res = _fit(fg.Linear(3, loss="logistic"), X, _rng().random(N))
    assert np.isfinite(res.history[-1].train_loss)


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("sizes", [[64], [], (5,)])
def test_mlp_needs_two_sizes(sizes):
    """A network needs at least an input and an output size."""
    with pytest.raises(ValueError, match=r"at least two layer sizes"):
        fg.MLP(sizes)


@pytest.mark.parametrize("sizes", [[4, 0, 2], [4, -3, 2], [0, 2], [4, 2.5, 2], [4, True, 2]])
def test_layer_sizes_must_be_positive_integers(sizes):
    """Zero, negative, fractional and boolean layer sizes are refused."""
    with pytest.raises(ValueError, match=r"^layer sizes must be positive integers"):
        fg.MLP(sizes)


@pytest.mark.parametrize("args", [(0,), (-1,), (3, 0), (3, -2)])
def test_linear_sizes_must_be_positive(args):
    """Linear(n_features, n_outputs) with a size < 1 is refused."""
    with pytest.raises(ValueError, match=r"^layer sizes must be positive integers"):
        fg.Linear(*args)


def test_unknown_loss():
    """An unknown loss name is refused by the model."""
    with pytest.raises(ValueError, match=r"^loss must be one of .*'hinge'"):
        fg.Linear(3, loss="hinge")


def test_unknown_activation():
    """An unknown activation name is refused by the model."""
    with pytest.raises(ValueError, match=r"^activation must be one of .*'gelu'"):
        fg.MLP([3, 4, 2], activation="gelu")


def test_softmax_needs_two_outputs():
    """Softmax with a single logit is refused."""
    with pytest.raises(ValueError, match=r"loss='softmax' needs n_outputs >= 2"):
        fg.Linear(3, 1, loss="softmax")


# ----------------------------------------------------------------------------- mode / batch
@pytest.mark.parametrize("bs", [0, -1, N + 1])
@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_batch_size_out_of_range(bs, backend):
    """mbgd batch_size must be in [1, n]."""
    X, y = _data()
    with pytest.raises(ValueError, match=rf"^batch_size must be in \[1, {N}\]"):
        _fit(fg.Linear(3), X, y, mode="mbgd", batch_size=bs, backend=backend)


def test_batch_size_must_be_an_integer():
    """A float batch_size is a TypeError naming batch_size."""
    X, y = _data()
    with pytest.raises(TypeError, match=r"^batch_size must be an integer"):
        _fit(fg.Linear(3), X, y, batch_size=4.0)


def test_sgd_with_batch_size():
    """mode='sgd' with batch_size=5 is refused, naming batch_size."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^mode='sgd' uses batch_size=1"):
        _fit(fg.Linear(3), X, y, mode="sgd", batch_size=5)


@pytest.mark.parametrize("bs", [1, N - 1, N + 1])
def test_bgd_with_other_batch_size(bs):
    """mode='bgd' with a batch size other than n is refused, naming batch_size."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^mode='bgd' uses all .* drop batch_size"):
        _fit(fg.Linear(3), X, y, mode="bgd", batch_size=bs)


def test_sgd_and_bgd_accept_their_own_batch_size():
    """mode='sgd' with batch_size=1 and mode='bgd' with batch_size=n are fine."""
    X, y = _data()
    assert _fit(fg.Linear(3), X, y, mode="sgd", batch_size=1).steps == N
    assert _fit(fg.Linear(3), X, y, mode="bgd", batch_size=N).steps == 1


@pytest.mark.parametrize("mode", ["adam", "SGD", "", None])
def test_unknown_mode(mode):
    """An unknown mode names mode and the valid choices."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^mode must be one of 'bgd', 'sgd', 'mbgd'"):
        _fit(fg.Linear(3), X, y, mode=mode)


# ----------------------------------------------------------------------------- optimizer
@pytest.mark.parametrize("epochs", [0, -2])
def test_epochs_must_be_positive(epochs):
    """epochs must be >= 1."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^epochs must be >= 1"):
        _fit(fg.Linear(3), X, y, epochs=epochs)


def test_epochs_must_be_an_integer():
    """A float epochs is a TypeError naming epochs."""
    X, y = _data()
    with pytest.raises(TypeError, match=r"^epochs must be an integer"):
        _fit(fg.Linear(3), X, y, epochs=2.0)


@pytest.mark.parametrize("lr", [0, 0.0, -0.1, -1e-9])
@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_lr_must_be_positive(lr, backend):
    """lr must be > 0."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^lr must be > 0"):
        _fit(fg.Linear(3), X, y, lr=lr, backend=backend)


@pytest.mark.parametrize("lr", [np.nan, np.inf, "0.1", [0.1]])
def test_lr_must_be_a_finite_number(lr):
    """NaN, inf and non-numbers as lr are refused, naming lr (``lr=None`` means not given:
    SGD's default, tests/test_optim.py)."""
    X, y = _data()
    # NaN is currently a TypeError ("must be a finite number"); either class is acceptable
    with pytest.raises((TypeError, ValueError), match=r"^lr must be a finite number"):
        _fit(fg.Linear(3), X, y, lr=lr)


@pytest.mark.parametrize("name", ["momentum", "weight_decay"])
def test_negative_momentum_and_weight_decay(name):
    """Negative momentum / weight_decay are refused, naming the argument."""
    X, y = _data()
    with pytest.raises(ValueError, match=rf"^{name} must be >= 0"):
        _fit(fg.Linear(3), X, y, **{name: -0.1})


@pytest.mark.parametrize("name", ["momentum", "weight_decay"])
def test_nan_momentum_and_weight_decay(name):
    """NaN momentum / weight_decay are refused, naming the argument."""
    X, y = _data()
    with pytest.raises((TypeError, ValueError), match=rf"^{name} must be a finite number"):
        _fit(fg.Linear(3), X, y, **{name: np.nan})


def test_nesterov_needs_momentum():
    """nesterov=True with momentum=0 is refused, as in torch.optim.SGD."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^nesterov=True needs momentum > 0"):
        _fit(fg.Linear(3), X, y, nesterov=True, momentum=0.0)


def test_negative_seed():
    """A negative seed is refused, naming seed."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^seed must be >= 0"):
        _fit(fg.Linear(3), X, y, seed=-1)


@pytest.mark.parametrize("name", ["cuda", "numba", "NumPy", ""])
def test_unknown_backend(name):
    """An unknown backend name names backend and the valid choices."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^backend must be one of 'numpy', 'numba-cpu'"):
        _fit(fg.Linear(3), X, y, backend=name)


def test_unknown_backend_via_create():
    """backends.create refuses unknown names the same way."""
    with pytest.raises(ValueError, match=r"^backend must be one of"):
        fg.backends.create("tpu")


def test_unknown_lr_schedule_name():
    """An unknown schedule name names lr_schedule and the valid choices."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^lr_schedule must be one of .*'exponential'"):
        _fit(fg.Linear(3), X, y, lr_schedule="exponential")


def test_lr_schedule_of_wrong_type():
    """A non-callable schedule is a TypeError naming lr_schedule."""
    X, y = _data()
    with pytest.raises(TypeError, match=r"^lr_schedule must be"):
        _fit(fg.Linear(3), X, y, lr_schedule=0.5)


def test_lr_schedule_giving_zero_lr():
    """A schedule that yields lr <= 0 during training is refused, naming lr_schedule."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^lr_schedule gave lr=0.0 at epoch 1"):
        _fit(fg.Linear(3), X, y, epochs=3, lr_schedule=lambda e: 0.1 if e == 0 else 0.0)


@pytest.mark.parametrize("which", ["X_val", "y_val"])
def test_validation_set_needs_both(which):
    """X_val without y_val (or the reverse) is refused."""
    X, y = _data()
    Xv, yv = _data(n=10)
    kw = {"X_val": Xv} if which == "X_val" else {"y_val": yv}
    with pytest.raises(ValueError, match=r"give both X_val and y_val"):
        _fit(fg.Linear(3), X, y, **kw)


# ----------------------------------------------------------------------------- params
def test_params_wrong_count():
    """Too few or too many parameter arrays name params and the expected shapes."""
    X, y = _data()
    model = fg.MLP([3, 4, 2], loss="mse")
    p = model.init_params(0)
    X, y = _data(k=2)
    for bad in (p[:-1], p + [np.zeros(2)], []):
        with pytest.raises(ValueError, match=r"^params must be a list of 4 arrays"):
            _fit(model, X, y, params=bad)


def test_params_not_a_list():
    """A bare array as params is refused, naming params."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"^params must be a list"):
        _fit(fg.Linear(3), X, y, params=np.zeros((3, 1)))


@pytest.mark.parametrize("index, shape", [(0, (1, 3)), (0, (3,)), (1, (2,)), (1, (1, 1))])
def test_params_wrong_shape(index, shape):
    """A parameter of the wrong shape names its index and the expected shape."""
    X, y = _data()
    model = fg.Linear(3)
    p = model.init_params(0)
    p[index] = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"^params\[{index}\] has shape"):
        _fit(model, X, y, params=p)


def test_params_non_finite_and_non_numeric():
    """NaN or strings inside params are refused, naming the array."""
    X, y = _data()
    model = fg.Linear(3)
    p = model.init_params(0)
    p[1] = np.array([np.nan])
    with pytest.raises(ValueError, match=r"^params\[1\] contains NaN or inf"):
        _fit(model, X, y, params=p)
    p = model.init_params(0)
    p[0] = p[0].astype(str)
    with pytest.raises(TypeError, match=r"^params\[0\] must hold real numbers"):
        _fit(model, X, y, params=p)


# ----------------------------------------------------------------------------- memory order
@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fortran_and_strided_X_match_c_contiguous(backend, dtype):
    """Fortran-ordered and strided-view X give bitwise the same params as a C copy."""
    rng = _rng()
    big = rng.normal(size=(2 * N, 2 * D))
    Xs = big[::2, ::2]  # non-contiguous view
    assert not Xs.flags.c_contiguous
    Xc = np.ascontiguousarray(Xs)
    Xf = np.asfortranarray(Xs)
    assert Xf.flags.f_contiguous and not Xf.flags.c_contiguous
    y = rng.integers(0, 3, size=2 * N)[::2]  # strided targets too
    model = fg.MLP([D, 5, 3])
    kw = dict(backend=backend, dtype=dtype, epochs=2, batch_size=7, momentum=0.9, seed=3)
    want = _fit(model, Xc, np.ascontiguousarray(y), **kw)
    for X in (Xs, Xf):
        got = _fit(model, X, y, **kw)
        for a, b in zip(got.params, want.params, strict=True):
            np.testing.assert_array_equal(a, b)
        assert [r.train_loss for r in got.history] == [r.train_loss for r in want.history]


@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_caller_arrays_are_not_modified(backend):
    """fit leaves X, y, X_val, y_val and params exactly as they were (float64 in, float64
    compute, so no conversion copy hides an in-place update)."""
    rng = _rng()
    model = fg.MLP([D, 4, 1], loss="mse")
    X, y = rng.normal(size=(N, D)), rng.normal(size=(N, 1))
    Xv, yv = rng.normal(size=(10, D)), rng.normal(size=(10, 1))
    params = model.init_params(5, dtype="float64")
    copies = [a.copy() for a in (X, y, Xv, yv, *params)]
    res = _fit(model, X, y, backend=backend, dtype="float64", epochs=2, batch_size=8,
               momentum=0.5, weight_decay=0.1, params=params, X_val=Xv, y_val=yv)
    for a, b in zip((X, y, Xv, yv, *params), copies, strict=True):
        np.testing.assert_array_equal(a, b)
    # the returned params are new arrays, and they did change
    assert all(not np.shares_memory(r, p) for r, p in zip(res.params, params, strict=True))
    assert not np.array_equal(res.params[0], params[0])


def test_returned_params_are_independent_of_later_fits():
    """Mutating returned params does not affect a later fit from the same inputs."""
    X, y = _data()
    model = fg.Linear(3)
    a = _fit(model, X, y, dtype="float64")
    a.params[0][:] = 123.0
    b = _fit(model, X, y, dtype="float64")
    assert not np.any(b.params[0] == 123.0)


# ----------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_divergence_raises_with_history(backend):
    """A huge lr makes the loss non-finite: DivergenceError carries history and params."""
    rng = _rng()
    X, y = rng.normal(size=(100, 4)), rng.normal(size=100)
    epochs = 50
    with np.errstate(all="ignore"), pytest.raises(fg.DivergenceError, match=r"diverged") as ei:
        fg.fit(fg.Linear(4), X, y, lr=1e6, epochs=epochs, batch_size=10, backend=backend,
               dtype="float64")
    res = ei.value.result
    assert isinstance(ei.value, FloatingPointError)
    assert isinstance(res, fg.FitResult)
    assert res.stopped == "diverged"
    assert 0 < len(res.history) < epochs
    assert not np.isfinite(res.history[-1].train_loss)
    assert all(np.isfinite(r.train_loss) for r in res.history[:-1])
    assert isinstance(res.params, list) and len(res.params) == 2
    assert all(isinstance(p, np.ndarray) for p in res.params)
    assert res.params[0].shape == (4, 1) and res.params[1].shape == (1,)


# ----------------------------------------------------------------------------- Ctrl-C
@pytest.mark.parametrize("cls, backend", [(NumpyBackend, "numpy"),
                                          (NumbaCpuBackend, "numba-cpu")])
def test_keyboard_interrupt_returns_partial_result(monkeypatch, cls, backend):
    """Ctrl-C in the 3rd epoch returns the 2 finished epochs with a RuntimeWarning."""
    original = cls.run_epoch
    calls = []

    def run_epoch(self, epoch, lr):
        calls.append(epoch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, epoch, lr)

    monkeypatch.setattr(cls, "run_epoch", run_epoch)
    X, y = _data()
    model = fg.Linear(3)
    with pytest.warns(RuntimeWarning, match=r"interrupted after 2 epoch"):
        res = fg.fit(model, X, y, epochs=10, batch_size=8, backend=backend, dtype="float64")
    assert res.stopped == "interrupted"
    assert len(res.history) == 2
    assert [r.epoch for r in res.history] == [0, 1]
    assert calls == [0, 1, 2]
    assert len(res.params) == 2 and res.params[0].shape == (3, 1)
    # the params are those after two epochs
    monkeypatch.setattr(cls, "run_epoch", original)
    two = fg.fit(model, X, y, epochs=2, batch_size=8, backend=backend, dtype="float64")
    for a, b in zip(res.params, two.params, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("src", ["float64", "float32", "int64"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_large_inputs_are_checked_and_converted_in_one_parallel_pass(src, order):
    """Arrays past ``PARALLEL_ELEMENTS`` go through ``kernels/cpu/checks.py``: the copy
    equals NumPy's conversion, and a NaN or inf anywhere (first row, a chunk boundary, the
    last value) is found, in the caller's dtype or after conversion."""
    from fastgd.kernels.cpu.checks import CHUNK_ROWS
    from fastgd.validate import PARALLEL_ELEMENTS, all_finite, check_features

    rng = np.random.default_rng()
    n, d = 2 * CHUNK_ROWS + 5, 9
    assert n * d >= PARALLEL_ELEMENTS
    X = (rng.standard_normal((n, d)) * 100).astype(src)
    X = np.asfortranarray(X) if order == "F" else X
    for dt in (np.float32, np.float64):
        out = check_features(X, d, np.dtype(dt))
        assert out.dtype == dt and out.flags.c_contiguous
        np.testing.assert_array_equal(out, np.ascontiguousarray(X, dtype=dt))
    if src == "int64":
        return
    for row, col in ((0, 0), (CHUNK_ROWS, 3), (n - 1, d - 1)):
        for bad in (np.nan, np.inf, -np.inf):
            Z = X.copy(order=order)
            Z[row, col] = bad
            for dt in (np.float32, np.float64):
                with pytest.raises(ValueError, match="X contains NaN or inf"):
                    check_features(Z, d, np.dtype(dt))
            assert not all_finite(np.ascontiguousarray(Z))
    assert all_finite(np.ascontiguousarray(X))
    if src == "float64":  # finite in float64, inf once converted to float32
        Z = X.copy(order=order)
        Z[7, 1] = 1e300
        check_features(Z, d, np.dtype(np.float64))
        with pytest.raises(ValueError, match="NaN or inf"):
            check_features(Z, d, np.dtype(np.float32))


@pytest.mark.parametrize("src", ["float16", ">f8", ">f4", "bool"])
def test_large_inputs_numba_cannot_compile_are_converted_by_numpy(src):
    """float16, byte-swapped and bool arrays past the parallel threshold take NumPy's
    conversion (Numba compiles none of them) and are still checked."""
    from fastgd.validate import PARALLEL_ELEMENTS, check_features

    rng = np.random.default_rng()
    X = rng.standard_normal((PARALLEL_ELEMENTS // 4 + 3, 4))
    X = (X > 0) if src == "bool" else X.astype(src)
    out = check_features(X, 4, np.dtype(np.float32))
    np.testing.assert_array_equal(out, X.astype(np.float32))
    if src != "bool":
        X[3, 2] = np.inf
        with pytest.raises(ValueError, match="NaN or inf"):
            check_features(X, 4, np.dtype(np.float32))


def test_overflow_in_the_last_step_is_a_divergence():
    """Each batch loss precedes its step, so a final update that overflows shows only in
    the parameters: still a DivergenceError, saying so, with the history."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 3)).astype(np.float32)
    y = 100 * X.sum(1)
    with pytest.raises(fg.DivergenceError, match="parameters are NaN/inf") as err:
        fg.fit(fg.Linear(3), X, y, mode="bgd", epochs=1, lr=1e37, backend="numba-cpu")
    assert len(err.value.result.history) == 1
    assert np.isfinite(err.value.result.history[0].train_loss)


@pytest.mark.parametrize("bad", ["block", "yes", 1, None, "Rows"])
def test_unknown_shuffle_is_an_error(bad):
    """A shuffle that is not True/'rows', 'blocks', 'once' or False is refused, naming what
    is accepted (before, any truthy value silently meant True)."""
    model, X, y = fg.Linear(3), np.ones((10, 3), np.float32), np.ones(10, np.float32)
    with pytest.raises(ValueError, match=r"shuffle must be True or 'rows'.*'blocks'.*'once'"):
        fg.fit(model, X, y, shuffle=bad, backend="numpy", epochs=1)


def test_shuffle_rows_is_true():
    """``shuffle="rows"`` names today's full permutation: the same run as ``True``."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((40, 3)), rng.standard_normal(40)
    a, b = (fg.fit(fg.Linear(3), X, y, batch_size=4, shuffle=s, backend="numpy", epochs=2)
            for s in (True, "rows"))
    np.testing.assert_array_equal(a.params[0], b.params[0])


def test_shuffle_blocks_plan():
    """``shuffle="blocks"``: a shuffled plan with power-of-two blocks of about 64 KiB of
    float32 features; BGD is never shuffled; the run differs from a row shuffle's."""
    from fastgd.plan import Plan

    plan = Plan.for_model(fg.Linear(64), "float32", "mbgd", 32, shuffle="blocks")
    assert plan.shuffle and plan.block_rows == 256 and not plan.shuffle_once
    assert Plan.for_model(fg.Linear(64), "float32", "mbgd", 32, shuffle=True).block_rows == 0
    bgd = Plan.for_model(fg.Linear(64), "float32", "bgd", 10, shuffle="blocks")
    assert not bgd.shuffle and bgd.block_rows == 0
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((600, 3)), rng.standard_normal(600)
    a, b = (fg.fit(fg.Linear(3), X, y, batch_size=8, shuffle=s, backend="numpy", epochs=1)
            for s in (True, "blocks"))
    assert not np.array_equal(a.params[0], b.params[0])


@pytest.mark.parametrize("backend", ["numpy", "numba-cpu"])
def test_shuffle_once_is_one_permutation_of_a_private_copy(backend):
    """``shuffle="once"`` trains exactly like the data permuted once by ``permutation(seed,
    0, n)`` and given in order; the caller's arrays are not reordered."""
    from fastgd.kernels.permutation import permutation

    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((50, 3)), rng.standard_normal(50)
    X0, y0 = X.copy(), y.copy()
    kw = dict(batch_size=8, epochs=2, backend=backend, dtype="float64", seed=4)
    once = fg.fit(fg.Linear(3), X, y, shuffle="once", **kw)
    order = permutation(4, 0, 50)
    manual = fg.fit(fg.Linear(3), X[order], y[order], shuffle=False, **kw)
    np.testing.assert_array_equal(once.params[0], manual.params[0])
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)
