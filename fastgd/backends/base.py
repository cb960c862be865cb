"""The written backend interface: what ``fit`` and the study layer may call on a backend.

A backend is one file in ``fastgd/backends/`` (plus its kernels) with a class implementing
:class:`Backend`, registered by module and class name in ``registry.py``. ``fit`` and the
study layer use only these methods and attributes; nothing else of a backend is read.

Lifecycle: ``prepare(plan, X, Y, theta0)`` once (place data, allocate every buffer, the
optimizer state from ``plan.optimizer.init_state``), ``warmup()`` once (compile; state
untouched), then per epoch ``run_epoch(epoch, lrs)`` (every step of the epoch, ``lrs`` its
per-step learning rates; ``start``/``stop`` run a part of it) and ``synchronize()`` before a
clock stops; ``loss``/``train_loss`` for the history, ``params()``/``state()`` to read the
result, ``load()`` to go back to a saved point (the batch-size study's checkpoints).

Every step also adds its mean batch loss (at the parameters before its update) times its
rows, and its rows, to two float64 sums, computed by the kernels from the forward pass the
gradient needs; ``epoch_loss()`` turns them into the epochs' training loss (the history's
``train_loss``: Keras's, Lightning's and scikit-learn's ``loss_curve_`` convention).

Gradient noise (``kernels/noise.py``): ``exact_noise(X, Y)`` at the current parameters, and,
when ``plan.track_noise``, ``epoch_noise()``: the sums of the online per-step estimates the
last ``run_epoch`` calls made from their batches' per-example gradient norms.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """The protocol every backend implements (:class:`BaseBackend` gives the defaults)."""

    name: ClassVar[str]
    #: True when data and parameters live on an accelerator (device memory, asynchronous).
    on_device: ClassVar[bool]
    #: Optimizer steps run so far (the step counter the bias corrections and schedules use).
    steps_done: int

    def prepare(self, plan, X: np.ndarray, Y: np.ndarray, theta0: np.ndarray) -> None:
        """Place the data, copy ``theta0`` (flat, public layout) and allocate every buffer."""

    def warmup(self) -> None:
        """Compile or load every kernel the run uses, leaving parameters and state as they
        are."""

    def run_epoch(self, epoch: int, lrs: np.ndarray, start: int = 0,
                  stop: int | None = None) -> None:
        """Steps ``start .. stop`` (default: every step) of epoch ``epoch`` (0-based);
        ``lrs[s]`` is step ``s``'s learning rate (``len(lrs) == plan.steps_per_epoch(n)``,
        the whole epoch's) and step ``s`` is global step ``steps_done - start + s + 1``, so
        consecutive parts make the same epoch as one call. May return before a device
        finishes."""

    def set_data(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Train on ``(X, Y)`` from now on (the same width, dtype and target layout as the
        data given to ``prepare``; any number of rows), keeping the parameters, the
        optimizer state and the step counter: how streamed chunks and ``partial_fit``
        calls reach an engine prepared once."""

    def exchange_seconds(self) -> float:
        """Seconds spent exchanging step gradients with other ranks so far (data-parallel
        runs, ``plan.ranks > 1``; the transfer and any wait for a slower rank); 0.0 in one
        process."""

    def load(self, theta: np.ndarray, state: np.ndarray, steps_done: int) -> None:
        """Set the parameters (flat, public layout), the optimizer state (public layout)
        and the step counter, as ``params()``/``state()``/``steps_done`` returned them."""

    def exact_noise(self, X: np.ndarray, Y: np.ndarray) -> tuple[float, float]:
        """``(S, |G|^2)`` at the current parameters over ``(X, Y)``: the mean over rows of
        ``|g_i|^2`` (``g_i`` the gradient of row ``i``'s own loss) and the squared norm of
        their mean, in float64, from per-example gradient norms in one pass."""

    def epoch_noise(self) -> np.ndarray:
        """float64 ``[sum of tr(Sigma) estimates, sum of |G|^2 estimates, steps]`` over the
        steps of at least two rows run since the last call (reset by it); zeros unless
        ``plan.track_noise``."""

    def epoch_loss(self) -> float | None:
        """The mean of the batch losses of the steps run since the last call, each weighted
        by its rows (reset by the call); None when no step ran."""

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on CPU backends)."""

    def loss(self, X: np.ndarray, Y: np.ndarray) -> float:
        """Mean loss of the current parameters over ``(X, Y)`` (kernel target layout)."""

    def train_loss(self) -> float:
        """Mean loss over the training data given to ``prepare``."""

    def params(self) -> np.ndarray:
        """A host copy of the flat parameters in the public layout."""

    def state(self) -> np.ndarray:
        """A host copy of the ``(n_state, n_params)`` optimizer state, public layout."""

    def memory(self) -> int | None:
        """Peak device bytes of this backend's allocations, or None (CPU backends)."""

    @classmethod
    def workspace(cls, plan, n: int, n_val: int) -> dict[str, int]:
        """Bytes of every host array this backend allocates for ``plan`` with ``n`` training
        and ``n_val`` validation rows, by name (what ``fastgd.measure.estimate_memory`` sums).

        A plain name (``"theta"``, ``"opt_state"``, ``"act"``...) is held from ``prepare`` to
        the end of the run. ``"<phase>.<name>"`` is a temporary of one phase, and the arrays
        named for a phase are those alive together at its peak: ``prepare`` and ``warmup``
        (the calls of those names), ``shuffle`` (computing an epoch's order), ``step`` (a
        step's gradient, with what its epoch holds), ``update`` (applying it), ``loss`` (one
        ``loss`` call on ``n`` or ``n_val`` rows) and ``end`` (``params()``). The estimate
        reports ``theta``, ``opt_state``, ``grads``/``partial`` and ``act``/``activations``
        apart, every other name as workspace. The data given to ``prepare`` is the
        caller's, never stated here.
        """


