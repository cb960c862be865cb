"""Targets: a regressor's real outputs, a classifier's labels as the kernels' class ids."""

from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets

from .. import chunks
from ..kernels.reference import sigmoid


class RegressionTargets(RegressorMixin):
    """Real targets, one output or several (``y`` of shape ``(n, k)``), squared error."""

    @staticmethod
    def _loss_name() -> str:
        return "mse"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _set_targets(self, y, reset: bool, classes=None) -> np.ndarray:
        if classes is not None:
            raise ValueError("classes= is for classifiers")
        y = np.asarray(y, dtype=np.float64)
        k = 1 if y.ndim == 1 else y.shape[1]
        if reset:
            self._n_out, self._y_1d = k, y.ndim == 1
        elif k != self._n_out:
            raise ValueError(f"y has {k} outputs but the estimator was fitted with "
                             f"{self._n_out}")
        return y

    def _chunk_targets(self, source, reset: bool, classes=None):
        if classes is not None:
            raise ValueError("classes= is for classifiers")
        shape = chunks.peek(source)[1]
        k = 1 if len(shape) == 1 else int(shape[1])
        if reset:
            self._n_out, self._y_1d = k, len(shape) == 1
        elif k != self._n_out:
            raise ValueError(f"y has {k} outputs but the estimator was fitted with "
                             f"{self._n_out}")
        return source

    def _n_outputs(self) -> int:
        return self._n_out

    def _val_score(self, X, y) -> float:
        return self.score(X, y)

    def predict(self, X) -> np.ndarray:
        """Predicted values: shape ``(n,)`` when fitted on a 1-D ``y``, else ``(n, k)``."""
        z = self._forward(self._checked(X))
        return z[:, 0] if self._y_1d else z


class ClassificationTargets(ClassifierMixin):
    """Labels of any type; two classes train a logistic output, more a softmax."""

    _is_classifier = True

    def _set_targets(self, y, reset: bool, classes=None) -> np.ndarray:
        check_classification_targets(y)
        y = np.asarray(y)
        if reset and classes is None:  # one pass: the classes and every row's id
            found, ids = np.unique(y, return_inverse=True)
            self._set_classes(found, True, None)
            return self._ids(ids.reshape(-1))
        self._set_classes(y, reset, classes)
        return self._encode(y)

    def _ids(self, ids) -> np.ndarray:
        """Class ids in the kernels' layout: 0/1 floats (logistic) or integers (softmax)."""
        return ids.astype(np.float64) if len(self.classes_) == 2 else ids

    def _set_classes(self, y, reset: bool, classes) -> None:
        if reset:
            found = np.unique(y if classes is None else np.asarray(classes))
            if found.size < 2:
                raise ValueError(f"The number of classes has to be greater than one; got "
                                 f"{found.size} class")
            self.classes_ = found
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"`classes={np.unique(classes)!r}` is not the same as on the "
                             f"last call to partial_fit, was: {self.classes_!r}")

    def _encode(self, y) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        ids = np.minimum(np.searchsorted(self.classes_, y), len(self.classes_) - 1)
        unknown = self.classes_[ids] != y
        if unknown.any():
            new = np.unique(y[unknown]).tolist()
            raise ValueError(f"y has classes {new} not in classes_ "
                             f"{self.classes_.tolist()}; pass every class with classes= on "
                             "the first partial_fit, or fit again")
        return self._ids(ids)

    def _chunk_targets(self, source, reset: bool, classes=None):
        if reset:
            labels = chunks.targets(source) if classes is None else np.asarray(classes)
            check_classification_targets(labels)
            self._set_classes(labels, True, None)
        else:
            self._set_classes(None, False, classes)
        return chunks.MappedTargets(source, self._encode)

    def _n_outputs(self) -> int:
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _val_score(self, X, y) -> float:
        return self.score(X, self.classes_[y.astype(np.int64)])

    def decision_function(self, X) -> np.ndarray:
        """Logits: shape ``(n,)`` for two classes (the second class's), else ``(n, k)``."""
        z = self._forward(self._checked(X))
        return z[:, 0] if len(self.classes_) == 2 else z

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, n_classes)``: sigmoid for two classes, softmax else."""
        z = self.decision_function(X)
        if z.ndim == 1:
            p = sigmoid(z)
            return np.column_stack([1.0 - p, p])
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithms of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """Labels (from ``classes_``) of the largest logit (two classes: logit > 0)."""
        z = self.decision_function(X)
        ids = (z > 0).astype(np.int64) if z.ndim == 1 else z.argmax(axis=1)
        return self.classes_[ids]
