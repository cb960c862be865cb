"""The reference backend: plain NumPy, the oracle every other backend is tested against."""

from __future__ import annotations

import itertools

import numpy as np

from ..kernels import noise, reference
from ..kernels.permutation import order_peak
from .base import BaseBackend


class NumpyBackend(BaseBackend):
    """Runs ``fastgd.kernels.reference`` one step at a time (Python per step, by design)."""

    name = "numpy"

    def prepare(self, plan, X, Y, theta0):
        """Keep the data and copies of the parameter vector and the optimizer state."""
        self.plan, self.X, self.Y = plan, X, Y
        self.theta = np.array(theta0, dtype=plan.dtype)
        self.opt_state = plan.optimizer.init_state(plan.n_params, plan.dtype)
        self.hyper = plan.optimizer.hyper()
        self.noise = np.zeros(3, np.float64)
        self.losses = np.zeros(2, np.float64)
        self.steps_done = 0

    def warmup(self):
        """Nothing to compile."""

    def run_epoch(self, epoch: int, lrs, start: int = 0, stop: int | None = None) -> None:
        """Steps ``start .. stop`` of an epoch of the reference optimizer, a Python iteration
        per step."""
        p = self.plan
        lrs, start, stop = self.check_rates(lrs, start, stop)
        n = len(self.X)
        # lazily: a list of every step's bounds is O(steps) Python objects (SGD: n tuples)
        batches = ((first, rows) for first, rows, _ in itertools.islice(p.batches(n), start,
                                                                        stop))
        reference.run_epoch(
            self.theta, self.opt_state, self.X, self.Y, p.sizes, p.activation, p.loss,
            optimizer=p.optimizer.code, hyper=self.hyper, lrs=lrs[start:stop],
            step0=self.steps_done, batches=batches,
            order=reference.epoch_order(n, p.shuffle, p.seed, epoch, p.block_rows),
            noise=self.noise_sums() if p.track_noise else None, losses=self.loss_sums(),
            exchange=self._exchange if p.ranks > 1 and not p.sync_every else None,
            after_step=self._sync if p.ranks > 1 and p.sync_every else None)
        self.steps_done += stop - start

    def _sync(self, step: int, last: bool) -> None:
        """Local SGD: after every ``sync_every``-th step and the call's last, parameters and
        optimizer state become the mean over the ranks (as the compiled driver's)."""
        if step % self.plan.sync_every == 0 or last:
            self.theta[:] = self._exchange(self.theta)
            for row in self.opt_state:
                row[:] = self._exchange(row)

    def _exchange(self, grad: np.ndarray) -> np.ndarray:
        """The mean of every rank's step gradient: ``MPI_Allgather`` on ``COMM_WORLD``
        (mpi4py, once per step), then the rows summed in rank order, as the compiled
        driver does (``kernels/cpu/distributed.py``)."""
        from mpi4py import MPI

        ranks = self.plan.ranks
        gathered = np.empty((ranks, grad.size), grad.dtype)
        t = MPI.Wtime()
        MPI.COMM_WORLD.Allgather(np.ascontiguousarray(grad), gathered)
        self.exchanged = getattr(self, "exchanged", 0.0) + MPI.Wtime() - t
        total = gathered[0].copy()
        for r in range(1, ranks):
            total += gathered[r]
        return total * grad.dtype.type(1.0 / ranks)

    def exchange_seconds(self) -> float:
        """Seconds spent exchanging gradients between ranks so far (0 in one process)."""
        return getattr(self, "exchanged", 0.0)

    def load(self, theta, state, steps_done) -> None:
        """Set parameters, optimizer state and step counter."""
        self.theta[:], self.opt_state[:], self.steps_done = self.check_load(theta, state,
                                                                            steps_done)

    def exact_noise(self, X, Y) -> tuple[float, float]:
        """``(S, |G|^2)`` over ``(X, Y)`` by the plain per-layer identity, in float64."""
        p = self.plan
        return noise.exact(reference.unflatten(self.theta, p.sizes), X, Y, p.activation,
                           p.loss)

    def loss(self, X, Y) -> float:
        """Mean loss over a whole data set."""
        p = self.plan
        return reference.dataset_loss(self.theta, X, Y, p.sizes, p.activation, p.loss)

    def params(self) -> np.ndarray:
        """A copy of the flat parameter vector."""
        return self.theta.copy()

    def state(self) -> np.ndarray:
        """A copy of the optimizer state."""
        return self.opt_state.copy()

    @classmethod
    def workspace(cls, plan, n: int, n_val: int) -> dict[str, int]:
        """Bytes of what this backend allocates (see ``Backend.workspace``): ``theta``, the
        optimizer state, ``hyper``, and the temporaries of ``kernels/reference.py``. Per
        epoch, when shuffled, ``shuffle``: the permutation; ``step``: its int64 order, the
        gathered batch, the activation side of a step on ``batch_size`` rows (forward,
        the batch loss, loss gradient, backward) and the gradients; ``update``: the flat
        gradient and the optimizer's parameter-sized temporaries; ``loss``: a forward pass
        and the float64 loss over all ``n`` rows (when ``plan.full_train_loss``) or the
        ``n_val`` rows, for an MLP usually the peak of the run.
        Each is a formula in rows x layer widths from what those functions compute
        (:func:`_forward` and its neighbours)."""
        sizes, isz = plan.sizes, plan.dtype.itemsize
        b, p = plan.batch_size, plan.n_params * isz
        kept, forward = _forward(b, sizes, plan.activation, isz)
        ws = super().workspace(plan, n, n_val)
        if plan.shuffle:
            ws["shuffle.permutation"] = order_peak(n, plan.block_rows)
            ws["step.order"] = 8 * n
            k_y = 1 if plan.loss == "softmax" else sizes[-1]
            ws["step.batch"] = b * (sizes[0] + k_y) * isz  # X[idx], Y[idx]; slices are views
            ws["update.order"] = ws["step.order"]
        ws["step.activations"] = max(
            forward, kept + _loss_value(b, sizes[-1], plan.loss, isz),
            kept + _loss_grad(b, sizes[-1], plan.loss, isz),
            kept + _backward(b, sizes, plan.activation, isz))
        previous = 1 if plan.steps_per_epoch(n) > 1 else 0  # the last step's grad, still bound
        ws["step.grads"] = (previous + 1) * p  # with the per-layer gradient list as it fills
        # the list and its concatenation, or the flat gradient and the update's temporaries
        ws["update.grads"] = p * max(previous + 2, 1 + _update_temporaries(plan.optimizer))
        train_rows = n if plan.full_train_loss else 0  # fit computes it only with eval_every
        ws["loss.activations"] = max(_loss_pass(rows, plan) for rows in (train_rows, n_val))
        return ws


