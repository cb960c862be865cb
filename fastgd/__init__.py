"""fastgd: gradient descent (BGD/SGD/MBGD) with hand-written compiled kernels, for measuring."""

from . import backends, datasets, optim
from .batchsize import BatchSizeStudy, batch_size_study
from .compare import Table, compare, sweep_batch_size
from .fit import DivergenceError, EpochRecord, FitResult, PreparedRun, fit, prepare
from .models import MLP, Linear, Model
from .noise import NoiseScale, noise_scale
from .optim import *  # noqa: F403 - the optimizers and schedules (optim.__all__)
from .sharpness import Sharpness, sharpness

__version__ = "0.1.0"
__all__ = [
    "MLP", "DivergenceError", "EpochRecord", "FitResult", "Linear", "Model", "PreparedRun",
    "Table", "backends", "compare", "datasets", "fit", "optim", "prepare", "sweep_batch_size",
    "Sharpness", "sharpness", "NoiseScale", "noise_scale", "BatchSizeStudy",
    "batch_size_study",
    *optim.__all__,
]
