"""What the four estimators share: parameter mapping, the epoch loop with scikit-learn's
stopping rules, ``fit``/``partial_fit`` over arrays or chunked data, prediction.

A thin layer over :class:`fastgd.session.Session`: ``fit`` validates (scikit-learn's
``validate_data``), maps scikit-learn's names to fastgd's settings and runs the engine one
compiled epoch at a time (Python between epochs only, for ``tol``/``n_iter_no_change``,
``early_stopping`` and the ``"adaptive"`` rate).
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .. import optim
from ..chunks import as_chunks, n_features
from ..kernels import reference
from ..optim import Schedule
from ..session import Session

#: scikit-learn's ``solver``/fastgd's ``optimizer`` names and the optimizer each builds
#: from the estimator's parameters. ``lbfgs`` is not gradient descent: not here.
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
LEARNING_RATES = ("constant", "invscaling", "adaptive")
#: scikit-learn's ``"adaptive"`` rate: divided by this after ``n_iter_no_change`` epochs
#: without improvement, and training stops once it falls below ``ADAPTIVE_MIN``.
ADAPTIVE_DIVISOR, ADAPTIVE_MIN = 5.0, 1e-6


@dataclass
class SklearnRate(Schedule):
    """scikit-learn's learning-rate rules as a fastgd schedule: ``"constant"`` (and
    ``"adaptive"``, whose ``factor`` the estimator divides) is ``lr * factor``;
    ``"invscaling"`` is ``lr / t ** power_t`` with ``t`` the samples seen before the step
    plus one (scikit-learn's ``t_``: one step of ``batch`` rows advances it by ``batch``)."""

    kind: str = "constant"
    power_t: float = 0.5
    batch: int = 1
    factor: float = 1.0

    def rates(self, lr, epoch, epochs, step0, n_steps) -> np.ndarray:
        """The rates of steps ``step0 .. step0 + n_steps``."""
        if self.kind == "invscaling":
            t = 1.0 + self.batch * np.arange(step0, step0 + n_steps, dtype=np.float64)
            return lr * self.factor / t ** self.power_t
        return np.full(n_steps, lr * self.factor)


class GDEstimatorMixin:
    """The shared machinery; subclasses give ``_model(n_features, n_outputs)``,
    ``_learning_rate()``, ``_optimizer_name()``, ``_batch(n)`` and the target handling
    (``_encode``, ``_n_outputs``)."""

    _is_classifier = False

    # ------------------------------------------------------------------ settings
    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and rs >= 0:
            return int(rs)
        return int(check_random_state(rs).randint(0, 2**31 - 1))

    def _check_params(self) -> None:
        for name in ("max_iter", "n_iter_no_change"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {v!r}")
        if self.learning_rate not in LEARNING_RATES:
            raise ValueError(f"learning_rate must be one of {LEARNING_RATES}; got "
                             f"{self.learning_rate!r} (scikit-learn's 'optimal' needs its "
                             "own t0 heuristic and is not offered)")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1); got "
                             f"{self.validation_fraction!r}")
        if self.tol is not None and not (isinstance(self.tol, numbers.Real)
                                         and np.isfinite(self.tol)):
            raise ValueError(f"tol must be a finite number or None; got {self.tol!r}")

    def _optimizer(self):
        """The fastgd optimizer the parameters describe (an optimizer object is used as
        given; a name is built from ``lr``, ``alpha`` and the momentum/Adam parameters)."""
        spec, lr, wd = self._optimizer_name(), self._lr(), float(self.alpha)
        if isinstance(spec, optim.Optimizer):
            return spec
        if spec not in OPTIMIZERS:
            raise ValueError(f"{self._optimizer_param} must be one of {OPTIMIZERS} or a "
                             f"fastgd optimizer; got {spec!r}")
        if spec == "sgd":
            nesterov = bool(self.nesterovs_momentum) and self.momentum > 0
            return optim.SGD(lr=lr, momentum=float(self.momentum), nesterov=nesterov,
                             weight_decay=wd)
        if spec in ("adam", "adamw"):
            cls = optim.Adam if spec == "adam" else optim.AdamW
            return cls(lr=lr, betas=(float(self.beta_1), float(self.beta_2)),
                       eps=float(self.epsilon), weight_decay=wd)
        if spec == "rmsprop":
            return optim.RMSprop(lr=lr, weight_decay=wd)
        return optim.Adagrad(lr=lr, weight_decay=wd)

    def _session(self, model, n: int, params=None) -> Session:
        batch = self._batch(n)
        self._rate = SklearnRate(self.learning_rate, float(self.power_t), batch or n)
        return Session(model, mode=self.mode, batch_size=batch, epochs=self.max_iter,
                       optimizer=self._optimizer(), lr_schedule=self._rate,
                       shuffle=self.shuffle, seed=self._seed(), backend=self.backend,
                       dtype=self.dtype, params=params)

    def _batch(self, n: int) -> int | None:
        """The per-step batch for ``mode`` (None: BGD, all rows), clipped to ``n`` rows with
        scikit-learn's warning."""
        if self.mode != "mbgd":
            return 1 if self.mode == "sgd" else None
        b = self._default_batch(n) if self.batch_size == "auto" else self.batch_size
        if isinstance(b, bool) or not isinstance(b, numbers.Integral):
            raise ValueError(f"batch_size must be 'auto' or an integer; got {b!r}")
        if n and not 1 <= b <= n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped", UserWarning, stacklevel=3)
            b = min(max(b, 1), n)
        return int(b)

    # ------------------------------------------------------------------ data
    def _validate(self, X, y, reset: bool):
        X, y = validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32],
                             multi_output=not self._is_classifier, y_numeric=False)
        return X, y

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Train for up to ``max_iter`` epochs (stopping by ``tol``/``n_iter_no_change``,
        on the validation score with ``early_stopping``); ``warm_start`` starts from the
        previous coefficients. ``X`` may be chunked data (``y=None``; see
        :mod:`fastgd.chunks`). ``sample_weight`` scales each row's loss (a batch's loss is
        the mean of ``w_i * loss_i``; ``numpy``/``numba-cpu`` backends). Returns ``self``."""
        self._check_params()
        source = as_chunks(X, y)
        params = self._params() if self.warm_start and hasattr(self, "n_iter_") else None
        if source is not None:
            if sample_weight is not None:
                raise ValueError("sample_weight goes with in-memory data")
            return self._fit_chunks(source, params)
        X, y = self._validate(X, y, reset=True)
        w = None if sample_weight is None else _check_sample_weight(sample_weight, X)
        Y = self._set_targets(y, reset=params is None)
        val = None
        if self.early_stopping:
            stratify = Y if self._is_classifier else None
            parts = train_test_split(X, Y, *(() if w is None else (w,)),
                                     test_size=self.validation_fraction,
                                     random_state=self._seed(), stratify=stratify)
            X, Xv, Y, Yv = parts[:4]
            w = None if w is None else parts[4]
            val = (Xv, Yv)
        self._sess = self._session(self._model(X.shape[1]), len(X), params)
        self._run_epochs(*self._sess.check_arrays(X, Y, w), val, checked=True)
        return self

    def _fit_chunks(self, source, params):
        if self.early_stopping:
            raise ValueError("early_stopping holds out rows of in-memory data; with chunked "
                             "data use tol/n_iter_no_change on the training loss")
        source = self._chunk_targets(source, reset=params is None)
        self.n_features_in_ = n_features(source)
        self._sess = self._session(self._model(self.n_features_in_), 0, params)
        if not source.reiterable and self.max_iter > 1:
            raise ValueError("a one-shot iterator of chunks can be read once: pass a list or "
                             "a re-iterable source, or set max_iter=1 (or use partial_fit)")
        self._run_epochs(source, None, None)
        return self

    def _run_epochs(self, X, Y, val, checked: bool = False) -> None:
        sess = self._sess
        self.loss_curve_, self.n_iter_, self.t_ = [], 0, 0
        self.validation_scores_ = [] if val is not None else None
        best, best_params, no_change = np.inf, None, 0
        for _ in range(self.max_iter):
            rec = sess.epoch(X, Y, checked=checked)
            self.n_iter_ += 1
            self.loss_curve_.append(rec.train_loss)
            self.t_ = rec.samples
            if not np.isfinite(rec.train_loss):
                self._store(sess.params())
                raise ValueError(f"Floating-point under-/overflow occurred at epoch "
                                 f"#{self.n_iter_}: the loss is {rec.train_loss}. Scaling "
                                 "input data with StandardScaler or MinMaxScaler, or a lower "
                                 "learning rate, might help.")
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {rec.train_loss:.8f}")
            if val is not None:
                self._store(sess.params())
                value = -self._val_score(*val)
                self.validation_scores_.append(-value)
            else:
                value = rec.train_loss
            if val is not None and value < best:
                best_params = self._params()  # just stored
            if self.tol is not None and value > best - self.tol:
                no_change += 1
            else:
                no_change = 0
            best = min(best, value)
            if no_change >= self.n_iter_no_change:
                if self.learning_rate == "adaptive" and \
                        self._lr() * self._rate.factor / ADAPTIVE_DIVISOR > ADAPTIVE_MIN:
                    self._rate.factor /= ADAPTIVE_DIVISOR
                    no_change = 0
                    continue
                break
        else:
            if self.tol is not None:
                warnings.warn(f"Stochastic optimizer: maximum iterations ({self.max_iter}) "
                              "reached and the optimization hasn't converged yet.",
                              ConvergenceWarning, stacklevel=3)
        self._store(best_params if best_params is not None else sess.params())
        if val is not None:
            self.best_validation_score_ = float(np.max(self.validation_scores_))
        self.best_loss_ = float(np.min(self.loss_curve_))

    def partial_fit(self, X, y=None, classes=None, sample_weight=None):
        """One epoch over ``X, y`` (arrays, or chunked data with ``y=None``), continuing the
        parameters, optimizer state and step count of earlier calls (or of ``fit``).
        Classifiers need ``classes`` on the first call. Bad data (new classes, a chunk of
        another width or dtype) raises and leaves the estimator as it was. Returns
        ``self``."""
        before = dict(self.__dict__)
        try:
            return self._partial_fit(X, y, classes, sample_weight)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _partial_fit(self, X, y, classes, sample_weight):
        self._check_params()
        first = not hasattr(self, "_sess")
        source = as_chunks(X, y)
        if source is not None:
            source = self._chunk_targets(source, reset=first, classes=classes)
            width = n_features(source)
            if not first and width != self.n_features_in_:
                raise ValueError(f"X has {width} features, but {type(self).__name__} is "
                                 f"expecting {self.n_features_in_} features as input.")
            data, Y = source, None
            if sample_weight is not None:
                raise ValueError("sample_weight goes with in-memory data")
        else:
            X, y = self._validate(X, y, reset=first)
            data, Y, width = X, self._set_targets(y, reset=first, classes=classes), X.shape[1]
            if sample_weight is not None:
                sample_weight = _check_sample_weight(sample_weight, X)
        if first:
            self.n_features_in_ = width
            self._sess = self._session(self._model(width), 0)
            self.loss_curve_, self.n_iter_, self.t_ = [], 0, 0
        rec = self._sess.epoch(data, Y, sample_weight=sample_weight)
        self.n_iter_ += 1
        self.loss_curve_.append(rec.train_loss)
        self.t_ = rec.samples
        self._store(self._sess.params())
        return self

    # ------------------------------------------------------------------ prediction
    def _forward(self, X) -> np.ndarray:
        """The last layer's outputs ``(n, n_outputs)`` for validated ``X``."""
        params = self._params()
        X = np.asarray(X, dtype=params[0].dtype)
        act = getattr(self, "activation", "relu")
        return reference.forward(params, X, _ACTIVATIONS.get(act, act))[-1]

    def _checked(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    # pickling: the session pickles without its engine (rebuilt at the next partial_fit)


#: scikit-learn's activation names -> fastgd's.
_ACTIVATIONS = {"logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


class BaseGD(GDEstimatorMixin, BaseEstimator):
    """Marker base (scikit-learn's mixins go before it in each estimator)."""

    def _expected_failed_checks(self) -> dict[str, str]:
        """The scikit-learn checks these estimators are known to fail, with the reason
        (what ``parametrize_with_checks(expected_failed_checks=...)`` and
        ``check_estimator(expected_failed_checks=...)`` take)."""
        return {"check_sample_weight_equivalence_on_dense_data":
                "a weight scales a row's gradient inside its mini-batch, whose mean still "
                "counts it as one row, so an integer weight is not the row repeated (a "
                "repeated row also changes how rows fall into batches); scikit-learn lists "
                "the same expected failure for its SGDClassifier and SGDRegressor"}