#: NumPy reuses a temporary operand in place (``(a - b) ** 2`` allocates once) when it holds
#: at least this many bytes (``NPY_MIN_ELIDE_BYTES``; glibc/macOS builds such as the wheels).
NUMPY_ELIDE_BYTES = 256 * 1024


def _ufunc_buffer(elements: int, isz: int) -> int:
    """The buffer a ufunc fills a result through when an operand is cast or broadcast along
    the rows (``np.getbufsize()`` elements at most)."""
    return min(elements, np.getbufsize()) * isz


def _unelided(nbytes: int) -> int:
    """The extra array an operation on a temporary of ``nbytes`` makes: none when NumPy
    reuses the temporary in place."""
    return nbytes if nbytes < NUMPY_ELIDE_BYTES else 0


def _forward(rows: int, sizes, activation: str, isz: int) -> tuple[int, int]:
    """``reference.forward`` on ``rows`` rows, its input not counted: (bytes of the
    activations it returns, its peak). A layer makes ``a @ W`` and its sum with ``b``
    (never in place, through a ufunc buffer when ``b`` has more than one element) while
    the previous ``z`` is still bound; relu and tanh then make one array, sigmoid four
    arrays and a bool mask at once (``exp(-|z|)``, both branches of its ``np.where`` and
    the result)."""
    kept = peak = z_prev = 0
    for layer, width in enumerate(sizes[1:], start=1):
        m = rows * width * isz
        hidden = layer < len(sizes) - 1
        peak = max(peak, kept + z_prev + 2 * m
                   + (_ufunc_buffer(rows * width, isz) if width > 1 else 0))
        if hidden and activation == "sigmoid":
            peak = max(peak, kept + 5 * m + rows * width)
        z_prev = m if hidden else 0
        kept += m
    return kept, peak


