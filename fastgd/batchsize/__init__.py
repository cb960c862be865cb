"""The batch-size study: statistical efficiency (steps to a target loss) beside hardware
efficiency (time per step), the critical batch size and the gradient noise scale."""

from .report import BatchSizeStudy, StudyGroup
from .scaling import CriticalBatch, fit_critical_batch
from .study import batch_size_study, default_batch_sizes

__all__ = ["BatchSizeStudy", "CriticalBatch", "StudyGroup", "batch_size_study",
           "default_batch_sizes", "fit_critical_batch"]
