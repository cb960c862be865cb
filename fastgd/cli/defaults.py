"""Defaults of the ``fastgd`` command, shared by its options' help and its commands."""

DEFAULT_OUT = "fastgd-results"
DEFAULT_DATA = "regression:20000x32"
DEFAULT_LR = 0.01  # for data and models given on the command line
DEFAULT_EPOCHS = 3
DEFAULT_REPEATS = {"compare": 2, "sweep": 1}
