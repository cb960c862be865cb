"""Multi-layer perceptrons trained by fastgd's compiled epochs, as scikit-learn estimators
(``MLPRegressor``, ``MLPClassifier``: scikit-learn's names and defaults)."""

from __future__ import annotations

import numbers

from ..models import MLP
from ._base import _ACTIVATIONS, BaseGD
from ._targets import ClassificationTargets, RegressionTargets


class _MLPGD(BaseGD):
    """Parameters shared by the two MLP estimators (see :class:`MLPClassifier`)."""

    _optimizer_param = "solver"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, mode="mbgd",
                 backend="numba-cpu", dtype="float64"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.mode = mode
        self.backend = backend
        self.dtype = dtype

    def _lr(self) -> float:
        return float(self.learning_rate_init)

    def _optimizer_name(self):
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is a quasi-Newton method, not gradient descent; "
                             "fastgd offers 'sgd', 'adam', 'adamw', 'rmsprop' and 'adagrad'")
        return self.solver

    @staticmethod
    def _default_batch(n: int) -> int:
        return min(200, n) if n else 200

    def _hidden(self) -> tuple[int, ...]:
        h = self.hidden_layer_sizes
        h = (h,) if isinstance(h, numbers.Integral) else tuple(h)
        if not h or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1
                        for s in h):
            raise ValueError(f"hidden_layer_sizes must be positive integers; got "
                             f"{self.hidden_layer_sizes!r}")
        return tuple(int(s) for s in h)

    def _model(self, n_features: int):
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}; got "
                             f"{self.activation!r} (fastgd's kernels have no 'identity')")
        return MLP([n_features, *self._hidden(), self._n_outputs()],
                   activation=_ACTIVATIONS[self.activation], loss=self._loss_name())

    def _store(self, params) -> None:
        self.coefs_ = [p.copy() for p in params[0::2]]
        self.intercepts_ = [p.copy() for p in params[1::2]]
        self.n_layers_ = len(self.coefs_) + 1
        self.n_outputs_ = self.coefs_[-1].shape[1]

    def _params(self):
        out = []
        for W, b in zip(self.coefs_, self.intercepts_, strict=True):
            out += [W, b]
        return out


class MLPRegressor(RegressionTargets, _MLPGD):
    """A multi-layer perceptron regressor on fastgd's fused compiled epochs, with
    scikit-learn's ``MLPRegressor`` parameters and defaults (``solver`` ``"sgd"`` or
    ``"adam"``, plus ``"adamw"``, ``"rmsprop"``, ``"adagrad"``; ``"lbfgs"`` is not gradient
    descent). ``alpha`` is L2 weight decay (``torch.optim``'s ``weight_decay``, biases
    included; scikit-learn divides its penalty by the batch size and spares the biases);
    the loss is ``MSELoss`` (no 1/2); ``activation`` ``"relu"``, ``"tanh"`` or
    ``"logistic"``. fastgd's own: ``mode``, ``backend``, ``dtype``.

    Fitted: ``coefs_``, ``intercepts_`` (``W`` shaped ``(n_in, n_out)``, as scikit-learn's),
    ``n_iter_``, ``t_``, ``loss_curve_``, ``best_loss_``, ``n_layers_``, ``n_outputs_``, and
    with ``early_stopping`` ``validation_scores_``/``best_validation_score_``.
    """


class MLPClassifier(ClassificationTargets, _MLPGD):
    """A multi-layer perceptron classifier on fastgd's fused compiled epochs (logistic
    output for two classes, softmax for more), with scikit-learn's ``MLPClassifier``
    parameters and defaults; see :class:`MLPRegressor` for the differences."""

    def _loss_name(self) -> str:
        return "logistic" if len(self.classes_) == 2 else "softmax"
