"""Linear models trained by fastgd's compiled epochs, as scikit-learn estimators:
``GDRegressor`` (squared error) and ``GDClassifier`` (binary logistic / multinomial
softmax)."""

from __future__ import annotations

import numpy as np

from ..models import Linear
from ._base import BaseGD
from ._targets import ClassificationTargets, RegressionTargets


class _LinearGD(BaseGD):
    """Parameters shared by the two linear estimators (see :class:`GDRegressor`)."""

    _optimizer_param = "optimizer"

    def __init__(self, *, alpha=0.0001, max_iter=1000, tol=1e-3, shuffle=True,
                 random_state=None, learning_rate="constant", eta0=0.01, power_t=0.25,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=5,
                 warm_start=False, mode="mbgd", batch_size="auto", optimizer="sgd",
                 momentum=0.0, nesterovs_momentum=False, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, backend="numba-cpu", dtype="float64", verbose=0):
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.mode = mode
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.backend = backend
        self.dtype = dtype
        self.verbose = verbose

    def _lr(self) -> float:
        return float(self.eta0)

    def _optimizer_name(self):
        return self.optimizer

    @staticmethod
    def _default_batch(n: int) -> int:
        return min(32, n) if n else 32

    def _model(self, n_features: int):
        return Linear(n_features, self._n_outputs(), self._loss_name())

    def _store(self, params) -> None:
        W, b = params
        self.coef_ = np.ascontiguousarray(W.T)
        self.intercept_ = b.copy()
        if getattr(self, "_y_1d", False):
            self.coef_ = self.coef_[0]

    def _params(self) -> list[np.ndarray]:
        coef = np.atleast_2d(self.coef_)
        return [np.ascontiguousarray(coef.T), np.asarray(self.intercept_)]


class GDRegressor(RegressionTargets, _LinearGD):
    """Linear regression trained with fastgd's batch, stochastic or mini-batch gradient
    descent (scikit-learn's ``SGDRegressor``, with true mini-batches and multi-core
    epochs).

    scikit-learn's names: ``alpha`` is L2 weight decay (``torch.optim``'s ``weight_decay``:
    the intercept decays too), ``eta0`` the base learning rate, ``learning_rate``
    ``"constant"``, ``"invscaling"`` (``eta0 / t ** power_t``, ``t`` samples seen) or
    ``"adaptive"`` (divided by 5 after ``n_iter_no_change`` epochs without a ``tol``
    improvement), ``max_iter`` epochs. fastgd's own: ``mode`` (``"bgd"``, ``"sgd"``,
    ``"mbgd"``), ``batch_size`` (``"auto"``: 32), ``optimizer`` (``"sgd"`` with
    ``momentum``/``nesterovs_momentum``, ``"adam"``/``"adamw"`` with ``beta_1``, ``beta_2``,
    ``epsilon``, ``"rmsprop"``, ``"adagrad"``, or a ``fastgd`` optimizer object), ``backend``
    and ``dtype``. The loss is PyTorch's ``MSELoss`` (the mean of squared errors, without
    scikit-learn's 1/2, so its gradient is twice ``SGDRegressor``'s at the same ``eta0``).
    ``y`` may have several columns (one output each). ``sample_weight`` is not supported:
    the compiled epochs weight every row alike.

    Fitted: ``coef_`` (``(n_features,)``, or ``(n_outputs, n_features)``), ``intercept_``,
    ``n_iter_`` (epochs), ``t_`` (samples seen), ``loss_curve_`` (each epoch's mean batch
    loss), ``n_features_in_``, ``feature_names_in_``.
    """


class GDClassifier(ClassificationTargets, _LinearGD):
    """Logistic (two classes) or multinomial softmax (more) regression trained with
    fastgd's gradient descent (scikit-learn's ``SGDClassifier(loss="log_loss")`` with a
    true multinomial model instead of one-vs-rest). Parameters as :class:`GDRegressor`;
    ``loss`` is ``"log_loss"`` (PyTorch's ``BCEWithLogitsLoss`` / ``CrossEntropyLoss``).

    Fitted: ``classes_``, ``coef_`` (``(1, n_features)`` for two classes, else
    ``(n_classes, n_features)``), ``intercept_``, and the attributes of
    :class:`GDRegressor`.
    """

    def __init__(self, *, loss="log_loss", alpha=0.0001, max_iter=1000, tol=1e-3,
                 shuffle=True, random_state=None, learning_rate="constant", eta0=0.01,
                 power_t=0.25, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, warm_start=False, mode="mbgd", batch_size="auto",
                 optimizer="sgd", momentum=0.0, nesterovs_momentum=False, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, backend="numba-cpu", dtype="float64",
                 verbose=0):
        self.loss = loss
        super().__init__(alpha=alpha, max_iter=max_iter, tol=tol, shuffle=shuffle,
                         random_state=random_state, learning_rate=learning_rate, eta0=eta0,
                         power_t=power_t, early_stopping=early_stopping,
                         validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, warm_start=warm_start, mode=mode,
                         batch_size=batch_size, optimizer=optimizer, momentum=momentum,
                         nesterovs_momentum=nesterovs_momentum, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, backend=backend, dtype=dtype, verbose=verbose)

    def _loss_name(self) -> str:
        if self.loss != "log_loss":
            raise ValueError(f"loss must be 'log_loss' (logistic / softmax regression); got "
                             f"{self.loss!r}")
        return "logistic" if len(self.classes_) == 2 else "softmax"
