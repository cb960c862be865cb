"""fastgd.sklearn beyond scikit-learn's checks: the same numbers as fg.fit, partial_fit
semantics, pickling, bad input that leaves the estimator as it was, scikit-learn's tools."""

import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import fastgd as fg  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
from fastgd.sklearn import GDClassifier, GDRegressor, MLPClassifier, MLPRegressor  # noqa: E402
from fastgd.sklearn._base import SklearnRate  # noqa: E402


def regression(n=600, d=8, seed=0, outputs=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((d, outputs))
    y = X @ W + 0.1 * rng.standard_normal((n, outputs))
    return X, (y[:, 0] if outputs == 1 else y)


def classification(n=600, d=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal((d, classes))).argmax(axis=1)
    return X, np.array(["ant", "bee", "cat", "dog"][:classes])[y]


# ----------------------------------------------------------------------------- same as fg.fit
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_regressor_equals_fit(optimizer):
    """A thin layer: the same settings give fg.fit's parameters bit for bit."""
    X, y = regression()
    est = GDRegressor(max_iter=4, tol=None, eta0=0.02, alpha=0.0, random_state=3,
                      batch_size=16, optimizer=optimizer).fit(X, y)
    opt = fg.SGD(lr=0.02) if optimizer == "sgd" else fg.Adam(lr=0.02)
    res = fg.fit(fg.Linear(8, 1), X, y, batch_size=16, epochs=4, optimizer=opt, seed=3,
                 dtype="float64")
    np.testing.assert_array_equal(est.coef_, res.params[0][:, 0])
    np.testing.assert_array_equal(est.intercept_, res.params[1])
    assert est.loss_curve_ == [r.train_loss for r in res.history]
    assert est.n_iter_ == 4 and est.t_ == 4 * len(X)


def test_classifier_equals_fit_on_class_ids():
    """Multinomial: labels become ids in classes_ order; softmax regression as fg.fit."""
    X, y = classification()
    est = GDClassifier(max_iter=3, tol=None, eta0=0.1, alpha=0.0, random_state=1,
                       batch_size=32, momentum=0.9, nesterovs_momentum=True).fit(X, y)
    ids = np.searchsorted(est.classes_, y)
    res = fg.fit(fg.Linear(8, 3, "softmax"), X, ids, batch_size=32, epochs=3, seed=1,
                 optimizer=fg.SGD(lr=0.1, momentum=0.9, nesterov=True), dtype="float64")
    np.testing.assert_array_equal(est.coef_, res.params[0].T)
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (est.predict(X) == est.classes_[proba.argmax(axis=1)]).all()


def test_mlp_classifier_binary_is_logistic_and_learns():
    X, y = classification(classes=2)
    est = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0).fit(X, y)
    assert est.coefs_[-1].shape == (32, 1) and est.n_outputs_ == 1
    assert est.score(X, y) > 0.95
    d = est.decision_function(X)
    assert d.shape == (len(X),)
    assert ((d > 0) == (est.predict(X) == est.classes_[1])).all()


def test_mlp_regressor_multioutput():
    X, y = regression(outputs=3)
    est = MLPRegressor(hidden_layer_sizes=(32,), max_iter=100, random_state=0,
                       learning_rate_init=0.01).fit(X, y)
    assert est.predict(X).shape == (len(X), 3) and est.score(X, y) > 0.9


# ----------------------------------------------------------------------------- settings
def test_invscaling_is_sklearns_rate_of_samples_seen():
    """eta0 / t ** power_t with t = samples seen before the step + 1 (scikit-learn's t_)."""
    rate = SklearnRate("invscaling", power_t=0.25, batch=8)
    np.testing.assert_allclose(rate.rates(0.1, 0, 1, 3, 2),
                               [0.1 / 25 ** 0.25, 0.1 / 33 ** 0.25])


def test_tol_stops_early_and_adaptive_divides():
    X, y = regression()
    est = GDRegressor(max_iter=500, tol=1e-3, n_iter_no_change=3, random_state=0).fit(X, y)
    assert est.n_iter_ < 500
    ada = GDRegressor(max_iter=200, tol=1e-3, n_iter_no_change=2, learning_rate="adaptive",
                      random_state=0).fit(X, y)
    assert ada._rate.factor < 1.0  # the rate was divided by 5 at least once


def test_early_stopping_keeps_the_best_validation_score():
    X, y = classification(n=800)
    est = GDClassifier(early_stopping=True, n_iter_no_change=3, max_iter=100, random_state=0,
                       eta0=0.05).fit(X, y)
    assert len(est.validation_scores_) == est.n_iter_
    assert est.best_validation_score_ == max(est.validation_scores_)


def test_warm_start_continues_from_the_coefficients():
    X, y = regression()
    est = GDRegressor(max_iter=2, tol=None, warm_start=True, random_state=0).fit(X, y)
    first = est.coef_.copy()
    est.fit(X, y)
    cold = GDRegressor(max_iter=2, tol=None, random_state=0).fit(X, y)
    assert not np.array_equal(est.coef_, first)
    assert np.abs(est.coef_ - cold.coef_).max() > 0


