"""Numba-CUDA kernels (``dense.py``: linear models and MLPs, one family).

Importing this package does not touch the GPU: every kernel is a lazy ``@cuda.jit`` (no
explicit signature), compiled on its first launch.
"""
