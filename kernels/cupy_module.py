"""Load ``kernels/cu/optim.cuh``, ``kernels/cu/reduce.cuh`` and ``kernels/cu/dense.cu`` and
compile them lazily with ``cupy.RawModule``.

The CUDA C++ sources are package data (``fastgd/kernels/cu/``), read through
``importlib.resources`` and concatenated (the optimizers first, then the block reductions,
the batch-loss sums, the gradient-noise step and the last-block-done count), each after a
``#line 1 "<path>"`` directive so NVRTC errors point at the right file; the codes of
``kernels/codes.py`` arrive as ``-D`` options. One module is built per ``(device id, dtype,
loss, activation)`` and memoized for the process (CuPy also caches the compiled binary on
disk). Layer sizes are not template arguments: the kernels read them from the int64 ``lay``
table, so one module serves every network shape of a family and a new shape never
recompiles.

Nothing here imports CuPy at import time; the pure-Python helpers (:func:`source`,
:func:`template_args`, :func:`name_expressions`, :func:`layout`, :func:`perm_table`) work
without it and are what the tests check on machines without a GPU.
"""

from __future__ import annotations

import threading
from importlib import resources
from typing import NamedTuple

import numpy as np

from .codes import ACTIVATION_CODES as ACTIVATION_IDS
from .codes import LOSS_CODES as LOSS_IDS
from .codes import cuda_defines
from .device_tables import (  # noqa: F401 (re-exported)
    FIRST,
    MAX_THREADS,
    TABLE_SIZE,
    TILE_MAX,
    launch_shape,
    layout,
    max_blocks,
    max_tile_rows,
    perm_capacity,
    perm_table,
)
from .permutation import ROUNDS

# Compiled as one program, in this order.
SOURCES = ("cu/optim.cuh", "cu/reduce.cuh", "cu/dense.cu")
CTYPES = {"float32": "float", "float64": "double"}
# Kernels of one module: those that take the (T, LOSS, ACT) template arguments, those that
# take T only, and the extern "C" ones (plain names).
TEMPLATED = ("step", "grad_blocks", "step_noise", "grad_norms", "loss_sum")
PER_DTYPE = ("update_params", "grad_sq")
PLAIN = ("permutation_kernel",)
KERNELS = TEMPLATED + PER_DTYPE + PLAIN

_lock = threading.Lock()
_modules: dict[tuple, Kernels] = {}


class Kernels(NamedTuple):
    """The compiled kernels of one ``(device, dtype, loss, activation)``."""

    step: object
    grad_blocks: object
    step_noise: object
    grad_norms: object
    loss_sum: object
    update_params: object
    grad_sq: object
    permutation_kernel: object


# ----------------------------------------------------------------------------- source
def source_path(name: str = SOURCES[-1]) -> str:
    """Where an installed source (default ``dense.cu``) lives (for ``#line`` and errors)."""
    return str(resources.files("fastgd.kernels").joinpath(name))


def source() -> str:
    """The program NVRTC compiles: every file of :data:`SOURCES`, each after a ``#line 1``
    directive naming its path."""
    parts = []
    for name in SOURCES:
        text = resources.files("fastgd.kernels").joinpath(name).read_text(encoding="utf-8")
        parts.append(f'#line 1 "{source_path(name)}"\n{text}')
    return "\n".join(parts)


def compile_options() -> tuple[str, ...]:
    """NVRTC options: C++17 and the constants whose single source is Python (the shuffle,
    the launch limit, the loss/activation/optimizer codes)."""
    return ("-std=c++17", f"-DFASTGD_ROUNDS={ROUNDS}", f"-DFASTGD_PERM_FIRST={FIRST}",
            f"-DFASTGD_PERM_ORDERS={TABLE_SIZE}",
            f"-DFASTGD_MAX_THREADS={MAX_THREADS}", f"-DFASTGD_TILE_MAX={TILE_MAX}",
            *cuda_defines())


# ----------------------------------------------------------------------------- names
def template_args(dtype, loss: str, activation: str) -> tuple[str, int, int]:
    """``(C type, loss id, activation id)`` of a configuration, e.g. ``("float", 2, 0)``.

    Raises ``ValueError`` for a dtype, loss or activation the kernels do not have.
    """
    name = np.dtype(dtype).name
    if name not in CTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {name}")
    if loss not in LOSS_IDS:
        raise ValueError(f"loss must be one of {sorted(LOSS_IDS)}, got {loss!r}")
    if activation not in ACTIVATION_IDS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATION_IDS)}, "
                         f"got {activation!r}")
    return CTYPES[name], LOSS_IDS[loss], ACTIVATION_IDS[activation]


def name_expressions(dtype, loss: str, activation: str) -> dict[str, str]:
    """``{kernel: name expression}`` for ``RawModule(name_expressions=...)`` and
    ``get_function``: ``step<float, 2, 0>``, ``grad_sq<float>``; the ``extern "C"``
    kernel ``permutation_kernel`` is its plain name."""
    ctype, loss_id, act_id = template_args(dtype, loss, activation)
    names = {k: f"{k}<{ctype}, {loss_id}, {act_id}>" for k in TEMPLATED}
    names.update({k: f"{k}<{ctype}>" for k in PER_DTYPE})
    names.update({k: k for k in PLAIN})
    return {k: names[k] for k in KERNELS}




# ----------------------------------------------------------------------------- compile
def build(dtype, loss: str, activation: str) -> Kernels:
    """The kernels of a configuration on the current CuPy device, compiled on first use.

    Memoized per ``(device id, dtype, loss, activation)``; raises CuPy's
    ``CompileException`` (with NVRTC's log, lines pointing into the sources) on a compile
    error.
    """
    import cupy

    names = name_expressions(dtype, loss, activation)
    key = (cupy.cuda.Device().id, np.dtype(dtype).name, loss, activation)
    with _lock:
        kernels = _modules.get(key)
        if kernels is None:
            module = cupy.RawModule(code=source(), options=compile_options(),
                                    name_expressions=[names[k] for k in KERNELS
                                                      if k not in PLAIN])
            kernels = Kernels(*(module.get_function(names[k]) for k in KERNELS))
            _modules[key] = kernels
    return kernels
