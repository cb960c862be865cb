"""Defaults of the ``fastgd`` command, shared by its options' help and its commands."""

DEFAULT_OUT = "fastgd-results"
DEFAULT_DATA = "regression:20000x32"
DEFAULT_LR = 0.01  # for data and models given on the command line
# SGD's rate on DEFAULT_DATA outside the built-in study (``sweep``, ``fit``, ``compare
# --model``): stable at batch 1 (below about 0.03 with 32 unit-variance features)
DEFAULT_DATA_LR = 0.02
DEFAULT_EPOCHS = 3
DEFAULT_REPEATS = {"compare": 2, "sweep": 1}
