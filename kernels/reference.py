"""The NumPy reference: the math every compiled kernel must reproduce, written for reading.

A network is a list of dense layers ``z = a @ W + b`` (``W`` shaped ``(n_in, n_out)``); hidden
layers apply ``activation``; the last layer's ``z`` are logits fed to the loss. A linear model
is the network with no hidden layer. Losses and their reductions are PyTorch's:

- ``mse``:      ``MSELoss``            mean over every element of ``z``
- ``logistic``: ``BCEWithLogitsLoss``  mean over every element of ``z``, targets in [0, 1]
- ``softmax``:  ``CrossEntropyLoss``   mean over the rows, targets are class ids

Targets arrive in the kernel format: a 2-D float array ``Y`` of shape ``(n, n_out)`` for
``mse``/``logistic`` and ``(n, 1)`` holding the class id for ``softmax``.

The optimizers (``torch.optim``'s SGD, Adam/AdamW, RMSprop, Adagrad) are in
``kernels/optimizers.py``; an epoch applies one of them after every batch gradient.

Parameters live in one flat vector ``theta`` (``W1, b1, W2, b2, ...``, each ``W`` row-major).
"""

from __future__ import annotations

import numpy as np

from . import optimizers
from .permutation import order, order_table

LOSSES = ("mse", "logistic", "softmax")
ACTIVATIONS = ("relu", "tanh", "sigmoid")


# ----------------------------------------------------------------------------- layout
def layer_offsets(sizes) -> tuple[np.ndarray, np.ndarray, int]:
    """Offsets of every ``W`` and ``b`` inside the flat parameter vector, and its length."""
    w_off, b_off, pos = [], [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=False):
        w_off.append(pos)
        pos += n_in * n_out
        b_off.append(pos)
        pos += n_out
    return np.array(w_off, dtype=np.int64), np.array(b_off, dtype=np.int64), pos


def unflatten(theta: np.ndarray, sizes) -> list[np.ndarray]:
    """Views ``[W1, b1, W2, b2, ...]`` into the flat vector ``theta``."""
    w_off, b_off, _ = layer_offsets(sizes)
    out = []
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        out.append(theta[w_off[layer] : w_off[layer] + n_in * n_out].reshape(n_in, n_out))
        out.append(theta[b_off[layer] : b_off[layer] + n_out])
    return out


def flatten(params) -> np.ndarray:
    """Concatenate ``[W1, b1, ...]`` into one flat vector (a copy)."""
    return np.concatenate([np.asarray(p).ravel() for p in params])


# ----------------------------------------------------------------------------- activations
def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, without overflow for large ``|z|``."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def activate(z: np.ndarray, activation: str) -> np.ndarray:
    """Hidden-layer activation."""
    if activation == "relu":
        return np.maximum(z, 0)
    if activation == "tanh":
        return np.tanh(z)
    if activation == "sigmoid":
        return sigmoid(z)
    raise ValueError(f"unknown activation {activation!r}")


def activation_grad(a: np.ndarray, activation: str) -> np.ndarray:
    """Derivative of the activation, written in terms of its output ``a``."""
    if activation == "relu":
        return (a > 0).astype(a.dtype)
    if activation == "tanh":
        return 1 - a * a
    if activation == "sigmoid":
        return a * (1 - a)
    raise ValueError(f"unknown activation {activation!r}")


# ----------------------------------------------------------------------------- losses
def _class_ids(Y: np.ndarray) -> np.ndarray:
    return Y[:, 0].astype(np.int64)


def split_weights(Z: np.ndarray, Y: np.ndarray, loss: str):
    """``(targets, per-row weights or None)``: targets in the kernels' layout may carry one
    extra last column, the rows' sample weights (``fit(sample_weight=...)``)."""
    n_targets = 1 if loss == "softmax" else Z.shape[1]
    if Y.shape[1] > n_targets:
        return Y[:, :n_targets], Y[:, n_targets]
    return Y, None


def loss_value(Z: np.ndarray, Y: np.ndarray, loss: str) -> float:
    """Mean loss of logits ``Z`` against targets ``Y``, evaluated in float64; with sample
    weights (``split_weights``) the mean of ``w_i * loss_i`` (PyTorch's
    ``(criterion(reduction="none")(z, y) * w).mean()``)."""
    z = Z.astype(np.float64)
    Y, w = split_weights(Z, Y, loss)
    if loss == "mse":
        per = (z - Y) ** 2
    elif loss == "logistic":
        per = np.maximum(z, 0) - z * Y + np.log1p(np.exp(-np.abs(z)))
    elif loss == "softmax":
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        per = (lse - z[np.arange(len(z)), _class_ids(Y)])[:, None]
    else:
        raise ValueError(f"unknown loss {loss!r}")
    if w is not None:
        per = per * np.asarray(w, np.float64)[:, None]
    return float(np.mean(per))


