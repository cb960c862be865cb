"""Evaluation metrics beside the loss."""

from __future__ import annotations

import numpy as np


def accuracy(model, params, X, Y) -> float | None:
    """The fraction of rows classified right (softmax: the arg-max is the class; logistic:
    every output's probability is on the right side of 0.5); None for regression. ``Y`` is
    in the kernels' layout (``check_targets``)."""
    if model.loss == "mse" or not params or len(X) == 0:
        return None
    with np.errstate(all="ignore"):
        pred = model.predict(params, X)
    if model.loss == "softmax":
        return float(np.mean(pred == Y[:, 0]))
    return float(np.mean((np.reshape(pred, Y.shape) >= 0.5) == (Y >= 0.5)))
