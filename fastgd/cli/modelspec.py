"""The ``--model`` option: :func:`parse_model` reads it into a :class:`ModelSpec`,
:func:`build_model` makes the model for a data set."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_ACTIVATIONS = ("relu", "tanh", "sigmoid")
_LOSSES = ("mse", "logistic", "softmax")
_MODEL_HELP = ("use linear, logistic, softmax or mlp[:SIZES][:ACTIVATION][:LOSS], e.g. "
               "mlp:64-128-10:tanh (SIZES from the number of features to the outputs)")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` string: ``kind`` (``linear``/``logistic``/``softmax``/``mlp``),
    MLP ``sizes`` (or None: inputs-64-outputs), ``activation`` and ``loss`` (None: from the
    data)."""

    kind: str
    sizes: tuple[int, ...] | None = None
    activation: str | None = None
    loss: str | None = None


def parse_model(text: str | None) -> ModelSpec | None:
    """Parse a ``--model`` string (syntax only; sizes are checked against the data later).

    ``linear`` (MSE), ``logistic``, ``softmax`` (linear models with that loss; a trailing
    ``:LOSS`` may override it), or ``mlp[:SIZES][:ACTIVATION][:LOSS]`` with ``SIZES`` like
    ``64-128-10`` (inputs, hidden..., outputs), ``ACTIVATION`` one of relu/tanh/sigmoid and
    ``LOSS`` one of mse/logistic/softmax in any order. ``None`` gives ``None`` (a linear
    model with the data's suggested loss). Raises ``ValueError`` on anything else.
    """
    if text is None:
        return None
    parts = [p.strip().lower() for p in str(text).split(":")]
    kind, rest = parts[0], parts[1:]
    if kind not in ("linear", "logistic", "softmax", "mlp"):
        raise ValueError(f"unknown model {text!r}; {_MODEL_HELP}")
    sizes = activation = None
    loss_given = False
    loss = {"linear": "mse", "logistic": "logistic", "softmax": "softmax"}.get(kind)
    for part in rest:
        if kind == "mlp" and sizes is None and re.fullmatch(r"\d+(-\d+)+", part):
            sizes = tuple(int(s) for s in part.split("-"))
            if min(sizes) < 1:
                raise ValueError(f"model {text!r}: layer sizes must be positive; {_MODEL_HELP}")
        elif kind == "mlp" and activation is None and part in _ACTIVATIONS:
            activation = part
        elif part in _LOSSES and not loss_given:
            loss, loss_given = part, True
        else:
            raise ValueError(f"model {text!r}: cannot read {part!r}; {_MODEL_HELP}")
    return ModelSpec(kind, sizes, activation, loss)


def model_kind(spec: ModelSpec | None) -> str:
    """``mlp`` or ``linear`` (every other kind is a linear model), for study names."""
    return "linear" if spec is None or spec.kind != "mlp" else "mlp"


def _n_outputs(y, loss: str) -> int:
    y = np.asarray(y)
    if loss == "softmax":
        if y.size == 0 or y.dtype.kind not in "biuf" or not np.all(np.isfinite(y)):
            return 2  # let fit's validation explain what is wrong with the targets
        return max(2, int(np.max(y)) + 1)
    return int(y.shape[1]) if y.ndim == 2 else 1


def build_model(spec: ModelSpec | None, X, y, suggested_loss: str):
    """The :class:`fastgd.Model` for ``spec`` on data ``(X, y)``; the number of features and
    outputs come from the data, a missing loss from ``suggested_loss``."""
    from ..models import MLP, Linear

    d = int(X.shape[1])
    if spec is None:
        spec = ModelSpec("linear", loss=suggested_loss)
    loss = spec.loss or suggested_loss
    k = _n_outputs(y, loss)
    if spec.kind != "mlp":
        return Linear(d, k, loss)
    sizes = spec.sizes or (d, 64, k)
    if sizes[0] != d:
        raise ValueError(f"model mlp:{'-'.join(map(str, sizes))}: the first size must be the "
                         f"number of features of the data, {d}")
    return MLP(sizes, activation=spec.activation or "relu", loss=loss)
