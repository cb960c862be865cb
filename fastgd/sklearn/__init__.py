"""scikit-learn estimators over fastgd's engine: ``GDRegressor``, ``GDClassifier``,
``MLPRegressor``, ``MLPClassifier`` (needs scikit-learn: ``pip install fastgd[data]``).

Drop-in for pipelines, ``GridSearchCV``, ``cross_val_score`` and ``partial_fit`` loops
(``dask_ml.wrappers.Incremental`` included); each ``fit`` validates, maps scikit-learn's
names to fastgd's settings and runs the compiled epochs of :func:`fastgd.fit`.
"""

from .linear import GDClassifier, GDRegressor
from .mlp import MLPClassifier, MLPRegressor

__all__ = ["GDClassifier", "GDRegressor", "MLPClassifier", "MLPRegressor"]