@pytest.mark.parametrize("bad, match", [
    (dict(learning_rate="optimal"), "learning_rate"),
    (dict(optimizer="lbfgs"), "optimizer must be one of"),
    (dict(max_iter=0), "max_iter"),
    (dict(mode="full"), "mode must be one of"),
    (dict(validation_fraction=1.5), "validation_fraction"),
    (dict(backend="nope"), "nope"),
])
def test_bad_settings_are_clear_errors_at_fit(bad, match):
    X, y = regression(n=50)
    est = GDRegressor(**bad)  # constructing never validates (scikit-learn's rule)
    with pytest.raises((ValueError, KeyError), match=match):
        est.fit(X, y)


def test_mlp_rejects_lbfgs_and_identity():
    X, y = classification(n=60)
    with pytest.raises(ValueError, match="quasi-Newton"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="identity"):
        MLPClassifier(activation="identity").fit(X, y)


def test_not_fitted():
    for est in (GDRegressor(), GDClassifier(), MLPRegressor(), MLPClassifier()):
        with pytest.raises(NotFittedError):
            est.predict(np.zeros((2, 3)))


# ----------------------------------------------------------------------------- partial_fit
def test_partial_fit_continues_like_epochs_of_fit():
    """partial_fit on the whole data is one more epoch of the same run (shuffle included):
    three calls equal fit with max_iter=3."""
    X, y = classification()
    fitted = GDClassifier(max_iter=3, tol=None, random_state=5, batch_size=20).fit(X, y)
    inc = GDClassifier(random_state=5, batch_size=20)
    for _ in range(3):
        inc.partial_fit(X, y, classes=np.unique(y))
    np.testing.assert_array_equal(inc.coef_, fitted.coef_)
    assert inc.n_iter_ == 3 and inc.t_ == 3 * len(X)


def test_partial_fit_needs_classes_first_and_rejects_new_ones():
    X, y = classification(classes=3)
    est = GDClassifier(random_state=0)
    with pytest.raises(ValueError, match="greater than one|classes"):
        est.partial_fit(X[y == "ant"], y[y == "ant"])
    est.partial_fit(X, y, classes=["ant", "bee", "cat", "dog"])
    before = (est.coef_.copy(), est.n_iter_, est.t_, list(est.loss_curve_))
    y_new = y.copy()
    y_new[:5] = "eel"
    with pytest.raises(ValueError, match="eel"):
        est.partial_fit(X, y_new)
    np.testing.assert_array_equal(est.coef_, before[0])
    assert (est.n_iter_, est.t_, est.loss_curve_) == before[1:]
    with pytest.raises(ValueError, match="features"):
        est.partial_fit(X[:, :5], y)
    est.partial_fit(X, y)  # still usable
    assert est.n_iter_ == 2


def test_partial_fit_chunk_errors_undo_the_epoch():
    """A chunk of another width or dtype, half-way through an epoch, raises and leaves the
    parameters, optimizer state and counters as they were."""
    X, y = regression(n=300)
    est = GDRegressor(random_state=0, optimizer="adam").partial_fit(X, y)
    coef, state = est.coef_.copy(), est._sess.state_now()[1].copy()
    good = [(X[:100], y[:100]), (X[100:200], y[100:200])]
    for bad, match in (((X[200:, :5], y[200:]), "features"),
                       ((X[200:].astype(np.float32), y[200:]), "dtype")):
        with pytest.raises(ValueError, match=match):
            est.partial_fit(good + [bad])
        np.testing.assert_array_equal(est.coef_, coef)
        np.testing.assert_array_equal(est._sess.state_now()[1], state)
        assert est.n_iter_ == 1
    with pytest.raises(ValueError, match="no chunks|no rows"):
        est.partial_fit(iter([]))
    assert est.n_iter_ == 1


def test_partial_fit_on_chunks_equals_arrays():
    """Chunks of any sizes, unshuffled: the same steps as the concatenated arrays."""
    X, y = regression(n=500)
    a = GDRegressor(random_state=0, shuffle=False, batch_size=16).partial_fit(X, y)
    cuts = [0, 37, 200, 201, 480, 500]
    pieces = [(X[i:j], y[i:j]) for i, j in zip(cuts[:-1], cuts[1:], strict=True)]
    b = GDRegressor(random_state=0, shuffle=False, batch_size=16).partial_fit(pieces)
    np.testing.assert_array_equal(a.coef_, b.coef_)


# ----------------------------------------------------------------------------- pickling, tools
@pytest.mark.parametrize("cls", [GDClassifier, MLPClassifier])
def test_pickle_round_trip_predicts_the_same_and_trains_on(cls):
    X, y = classification()
    est = cls(max_iter=5, random_state=0, **({"hidden_layer_sizes": (8,)}
                                              if cls is MLPClassifier else {})).fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))
    # the engine is rebuilt from the pickled parameters and optimizer state
    est.partial_fit(X, y)
    again.partial_fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))


def test_clone_grid_search_pipeline_cross_val():
    X, y = classification(n=300)
    est = GDClassifier(max_iter=20, random_state=0)
    assert clone(est).get_params() == est.get_params()
    grid = GridSearchCV(make_pipeline(StandardScaler(), est),
                        {"gdclassifier__eta0": [0.01, 0.1]}, cv=3).fit(X, y)
    assert grid.best_score_ > 0.7
    assert cross_val_score(GDRegressor(max_iter=20, random_state=0),
                           *regression(n=300), cv=3).min() > 0.9


def test_float32_runs_in_float32():
    X, y = regression()
    est = GDRegressor(dtype="float32", max_iter=5, random_state=0).fit(X, y)
    assert est.coef_.dtype == np.float32 and est.predict(X).dtype == np.float32
