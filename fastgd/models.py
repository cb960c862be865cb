"""Model specifications: what is trained (layer sizes, activation, loss), not how."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import reference
from .kernels.reference import ACTIVATIONS, LOSSES


def _check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


@dataclass(frozen=True)
class Model:
    """A dense network: ``sizes = (n_features, hidden..., n_outputs)``.

    ``loss``: ``"mse"`` (targets real, shape (n,) or (n, n_outputs)), ``"logistic"``
    (binary targets in [0, 1], BCEWithLogits), ``"softmax"`` (integer class ids in
    ``[0, n_outputs)``, CrossEntropy). ``activation`` applies to hidden layers only.
    """

    sizes: tuple[int, ...]
    loss: str = "mse"
    activation: str = "relu"

    def __post_init__(self):
        sizes = tuple(self.sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"a model needs at least two layer sizes (inputs and outputs); got {list(sizes)}"
            )
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
                raise ValueError(f"layer sizes must be positive integers; got {list(sizes)}")
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("activation", self.activation, ACTIVATIONS)
        if self.loss == "softmax" and self.sizes[-1] < 2:
            raise ValueError("loss='softmax' needs n_outputs >= 2 (one logit per class)")

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        """Number of outputs (logits)."""
        return self.sizes[-1]

    @property
    def n_params(self) -> int:
        """Total number of scalar parameters."""
        return reference.layer_offsets(self.sizes)[2]

    def init_params(self, seed: int = 0, dtype="float32") -> list[np.ndarray]:
        """Parameters ``[W1, b1, W2, b2, ...]``, ``W`` shaped ``(n_in, n_out)``.

        Drawn like ``torch.nn.Linear``'s default: uniform in ``±1/sqrt(n_in)`` for weights
        and biases, from ``numpy.random.default_rng(seed)``.
        """
        from .validate import check_dtype

        dt = check_dtype(dtype)
        rng = np.random.default_rng(seed)
        params = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=False):
            bound = 1.0 / np.sqrt(n_in)
            params.append(rng.uniform(-bound, bound, (n_in, n_out)).astype(dt))
            params.append(rng.uniform(-bound, bound, n_out).astype(dt))
        return params

    def predict(self, params, X) -> np.ndarray:
        """Model output for ``X``: values (mse), probabilities (logistic) or class ids (softmax)."""
        from .validate import check_features, check_params

        X = check_features(X, self.n_features, np.dtype(np.asarray(params[0]).dtype), "X")
        params = check_params(self, params, X.dtype)
        z = self.decision_function(params, X)
        if self.loss == "softmax":
            return z.argmax(axis=1)
        if self.loss == "logistic":
            z = reference.sigmoid(z)
        return z[:, 0] if self.n_outputs == 1 else z

    def decision_function(self, params, X) -> np.ndarray:
        """Raw outputs (logits) of the last layer, shape ``(n, n_outputs)``."""
        return reference.forward(params, np.asarray(X), self.activation)[-1]


def Linear(n_features: int, n_outputs: int = 1, loss: str = "mse") -> Model:  # noqa: N802
    """Linear, logistic (``loss="logistic"``) or softmax (``loss="softmax"``) regression."""
    return Model((n_features, n_outputs), loss=loss)


def MLP(sizes, activation: str = "relu", loss: str = "softmax") -> Model:  # noqa: N802
    """Multi-layer perceptron, ``sizes = [n_features, hidden..., n_outputs]``."""
    return Model(tuple(sizes), loss=loss, activation=activation)