def loss_grad(Z: np.ndarray, Y: np.ndarray, loss: str) -> np.ndarray:
    """Gradient of the (weighted) mean loss with respect to the logits ``Z`` (same dtype as
    ``Z``)."""
    rows, cols = Z.shape
    Y, w = split_weights(Z, Y, loss)
    if loss == "mse":
        g = 2 * (Z - Y) / (rows * cols)
    elif loss == "logistic":
        g = (sigmoid(Z) - Y) / (rows * cols)
    elif loss == "softmax":
        e = np.exp(Z - Z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        p[np.arange(rows), _class_ids(Y)] -= 1
        g = p / rows
    else:
        raise ValueError(f"unknown loss {loss!r}")
    if w is not None:
        g = g * w[:, None]
    return g.astype(Z.dtype)


# ----------------------------------------------------------------------------- network
def forward(params, X: np.ndarray, activation: str) -> list[np.ndarray]:
    """Activations of every layer: ``[X, a1, ..., z_last]`` (the last entry is the logits)."""
    acts = [X]
    n_layers = len(params) // 2
    for layer in range(n_layers):
        W, b = params[2 * layer], params[2 * layer + 1]
        z = acts[-1] @ W + b
        acts.append(activate(z, activation) if layer < n_layers - 1 else z)
    return acts


def gradients(params, X: np.ndarray, Y: np.ndarray, activation: str, loss: str,
              with_loss: bool = False):
    """Backpropagation: gradients of the mean batch loss, in the layout of ``params``; with
    ``with_loss``, ``(gradients, the mean batch loss)`` from the same forward pass."""
    acts = forward(params, X, activation)
    batch_loss = loss_value(acts[-1], Y, loss) if with_loss else None
    dz = loss_grad(acts[-1], Y, loss)
    n_layers = len(params) // 2
    grads = [None] * len(params)
    for layer in reversed(range(n_layers)):
        grads[2 * layer] = acts[layer].T @ dz
        grads[2 * layer + 1] = dz.sum(axis=0)
        if layer > 0:
            dz = (dz @ params[2 * layer].T) * activation_grad(acts[layer], activation)
    return (grads, batch_loss) if with_loss else grads


# ----------------------------------------------------------------------------- epochs
def run_epoch(theta, state, X, Y, sizes, activation, loss, *, optimizer, hyper, lrs, step0,
              batches, order=None, noise=None, losses=None, exchange=None, after_step=None):
    """One epoch on flat ``theta`` and the optimizer ``state`` (both updated in place).

    ``batches``: ``(start, rows)`` of each step, positions into ``order`` (the epoch's sample
    order, ``None`` for ``0 .. n``); step ``s`` uses learning rate ``lrs[s]`` and is global
    step ``step0 + s + 1`` of optimizer ``optimizer`` (a code of ``kernels/optimizers.py``)
    with hyper-parameters ``hyper``. ``noise``: ``None``, or a float64 array of 3 to which
    every step of at least two rows adds its unbiased ``tr(Sigma)`` and ``|G|^2`` estimates
    and a count (``kernels/noise.py``), from the step's per-example gradient norms.
    ``losses``: ``None``, or a float64 array of 2 to which every step adds its mean batch
    loss (at the parameters before its update) times its rows, and its rows: the epoch's
    training loss as Keras, Lightning and scikit-learn's ``loss_curve_`` report it.
    ``exchange``: ``None``, or ``f(grad) -> grad`` applied to every step's flat gradient
    before the update (data-parallel training: the mean over the ranks' gradients).
    ``after_step``: ``None``, or ``f(global_step, last)`` called after every update
    (``last``: the call's last step; local SGD averages the ranks' parameters there).
    """
    from . import noise as noise_scale  # noise.py builds on this module

    params = unflatten(theta, sizes)
    batches = list(batches) if after_step is not None else batches
    for s, (start, rows) in enumerate(batches):
        idx = slice(start, start + rows) if order is None else order[start:start + rows]
        grads, batch_loss = gradients(params, X[idx], Y[idx], activation, loss, with_loss=True)
        grad = flatten(grads)
        del grads
        if losses is not None:
            losses += (batch_loss * rows, rows)
        if noise is not None and rows > 1:
            sq, total = noise_scale.sums(params, X[idx], Y[idx], activation, loss)
            mean = total / rows
            trace, grad_sq = noise_scale.step_estimates(sq / rows, float(mean @ mean), rows,
                                                        len(X))
            noise += (trace, grad_sq, 1.0)
        grad = grad.astype(theta.dtype, copy=False)
        if exchange is not None:
            grad = exchange(grad)
        optimizers.update(optimizer, theta, state, grad, hyper, lrs[s], step0 + s + 1)
        if after_step is not None:
            after_step(step0 + s + 1, s == len(batches) - 1)


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int, block_rows: int = 0):
    """The samples an epoch visits, in order: the keyed row permutation, the block shuffle
    of ``block_rows`` rows (``kernels/permutation.py``), or ``None`` (in order)."""
    return order(order_table(seed, epoch, n, shuffle, block_rows), n)


def dataset_loss(theta, X, Y, sizes, activation, loss) -> float:
    """Mean loss of the whole data set (what the history records)."""
    return loss_value(forward(unflatten(theta, sizes), X, activation)[-1], Y, loss)
