"""The scikit-learn estimators and streamed data as pytest-benchmark groups (the report
scripts ``report_sklearn.py`` and ``report_streaming.py`` give the one-run ratios).

Groups: ``estimator-logistic-sgd`` (``GDClassifier(mode="sgd")`` against
``SGDClassifier(loss="log_loss")``, one epoch, float64), ``estimator-mlp-digits``
(``MLPClassifier`` against scikit-learn's with ``solver="sgd"``, 64-128-10, batch 200, 5
epochs) and ``streaming`` (``fg.fit`` on an array against the same rows as 64k-row chunks).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastgd as fg
from fastgd import chunks

sklearn = pytest.importorskip("sklearn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import SGDClassifier  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

from fastgd import sklearn as fgsk  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _fit_rounds(benchmark, est, X, y, rounds=3):
    est.fit(X, y)  # compile or load fastgd's kernels before the timed rounds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        benchmark.pedantic(lambda: est.fit(X, y), rounds=rounds, iterations=1)
    benchmark.extra_info["samples"] = len(X) * est.n_iter_


@pytest.fixture(scope="module")
def logistic64(logistic_xy):
    X, y = logistic_xy
    return X.astype(np.float64), y.astype(np.int64)


@pytest.mark.benchmark(group="estimator-logistic-sgd")
def test_gdclassifier_sgd(benchmark, logistic64):
    """fastgd's estimator, batch 1, row shuffle, one epoch."""
    est = fgsk.GDClassifier(mode="sgd", eta0=0.01, alpha=0.0, max_iter=1, tol=None,
                            random_state=0)
    _fit_rounds(benchmark, est, *logistic64)


@pytest.mark.benchmark(group="estimator-logistic-sgd")
def test_sklearn_sgdclassifier_estimator(benchmark, logistic64):
    """scikit-learn's, the same loss, rate, epoch, no penalty."""
    est = SGDClassifier(loss="log_loss", penalty=None, learning_rate="constant", eta0=0.01,
                        max_iter=1, tol=None, random_state=0)
    _fit_rounds(benchmark, est, *logistic64)


@pytest.fixture(scope="module")
def digits():
    X, y = fg.datasets.load_digits()
    (X,) = fg.datasets.standardize(X.astype(np.float64))
    return X, y


MLP_COMMON = dict(hidden_layer_sizes=(128,), solver="sgd", alpha=0.0, batch_size=200,
                  learning_rate_init=0.01, max_iter=5, random_state=0)


@pytest.mark.benchmark(group="estimator-mlp-digits")
def test_fastgd_mlpclassifier(benchmark, digits):
    """fastgd's MLPClassifier, 5 epochs."""
    _fit_rounds(benchmark, fgsk.MLPClassifier(tol=None, **MLP_COMMON), *digits)


@pytest.mark.benchmark(group="estimator-mlp-digits")
def test_sklearn_mlpclassifier_estimator(benchmark, digits):
    """scikit-learn's MLPClassifier(solver="sgd"), 5 epochs."""
    _fit_rounds(benchmark, MLPClassifier(tol=0.0, n_iter_no_change=10, **MLP_COMMON),
                *digits)


@pytest.mark.benchmark(group="streaming")
@pytest.mark.parametrize("feed", ["array", "chunks"])
def test_streamed_fit(benchmark, linear_xy, feed):
    """One MBGD-256 epoch over the linear data, in memory or as 64k-row chunks."""
    X, y = linear_xy
    data = (X, y) if feed == "array" else (chunks.from_arrays(X, y, 65536), None)
    fg.fit(fg.Linear(64), *data, batch_size=256, epochs=1, lr=1e-4)
    benchmark.pedantic(lambda: fg.fit(fg.Linear(64), *data, batch_size=256, epochs=1,
                                      lr=1e-4), rounds=3, iterations=1)
    benchmark.extra_info["samples"] = len(X)
