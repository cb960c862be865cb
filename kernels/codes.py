"""The one table of integer codes every kernel language shares.

Python kernels import these dicts; CUDA C gets them as ``-D`` defines
(:func:`cuda_defines`: ``-DFASTGD_LOSS_MSE=0``, ``-DFASTGD_OPT_ADAM=1``, ...), so no kernel
file spells a code as a literal of its own.

Optimizer codes live beside their NumPy reference (``kernels/optimizers.py``), the file an
optimizer is added to first; they are re-exported here.
"""

from __future__ import annotations

from .optimizers import HYPER_SLOTS, OPTIMIZER_CODES, SCALAR_SLOTS

LOSS_CODES = {"mse": 0, "logistic": 1, "softmax": 2}
ACTIVATION_CODES = {"relu": 0, "tanh": 1, "sigmoid": 2}

__all__ = ["ACTIVATION_CODES", "HYPER_SLOTS", "LOSS_CODES", "OPTIMIZER_CODES", "SCALAR_SLOTS",
           "cuda_defines"]


def cuda_defines() -> tuple[str, ...]:
    """NVRTC/nvcc options defining every code and slot count for the CUDA C sources."""
    out = [f"-DFASTGD_LOSS_{k.upper()}={v}" for k, v in LOSS_CODES.items()]
    out += [f"-DFASTGD_ACT_{k.upper()}={v}" for k, v in ACTIVATION_CODES.items()]
    out += [f"-DFASTGD_OPT_{k.upper()}={v}" for k, v in OPTIMIZER_CODES.items()]
    out += [f"-DFASTGD_HYPER_SLOTS={HYPER_SLOTS}", f"-DFASTGD_SCALAR_SLOTS={SCALAR_SLOTS}"]
    return tuple(out)