class BaseBackend:
    """Defaults shared by the backends: host, synchronous, no device memory; the step
    counter; ``train_loss`` from the data kept by ``prepare`` (``self.X``, ``self.Y``)."""

    name: ClassVar[str] = ""
    on_device: ClassVar[bool] = False
    steps_done: int = 0

    def check_rates(self, lrs: np.ndarray, start: int = 0,
                    stop: int | None = None) -> tuple[np.ndarray, int, int]:
        """``lrs`` as a float64 array of exactly one epoch's steps, and ``(start, stop)``
        resolved within it (a clear error else)."""
        lrs = np.ascontiguousarray(lrs, dtype=np.float64)
        want = self.plan.steps_per_epoch(len(self.X))
        if lrs.shape != (want,):
            raise ValueError(f"run_epoch needs one learning rate per step ({want}); got an "
                             f"array of shape {lrs.shape}")
        stop = want if stop is None else int(stop)
        if not 0 <= int(start) <= stop <= want:
            raise ValueError(f"run_epoch's steps start={start}, stop={stop} must satisfy "
                             f"0 <= start <= stop <= {want} (the epoch's steps)")
        return lrs, int(start), stop

    def set_data(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Host backends read the data where it lies: keep references to the new arrays
        (a GPU backend places them again: ``gpu_launch.DeviceMemoryModel.set_data``)."""
        self.X, self.Y = X, Y

    def check_load(self, theta: np.ndarray, state: np.ndarray,
                   steps_done: int) -> tuple[np.ndarray, np.ndarray, int]:
        """``load``'s arguments checked against the plan and cast to its dtype."""
        p = self.plan
        theta = np.ascontiguousarray(theta, dtype=p.dtype)
        state = np.ascontiguousarray(state, dtype=p.dtype)
        if theta.shape != (p.n_params,) or state.shape != (p.n_state, p.n_params):
            raise ValueError(f"load needs theta of shape ({p.n_params},) and state of shape "
                             f"({p.n_state}, {p.n_params}); got {theta.shape} and "
                             f"{state.shape}")
        if int(steps_done) < 0:
            raise ValueError(f"steps_done must be >= 0; got {steps_done}")
        return theta, state, int(steps_done)

    def epoch_noise(self) -> np.ndarray:
        """The online estimates' sums since the last call (``noise_sums()``), then reset."""
        out = self.noise_sums().copy()
        self.noise_sums()[:] = 0
        return out

    def epoch_loss(self) -> float | None:
        """The batch-loss sums since the last call (``loss_sums()``, read once) as a mean,
        then reset (``reset_loss_sums()``); None when no step ran."""
        total, rows = self.loss_sums()
        if not rows:
            return None
        self.reset_loss_sums()
        return float(total / rows)

    def reset_loss_sums(self) -> None:
        """Zero the batch-loss sums (a device backend zeroes its device array)."""
        self.loss_sums()[:] = 0

    def loss_sums(self) -> np.ndarray:
        """The host float64 array of 2 (sum of batch losses times rows, rows) the steps add
        to (``self.losses``, made by the first call; host backends make it in
        ``prepare``)."""
        if getattr(self, "losses", None) is None:
            self.losses = np.zeros(2, np.float64)
        return self.losses

    def noise_sums(self) -> np.ndarray:
        """The host float64 array of 3 the epochs add their estimates to (``self.noise``,
        made by the first call; host backends make it in ``prepare``)."""
        if getattr(self, "noise", None) is None:
            self.noise = np.zeros(3, np.float64)
        return self.noise

    def synchronize(self) -> None:
        """Nothing to wait for on the host."""

    def exchange_seconds(self) -> float:
        """No other ranks to exchange with."""
        return 0.0

    def train_loss(self) -> float:
        """Mean loss over the training data."""
        return self.loss(self.X, self.Y)

    def memory(self) -> int | None:
        """Host backends have no device memory to report."""
        return None

    @classmethod
    def workspace(cls, plan, n: int, n_val: int) -> dict[str, int]:
        """The buffers the lifecycle prescribes (see :meth:`Backend.workspace`): the flat
        parameters ``theta``, the ``(n_state, n_params)`` optimizer state, the float64
        hyper-parameter vector, the three noise sums and the two batch-loss sums; a backend
        that allocates more extends this dict. (A GPU backend states its host arrays here and
        its device buffers in ``device_buffers``: ``gpu_launch.DeviceMemoryModel``.)"""
        return {"theta": plan.n_params * plan.dtype.itemsize,
                "opt_state": plan.optimizer.state_bytes(plan.n_params, plan.dtype),
                "hyper": plan.optimizer.hyper().nbytes,
                "noise": 3 * 8,  # the online noise sums (noise_sums)
                "losses": 2 * 8}  # the batch-loss sums (loss_sums)
