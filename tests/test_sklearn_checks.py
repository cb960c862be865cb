"""scikit-learn's own estimator checks judge fastgd's estimators (pandas installed in the
test extra, so the DataFrame checks run too)."""

import pytest

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastgd.sklearn import GDClassifier, GDRegressor, MLPClassifier, MLPRegressor  # noqa: E402

#: Small networks and few epochs keep the suite fast; the checks' accuracy thresholds hold.
ESTIMATORS = [
    GDRegressor(),
    GDClassifier(),
    MLPRegressor(hidden_layer_sizes=(16,), max_iter=200),
    MLPClassifier(hidden_layer_sizes=(16,), max_iter=200),
]


def expected_failures(estimator) -> dict:
    """Checks an estimator is known to fail, each with its reason (the estimator's own
    list: one check, sample weights against repeated rows)."""
    failures = estimator._expected_failed_checks()
    assert len(failures) <= 3 and all(failures.values())
    return failures


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    """Every check of ``sklearn.utils.estimator_checks``."""
    check(estimator)
