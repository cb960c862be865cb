"""What the GPU backends (``numba_cuda``, ``cupy_backend``) share: the launch shape and the
out-of-memory error. Each backend keeps its own ``THREADS``/``MAX_BLOCKS`` constants (tests
shrink them); the rules applied to them live here once."""

from __future__ import annotations

from ..kernels.device_tables import MAX_THREADS


def launch_blocks(threads: int, max_blocks: int, rows: int) -> int:
    """Blocks of the widest launch over ``rows`` rows (at most ``max_blocks``), after checking
    that ``threads`` is a power of two the kernels' shared arrays can hold."""
    if threads & (threads - 1) or not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"THREADS must be a power of two <= {MAX_THREADS}; got {threads}")
    return max(1, min(max_blocks, -(-rows // threads)))


def out_of_memory(backend: str, plan, n: int, scratch_rows: int) -> MemoryError:
    """The error a GPU backend raises when placing a run does not fit on the device."""
    return MemoryError(
        f"{backend}: the GPU is out of memory placing {n} samples x {plan.sizes[0]} features "
        f"and a {plan.sizes} network (batch_size={plan.batch_size}; scratch for "
        f"{scratch_rows} rows); use fewer samples or smaller layers, free other GPU memory, "
        "or use backend='numba-cpu'")
