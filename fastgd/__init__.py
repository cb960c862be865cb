"""fastgd: gradient descent (BGD/SGD/MBGD) with hand-written compiled kernels, for measuring."""

from . import backends, datasets, optim
from .compare import Table, compare, sweep_batch_size
from .fit import DivergenceError, EpochRecord, FitResult, PreparedRun, fit, prepare
from .models import MLP, Linear, Model
from .optim import *  # noqa: F403 - the optimizers and schedules (optim.__all__)

__version__ = "0.1.0"
__all__ = [
    "MLP", "DivergenceError", "EpochRecord", "FitResult", "Linear", "Model", "PreparedRun",
    "Table", "backends", "compare", "datasets", "fit", "optim", "prepare", "sweep_batch_size",
    *optim.__all__,
]