def _loss_grad(rows: int, k: int, loss: str, isz: int) -> int:
    """Peak bytes of ``reference.loss_grad`` on ``rows`` x ``k`` logits, dz included: mse
    ``Z - Y`` and the ``astype`` copy; logistic ``sigmoid(Z)``; softmax ``e``, ``p``,
    ``p / rows`` and the copy, or, while the class ids gather, two arrays and three vectors."""
    m = rows * k * isz
    if loss == "mse":
        return 2 * m
    if loss == "logistic":
        return 4 * m + rows * k
    return max(4 * m, 2 * m + rows * (16 + 2 * isz))


def _backward(rows: int, sizes, activation: str, isz: int) -> int:
    """Peak bytes of the backward pass through a hidden layer of width ``w`` (beside the
    forward activations): the next layer's dz, ``dz @ W.T``, the activation's derivative
    (relu: a bool mask and its float copy; tanh: ``a * a`` and ``1 - a * a``; sigmoid:
    ``1 - a`` and the product) and their product, the new dz."""
    peak = 0
    for layer in range(1, len(sizes) - 1):
        m, dz = rows * sizes[layer] * isz, rows * sizes[layer + 1] * isz
        derivative = {"relu": m + rows * sizes[layer], "tanh": 2 * m}.get(
            activation, m + _unelided(m))
        peak = max(peak, dz + m + max(derivative, m + _unelided(m)))
    return peak


def _loss_value(rows: int, k: int, loss: str, isz: int) -> int:
    """Peak bytes of ``reference.loss_value`` (float64 copies of the ``rows`` x ``k``
    logits): mse ``z``, ``z - Y`` and its square; logistic four arrays (``z``, the running
    sum, ``|z|`` on its way through ``exp``); softmax ``z``, ``z - max`` and its ``exp``
    (or ``z`` and five row vectors while the class logits gather). A float32 ``Y`` is cast
    through a ufunc buffer."""
    z = 8 * rows * k
    cast = _ufunc_buffer(rows * k, 8) if isz != 8 else 0
    if loss == "mse":
        return 2 * z + max(cast, _unelided(z))
    if loss == "logistic":
        return max(4 * z, 3 * z + cast)
    return 8 * rows * max(3 * k + 1, k + 5)


def _loss_pass(rows: int, plan) -> int:
    """Peak bytes of ``reference.dataset_loss`` over ``rows`` rows (the data not counted):
    the forward pass, then its logits beside the float64 loss."""
    if rows <= 0:
        return 0
    k, isz = plan.sizes[-1], plan.dtype.itemsize
    _, forward = _forward(rows, plan.sizes, plan.activation, isz)
    return max(forward, rows * k * isz + _loss_value(rows, k, plan.loss, isz))


def _update_temporaries(optimizer) -> int:
    """Parameter-sized temporaries alive together at the peak of the optimizer's update
    (``kernels/optimizers.py``), each expression's result counted: SGD ``lr * g``, Adam,
    RMSprop and Adagrad three (e.g. Adam's ``denom``, ``exp_avg / denom`` and the scaled
    step), one more for a weight-decayed gradient and for Nesterov's ``momentum * buf``. In
    place reuse can save one."""
    decayed = getattr(optimizer, "weight_decay", 0) != 0 and not getattr(
        optimizer, "decoupled", False)
    base = 1 + bool(getattr(optimizer, "nesterov", False)) if optimizer.kernel == "sgd" else 3
    return base + decayed
