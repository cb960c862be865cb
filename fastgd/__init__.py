"""fastgd: gradient descent (BGD/SGD/MBGD) with hand-written compiled kernels, for measuring."""

from . import backends, datasets, optim
from .compare import Table, compare, sweep_batch_size
from .fit import DivergenceError, EpochRecord, FitResult, PreparedRun, fit, prepare
from .models import MLP, Linear, Model
from .optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    Constant,
    Cosine,
    InverseScaling,
    Optimizer,
    PerStep,
    RMSprop,
    StepDecay,
    Warmup,
)

__version__ = "0.1.0"
__all__ = [
    "MLP", "SGD", "Adagrad", "Adam", "AdamW", "Constant", "Cosine", "DivergenceError",
    "EpochRecord", "FitResult", "InverseScaling", "Linear", "Model", "Optimizer", "PerStep",
    "PreparedRun", "RMSprop", "StepDecay", "Table", "Warmup", "backends", "compare",
    "datasets", "fit", "optim", "prepare", "sweep_batch_size",
]
